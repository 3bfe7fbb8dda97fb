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


def recipe_command(path: Path, cls) -> str | None:
    """When the recipe at `path` has a key that `cls` (the asking command's config) lacks: the command whose config
    has every one of its keys (`r1lab sft` for sft_countdown given to `r1lab rl`). Else None."""
    import dataclasses
    import importlib
    import tomllib

    def names(config_cls) -> set[str]:
        return {f.name for f in dataclasses.fields(config_cls)}

    try:
        keys = set(tomllib.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None
    if keys <= names(cls):
        return None
    for command, (module, name) in CONFIGS.items():
        if keys <= names(getattr(importlib.import_module(module), name)):
            return command
    return None


def load_recipe_config(cls, command: str, recipe: Path | None, overrides: list[str]):
    """load_config(cls, recipe, overrides), and when a recipe key is unknown to `cls` but the recipe is another
    command's, a ConfigError that names that command."""
    from r1lab.config import load_config

    try:
        return load_config(cls, recipe, overrides)
    except ConfigError:
        other = recipe_command(recipe, cls) if recipe is not None else None
        if other is not None:
            raise ConfigError(f"{recipe.name} is an `r1lab {other}` recipe; this command takes `r1lab {command}` "
                              f"recipes") from None
        raise
