"""The R1 recipe as one run (DeepSeek-R1 paper, section 2.3): each stage is an ordinary r1lab command in its own
folder of the run, so what the pipeline does is what those commands do.

    zero       r1lab rl       R1-Zero: GRPO from the base; only when no teacher is given (`teacher`, `teacher_url`):
                              its outputs are the cold-start teacher, as R1-Zero's readable outputs were R1's
    cold_data  r1lab distill  a few hundred verified traces from the teacher (local checkpoint or OpenAI-compatible API)
    cold       r1lab sft      the cold start: SFT of the base on those traces
    rl         r1lab rl       reasoning RL (GRPO) from the cold-start checkpoint
    rejection  r1lab sample   rejection sampling from the RL checkpoint: K samples a problem, verified-correct kept
    sft        r1lab sft      SFT of the BASE on the rejection samples (R1: 2 epochs on ~800k)
    rl2        r1lab rl       RL again from that SFT model (only when rl2_steps > 0)
    eval       r1lab eval     every model of the run on the same held-out problems, then `r1lab report` overlays
                              the training stages with the before/after table first

Resume: a stage that finished leaves `STAGE/.done` (written atomically after its command returned 0) and is skipped
on a rerun; an unfinished stage is rerun, and the commands resume themselves (rl and sft from their last checkpoint,
distill from its journal). The run's config is saved as pipeline.json; a rerun with other settings in the same
folder is refused rather than mixing two runs.

`plan(cfg)` is pure (config -> the stages' argument lists); `run(cfg)` executes it.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from r1lab.config import ConfigError, config_to_dict


@dataclass
class PipelineConfig:
    out_dir: str = "runs/r1"
    base: str = "countdown-base"         # the model every SFT starts from (R1: DeepSeek-V3-Base)
    task: str = "countdown"
    task_args: str = "min_numbers=3,max_numbers=3,max_number=12,max_target=100"       # problems the data stages draw
    eval_task_args: str = "min_numbers=3,max_numbers=4,max_number=12,max_target=100"  # the held-out problems
    seed: int = 0                        # every stage's seed
    threads: int = 0
    # the cold-start teacher: a checkpoint, or an OpenAI-compatible API; neither: the zero stage trains one
    teacher: str = ""
    teacher_url: str = ""
    teacher_model: str = ""
    teacher_args: tuple[str, ...] = ()   # extra `r1lab distill` flags, e.g. ["--concurrency", "16"]
    zero_recipe: str = "countdown_rl"
    zero_set: tuple[str, ...] = ()       # --set overrides of that recipe
    # cold start: cold_n problems x cold_samples, at most cold_keep verified traces each
    cold_n: int = 300
    cold_samples: int = 4
    cold_keep: int = 1
    cold_max_new_tokens: int = 768
    cold_shortest_first: bool = True     # the shortest correct traces (false: the first correct, in sampling order)
    cold_recipe: str = "sft_countdown"
    cold_set: tuple[str, ...] = ("seq_len=1024",)
    # reasoning RL
    rl_recipe: str = "countdown_rl"
    rl_set: tuple[str, ...] = ()
    # rejection sampling from the RL model, then SFT of the base on it
    rs_n: int = 1000
    rs_samples: int = 8
    rs_keep: int = 2
    rs_max_new_tokens: int = 768
    sft_recipe: str = "sft_countdown"
    sft_set: tuple[str, ...] = ("seq_len=1024", "epochs=2")
    # RL again (0: the run ends after the SFT)
    rl2_steps: int = 0
    rl2_set: tuple[str, ...] = ()
    # the held-out evaluation of every model
    eval_n: int = 200
    eval_samples: int = 4
    eval_max_new_tokens: int = 768


RANGES = {
    "threads": ">= 0", "cold_n": ">= 1", "cold_samples": ">= 1", "cold_keep": ">= 1", "cold_max_new_tokens": ">= 1",
    "rs_n": ">= 1", "rs_samples": ">= 1", "rs_keep": ">= 1", "rs_max_new_tokens": ">= 1", "rl2_steps": ">= 0",
    "eval_n": ">= 1", "eval_samples": ">= 1", "eval_max_new_tokens": ">= 1",
}


@dataclass
class Stage:
    name: str               # its folder under out_dir
    argv: list[str]         # the r1lab command it runs
    model: str | None       # the model it leaves (evaluated at the end), or None for a data stage
    label: str              # what it is, for the banner and the table


def check(cfg: PipelineConfig) -> None:
    """Ranges, the task and its knobs, the teacher's form and the stage recipes, before any work starts."""
    from r1lab.config import check_config
    from r1lab.recipes import resolve_recipe
    from r1lab.tasks import get_task, parse_knobs

    check_config(cfg, RANGES)
    task = get_task(cfg.task)
    parse_knobs(task, cfg.task_args)
    parse_knobs(task, cfg.eval_task_args)
    if cfg.teacher and cfg.teacher_url:
        raise ConfigError("give teacher (a checkpoint) or teacher_url (an API), not both")
    if bool(cfg.teacher_url) != bool(cfg.teacher_model):
        raise ConfigError("teacher_url and teacher_model go together")
    for key in ("zero_recipe", "cold_recipe", "rl_recipe", "sft_recipe"):
        path = resolve_recipe(getattr(cfg, key))
        if not path.is_file():
            raise ConfigError(f"{key}: recipe not found: {path}")
    for key in ("zero_set", "cold_set", "rl_set", "sft_set", "rl2_set"):
        for item in getattr(cfg, key):
            if "=" not in item:
                raise ConfigError(f"{key}: expected KEY=VALUE items, got {item!r}")
    check_stages(cfg)


# a stage -> the pipeline keys that set it
STAGE_KEYS = {"zero": "zero_recipe, zero_set", "cold": "cold_recipe, cold_set", "rl": "rl_recipe, rl_set",
              "sft": "sft_recipe, sft_set", "rl2": "rl_recipe, rl_set, rl2_set"}


def check_stages(cfg: PipelineConfig) -> None:
    """Each rl and sft stage's recipe and settings, checked by its command's own check before any stage runs (a
    typo in cold_set stopped the pipeline after its earlier stages, then the fixed setting was refused as another
    run's): the base stands in for the model an earlier stage will make, and an SFT stage's data is not read."""
    from r1lab.cli import build_parser
    from r1lab.commands.stage import load_stage_config
    from r1lab.rl.config import RLConfig
    from r1lab.rl.config import check as check_rl
    from r1lab.sft.train import SFTConfig, check_settings

    checks = {"rl": (RLConfig, check_rl), "sft": (SFTConfig, check_settings)}
    parser = build_parser()
    for stage in plan(cfg):
        if stage.argv[0] in checks:
            args = parser.parse_args(stage.argv)
            args.model = cfg.base
            cls, check_stage = checks[args.command]
            try:
                check_stage(load_stage_config(cls, args, args.command))
            except ValueError as e:
                raise ConfigError(f"stage {stage.name} ({STAGE_KEYS[stage.name]}): {e}") from None


def _sets(items) -> list[str]:
    return sum((["--set", item] for item in items), [])


def _knobs(task_args: str) -> list[str]:
    return sum((["--task-arg", kv] for kv in task_args.split(",") if kv.strip()), [])


def plan(cfg: PipelineConfig) -> list[Stage]:
    """The stages in order, each with the exact command it runs (a pure function of the config)."""
    out = Path(cfg.out_dir)
    common = ["--set", f"seed={cfg.seed}", "--set", f"threads={cfg.threads}"]

    def rl(name, model, recipe, sets, label):
        return Stage(name, ["rl", "--recipe", recipe, "--model", model, "--out", str(out / name), *_sets(sets),
                            *common], str(out / name), label)

    def sft(name, data_stage, recipe, sets, label):
        return Stage(name, ["sft", "--recipe", recipe, "--model", cfg.base, "--data",
                            str(out / data_stage / "traces.jsonl"), "--out", str(out / name), *_sets(sets), *common],
                     str(out / name), label)

    def traces(name, command, n, seed, samples, keep, max_new_tokens, label, shortest_first=False):
        """A data stage: K samples of N train problems, the verified-correct kept (distill or sample)."""
        return Stage(name, [*command, "--task", cfg.task, "--split", "train", *_knobs(cfg.task_args),
                            "--threads", str(cfg.threads), "--n", str(n), "--seed", str(seed),
                            "--samples", str(samples), "--keep-per-problem", str(keep),
                            *(["--shortest-first"] if shortest_first else []),
                            "--max-new-tokens", str(max_new_tokens), "--sampling-seed", str(cfg.seed),
                            "--out", str(out / name / "traces.jsonl"),
                            "--pass-rates", str(out / name / "pass_rates.jsonl")], None, label)

    stages = []
    if cfg.teacher_url:
        teacher = ["--teacher-url", cfg.teacher_url, "--teacher-model", cfg.teacher_model]
    elif cfg.teacher:
        teacher = ["--teacher", cfg.teacher]
    else:
        stages.append(rl("zero", cfg.base, cfg.zero_recipe, cfg.zero_set,
                         "R1-Zero: GRPO from the base (the cold-start teacher)"))
        teacher = ["--teacher", str(out / "zero")]
    stages += [
        traces("cold_data", ["distill", *teacher, *cfg.teacher_args], cfg.cold_n, cfg.seed + 11, cfg.cold_samples,
               cfg.cold_keep, cfg.cold_max_new_tokens, "cold-start traces from the teacher", cfg.cold_shortest_first),
        sft("cold", "cold_data", cfg.cold_recipe, cfg.cold_set, "cold start: SFT of the base on the teacher's traces"),
        rl("rl", str(out / "cold"), cfg.rl_recipe, cfg.rl_set, "reasoning RL (GRPO) from the cold start"),
        traces("rejection", ["sample", "--model", str(out / "rl")], cfg.rs_n, cfg.seed + 12, cfg.rs_samples,
               cfg.rs_keep, cfg.rs_max_new_tokens, "rejection sampling from the RL model"),
        sft("sft", "rejection", cfg.sft_recipe, cfg.sft_set, "SFT of the base on the rejection samples"),
    ]
    if cfg.rl2_steps:
        stages.append(rl("rl2", str(out / "sft"), cfg.rl_recipe,
                         (*cfg.rl_set, f"steps={cfg.rl2_steps}", *cfg.rl2_set), "RL again, from the SFT model"))
    return stages


def eval_argv(cfg: PipelineConfig, model: str, out_file: Path) -> list[str]:
    """`r1lab eval` of one model on the run's held-out problems (the same problems and sampling for every model)."""
    return ["eval", "--model", model, "--task", cfg.task, "--split", "test", *_knobs(cfg.eval_task_args),
            "--n", str(cfg.eval_n), "--seed", str(cfg.seed + 13), "--samples", str(cfg.eval_samples),
            "--max-new-tokens", str(cfg.eval_max_new_tokens), "--no-greedy", "--batch-size", "64",
            "--threads", str(cfg.threads), "--out", str(out_file)]


def _done(folder: Path) -> Path:
    return folder / ".done"


def _claim(cfg: PipelineConfig) -> None:
    """Save the config as out_dir/pipeline.json, or refuse when the folder holds a run with other settings (threads
    may change, as the stages' own resume allows)."""
    from r1lab.jsonl import write_text_atomic

    out = Path(cfg.out_dir)
    path = out / "pipeline.json"
    mine = config_to_dict(cfg)
    mine = json.loads(json.dumps(mine))  # tuples -> lists, as they read back
    if path.is_file():
        try:
            theirs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); remove it or use another --out") from None
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k) and k != "threads")
        if diff:
            raise ConfigError(f"{out} holds a pipeline run with other settings ({', '.join(diff)}); "
                              "use another --out, or the same settings to resume it")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(mine, indent=2) + "\n")


def run(cfg: PipelineConfig) -> int:
    """Run every unfinished stage in order, then the held-out evaluation and the report. 0 when all finished; the
    failing stage's exit code otherwise (its folder keeps what it wrote, so a rerun resumes it)."""
    from r1lab.cli import main as cli
    from r1lab.jsonl import write_text_atomic

    check(cfg)
    _claim(cfg)
    out = Path(cfg.out_dir)
    stages = plan(cfg)
    t0 = time.time()
    evals = [("base", cfg.base)] + [(s.name, s.model) for s in stages if s.model]
    total = len(stages) + len(evals) + 1
    for i, stage in enumerate(stages, 1):
        folder = out / stage.name
        if _done(folder).is_file():
            print(f"\n=== [{i}/{total}] {stage.name}: {stage.label}: done, skipped ===", flush=True)
            continue
        print(f"\n=== [{i}/{total}] {stage.name}: {stage.label} ({time.time() - t0:.0f}s elapsed) ===\n"
              f"r1lab {' '.join(stage.argv)}", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.time()
        code = cli(stage.argv)
        if code != 0:
            print(f"r1lab pipeline: stage {stage.name} failed (exit {code}); rerun the same command to resume",
                  file=sys.stderr, flush=True)
            return code
        write_text_atomic(_done(folder), json.dumps({"argv": stage.argv, "wall_s": time.time() - started}) + "\n")
    (out / "eval").mkdir(exist_ok=True)
    for j, (name, model) in enumerate(evals, len(stages) + 1):
        target = out / "eval" / f"{name}.json"
        if target.is_file():  # eval writes its --out atomically, after the run: present means finished
            continue
        print(f"\n=== [{j}/{total}] eval: {name} on {cfg.eval_n} held-out problems "
              f"({time.time() - t0:.0f}s elapsed) ===", flush=True)
        code = cli(eval_argv(cfg, model, target))
        if code != 0:
            return code
    runs = [str(out / s.name) for s in stages if s.model]
    specs = sum((["--eval", f"{name}={out / 'eval' / (name + '.json')}"] for name, _ in evals), [])
    code = cli(["report", *runs, "--out", str(out / "report"), *specs, "--title", f"The R1 pipeline on {cfg.task}"])
    if code != 0:
        return code
    print(summary_table(out, [name for name, _ in evals]))
    print(f"\nr1lab pipeline: {time.time() - t0:.0f}s this invocation; report: {out / 'report' / 'report.html'}")
    return 0


def summary_table(out: Path, names: list[str]) -> str:
    """pass@1 / cons@k / format rate / mean response tokens of every evaluated model, and each stage's wall time."""
    lines = [f"\n{'model':<10}{'pass@1':>9}{'cons@k':>9}{'format':>9}{'tokens':>9}{'stage s':>9}"]
    for name in names:
        r = json.loads((out / "eval" / f"{name}.json").read_text(encoding="utf-8"))
        done = out / name / ".done"
        wall = f"{json.loads(done.read_text())['wall_s']:.0f}" if done.is_file() else "-"  # the base: no stage
        lines.append(f"{name:<10}{r['pass1']:>9.3f}{r['cons_at_k']:>9.3f}{r['format_rate']:>9.3f}"
                     f"{r['response_len']['mean']:>9.1f}{wall:>9}")
    return "\n".join(lines)
