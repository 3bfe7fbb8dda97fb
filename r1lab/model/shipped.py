"""Base models shipped inside the package (r1lab/assets/NAME), so the demo starts from a pretrained base as R1-Zero
starts from DeepSeek-V3-Base, with no download."""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def shipped_models() -> list[str]:
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").exists()) if ASSETS.exists() else []


def resolve_model(name_or_path: str) -> str:
    """A shipped base's directory for its name; anything else (a local path, a hub id) is returned unchanged."""
    if (ASSETS / name_or_path / "config.json").exists():
        return str(ASSETS / name_or_path)
    return name_or_path
