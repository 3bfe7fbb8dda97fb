"""Shipped recipes. `--recipe NAME` finds r1lab/recipes/NAME.toml; any other value is a path."""
from __future__ import annotations

from pathlib import Path

from r1lab.config import ConfigError

RECIPES_DIR = Path(__file__).parent


def resolve_recipe(name_or_path: str | None) -> Path | None:
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.exists() or path.suffix == ".toml":
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    valid = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
    raise ConfigError(f"no recipe {name_or_path!r}: not a file, and not a shipped recipe ({valid})")
