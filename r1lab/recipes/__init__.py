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


# the command of each recipe kind, with where its config class lives (imported only when asked)
CONFIGS = {"pretrain": ("r1lab.pretrain.train", "PretrainConfig"), "sft": ("r1lab.sft.train", "SFTConfig"),
           "rl": ("r1lab.rl.config", "RLConfig"), "pipeline": ("r1lab.pipeline", "PipelineConfig")}


def recipe_command(path: Path) -> str | None:
    """The command whose config has every key of the recipe at `path` (`r1lab sft` for sft_countdown), or None: for
    telling a user who gave `r1lab rl` an SFT recipe which command it is for."""
    import dataclasses
    import importlib
    import tomllib

    try:
        keys = set(tomllib.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None
    for command, (module, name) in CONFIGS.items():
        fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
        if keys <= fields:
            return command
    return None


def load_recipe_config(cls, command: str, recipe: Path | None, overrides: list[str]):
    """load_config(cls, recipe, overrides), and when a recipe key is unknown to `cls` but the recipe is another
    command's, a ConfigError that names that command."""
    from r1lab.config import load_config

    try:
        return load_config(cls, recipe, overrides)
    except ConfigError as e:
        other = recipe_command(recipe) if recipe is not None and f"in {recipe};" in str(e) else None
        if other is not None and other != command:
            raise ConfigError(f"{recipe.name} is an `r1lab {other}` recipe; this command takes `r1lab {command}` "
                              f"recipes") from None
        raise
