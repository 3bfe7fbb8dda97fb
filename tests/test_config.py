from dataclasses import dataclass

import pytest

from r1lab.config import ConfigError, format_config, load_config


@dataclass
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    flag: bool = False
    limit: int | None = None


def test_recipe_then_overrides_then_kwargs(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('lr = 0.01\nsteps = 5\nname = "a"\n')
    cfg = load_config(Cfg, recipe, ["steps=7", "flag=true", "limit=3"], name="b")
    assert (cfg.lr, cfg.steps, cfg.name, cfg.flag, cfg.limit) == (0.01, 7, "b", True, 3)
    assert "steps = 7" in format_config(cfg)


def test_unknown_key_lists_valid_ones(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("learning_rate = 0.01\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'.*valid keys.*lr.*steps"):
        load_config(Cfg, recipe)
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_config(Cfg, None, ["stepz=3"])


def test_a_quoted_set_value_is_a_toml_string():
    """A bare value is stripped; a quoted one keeps its spaces and escapes, as it would in the recipe."""
    assert load_config(Cfg, None, ["name=  a b "]).name == "a b"
    assert load_config(Cfg, None, ['name="\\ngive up\\n</think>"']).name == "\ngive up\n</think>"
    assert load_config(Cfg, None, ["name=' x '"]).name == " x "
    assert load_config(Cfg, None, ['name="a\\\\b"']).name == "a\\b"
    assert load_config(Cfg, None, ['name="a"b']).name == '"a"b'  # not one string: the text as it is
    with pytest.raises(ConfigError, match="not a valid TOML string"):
        load_config(Cfg, None, ['name="a"b"'])


@pytest.mark.parametrize("item, match", [("steps=abc", "steps: expected int"), ("flag=maybe", "flag: expected a boolean"),
                                         ("steps", "key=value"), ("steps=1.5", "expected int")])
def test_bad_values_are_clear_errors(item, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Cfg, None, [item])


def test_none_and_scientific_ints():
    cfg = load_config(Cfg, None, ["limit=none", "steps=1e3"])
    assert cfg.limit is None and cfg.steps == 1000


def test_bad_toml_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Cfg, bad)
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(Cfg, tmp_path / "missing.toml")


@dataclass
class Knobs:
    """A small dataclass of knobs owned by another module, composed into a stage config by inheritance."""
    p: float = 0.5


@dataclass
class Stage(Knobs):
    steps: int = 10


def test_inherited_knobs_are_flat_keys(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("p = 0.25\nsteps = 3\n")
    cfg = load_config(Stage, recipe, ["p=0.75"])
    assert (cfg.p, cfg.steps) == (0.75, 3) and "p = 0.75" in format_config(cfg)
    with pytest.raises(ConfigError, match="valid keys for Stage: p, steps"):
        load_config(Stage, None, ["q=1"])


def test_an_out_dir_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    """It used to be a traceback from the first mkdir or write (a read-only folder, or a file in the way)."""
    from r1lab.pretrain.train import PretrainConfig, check

    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        with pytest.raises(ConfigError, match=f"out_dir = '{out}': {tmp_path / 'file'} is a file, not a folder"):
            check(PretrainConfig(out_dir=str(out)))
    check(PretrainConfig(out_dir=str(tmp_path / "new" / "run")))
    assert not (tmp_path / "new").exists()  # checked without making it
