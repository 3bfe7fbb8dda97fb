"""`r1lab cost`: published training costs rebuilt from their inputs, and what-if estimates.

    r1lab cost                                   the GPU presets (peaks, assumed prices)
    r1lab cost --known deepseek-v3               V3 report Table 1, and the MFU its pre-training implies
    r1lab cost --known deepseek-r1               the R1 RL-stage cost from the Nature paper
    r1lab cost --active-params 37B --tokens 14.8T --gpu H800 --mfu 0.35 --price 2
    r1lab cost --active-params 37B --tokens 14.8T --gpu H800 --gpu-hours 2664K    (the implied MFU)
    r1lab cost --recipe tinyzero_countdown_qwen3b [--gpu H100] [--mfu 0.3] [--price P]   an RL recipe's run, ahead
    r1lab cost --recipe countdown_rl --model ./my-model --set steps=200      the same with its keys overridden

Every mode takes --json. Bad input exits 2 with the valid options.
"""
from __future__ import annotations

import argparse
import json
import sys

HELP = "compute and cost: published runs (--known) and what-if estimates (FLOPs, MFU, GPU-hours, dollars)"


def _count(text: str) -> float:
    from r1lab.cost.published import parse_count

    try:
        return parse_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _gpu(text: str) -> str:
    from r1lab.cost.published import get_gpu

    try:
        return get_gpu(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from r1lab.cost.published import KNOWN_RUNS  # no torch behind it: `r1lab --help` stays fast

    parser.add_argument("--known", choices=list(KNOWN_RUNS), help="rebuild a published cost table")
    parser.add_argument("--recipe", help="an RL recipe (shipped name or path): its run's tokens, FLOPs, GPU-hours "
                                         "and dollars, beside its source's published figures (MFU default 0.3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="--recipe: override one of its keys (repeatable), as `r1lab rl --set` does")
    parser.add_argument("--model", help="--recipe: the model it would train (shorthand for --set model=...)")
    parser.add_argument("--prompt-tokens", type=_count, help="--recipe: prompt tokens a sequence (default: the "
                                                             "task's prompt, measured or estimated)")
    parser.add_argument("--response-tokens", type=_count, help="--recipe: response tokens a sequence (default: "
                                                               "max_new_tokens / 2)")
    parser.add_argument("--params", type=_count, help="total parameters, e.g. 671B (default: --active-params)")
    parser.add_argument("--active-params", type=_count, help="parameters used per token, e.g. 37B (MoE: active)")
    parser.add_argument("--tokens", type=_count, help="training tokens, e.g. 14.8T")
    parser.add_argument("--gpu", type=_gpu, help="H800, H100, H200, A100 or B200 (default H100)")
    parser.add_argument("--precision", choices=["bf16", "fp8"], default="bf16", help="which dense peak (bf16)")
    parser.add_argument("--mfu", type=float, help="model FLOPs utilisation, 0..1 (default 0.4)")
    parser.add_argument("--gpu-hours", type=_count, help="reported GPU-hours: print the MFU they imply")
    parser.add_argument("--price", type=float, help="$ per GPU-hour (default: the GPU's preset)")
    parser.add_argument("--layers", type=int, help="add attention FLOPs: number of layers")
    parser.add_argument("--attn-dim", type=int, help="add attention FLOPs: heads × head_dim")
    parser.add_argument("--context-len", type=int, help="add attention FLOPs: training sequence length")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


WHAT_IF_FLAGS = ["params", "active_params", "tokens", "gpu", "mfu", "gpu_hours", "layers", "attn_dim", "context_len"]
RECIPE_FLAGS = ["gpu", "mfu", "prompt_tokens", "response_tokens"]  # what --recipe takes besides --price, --precision


def run(args) -> int:
    what_if = [name for name in WHAT_IF_FLAGS if getattr(args, name) is not None]
    try:
        recipe_only = [n for n in ("prompt_tokens", "response_tokens", "model") if getattr(args, n) is not None]
        recipe_only += ["set"] if args.overrides else []
        if recipe_only and not args.recipe:
            raise ValueError(f"--{recipe_only[0].replace('_', '-')} goes with --recipe")
        if args.recipe:
            others = [n for n in what_if if n not in RECIPE_FLAGS] + (["known"] if args.known else [])
            if others:
                raise ValueError(f"--recipe takes --set, --model, --gpu, --mfu, --price, --precision, "
                                 f"--prompt-tokens, --response-tokens and --json, not --{others[0].replace('_', '-')}")
            result = _recipe(args)
        elif args.known:
            if what_if:
                raise ValueError(f"--known takes only --price and --json, not --{what_if[0].replace('_', '-')}")
            result = _known(args)
        elif what_if or args.price is not None:
            result = _what_if(args)
        else:
            result = _presets()
    except ValueError as e:
        print(f"r1lab cost: error: {e}", file=sys.stderr)
        return 2
    text = result.pop("_text")
    print(json.dumps(result, indent=1) if args.json else text)
    return 0


def _table(rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Aligned columns; column indexes in `right` are right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _known(args) -> dict:
    from r1lab.cost.published import format_count, known_run

    if args.price is not None and args.price < 0:
        raise ValueError(f"--price must be >= 0, got {args.price}")
    run = known_run(args.known, args.price)
    rounded = any(s["gpu_hours"] != s["gpu_hours_published"] for s in run["stages"])
    header = ["stage", f"{run['gpu']} GPU-hours", *(["priced as"] if rounded else []), "cost", "published", "", "how"]
    rows = [header]
    for s in run["stages"]:
        hours = [format_count(s["gpu_hours"], ""), s["gpu_hours_str"]] if rounded else [s["gpu_hours_str"]]
        rows.append([s["stage"], *hours, s["dollars_str"], *run["published"][s["stage"]], s["how"]])
    lines = [f"{run['title']} ({run['gpu']} at ${run['price_per_hour']:.2f} per GPU-hour)",
             f"source: {run['source']}", "",
             _table(rows, right=set(range(1, len(header) - 1))), ""]
    if run["matches_published"]:
        lines.append("reproduced digit for digit: yes")
    else:
        lines.append(f"reproduced digit for digit: no (priced at ${run['price_per_hour']:.2f}, "
                     f"published at ${run['published_price_per_hour']:.2f})")
    lines.append(f"note: {run['note']}")
    if "implied_mfu" in run:
        m = run["implied_mfu"]
        lines += ["", f"MFU implied by {m['stage']}: {m['active_params'] / 1e9:.0f}B active parameters (N), "
                      f"{m['tokens'] / 1e12:.1f}T tokens (D), {format_count(m['gpu_hours'])} H800 GPU-hours",
                  f"peaks: H800 dense BF16 {m['peak_bf16'] / 1e12:.1f} TFLOP/s, dense FP8 "
                  f"{m['peak_fp8'] / 1e12:.0f} TFLOP/s", ""]
        rows = [["FLOPs", "per GPU", "MFU vs BF16 peak", "MFU vs FP8 peak", "formula"]]
        for r in m["rows"]:
            rows.append([f"{r['flops']:.3e}", f"{r['flops_per_gpu_s'] / 1e12:.1f} TFLOP/s",
                         _pct(r["mfu_bf16"]), _pct(r["mfu_fp8"]), r["formula"]])
        lines += [_table(rows, right={0, 1, 2, 3}), f"note: {m['note']}"]
    run["_text"] = "\n".join(lines)
    return run


def _presets() -> dict:
    from r1lab.cost.published import GPUS

    rows = [["gpu", "BF16 dense", "FP8 dense", "$/GPU-hour", "note"]]
    for g in GPUS.values():
        fp8 = "-" if g.fp8 is None else f"{g.fp8 / 1e12:g} TFLOP/s"
        rows.append([g.name, f"{g.bf16 / 1e12:g} TFLOP/s", fp8, f"${g.price:.2f}", g.note])
    text = "\n".join(["GPU presets (peaks without sparsity; prices are assumptions, override with --price)", "",
                      _table(rows, right={1, 2, 3}), "",
                      "try: r1lab cost --known deepseek-v3 | --known deepseek-r1 | "
                      "--active-params 37B --tokens 14.8T --gpu H800 --mfu 0.35"])
    gpus = [{"gpu": g.name, "peak_bf16": g.bf16, "peak_fp8": g.fp8, "price_per_hour": g.price, "note": g.note}
            for g in GPUS.values()]
    return {"mode": "presets", "gpus": gpus, "_text": text}


def _what_if(args) -> dict:
    from r1lab.cost import flops as F
    from r1lab.cost.published import dollars, format_si, get_gpu, gpu_hours, implied_mfu, training_flops

    active = args.active_params if args.active_params is not None else args.params
    if active is None or args.tokens is None:
        raise ValueError("a what-if needs --tokens and --active-params (or --params)")
    params = args.params if args.params is not None else active
    if active > params:
        raise ValueError(f"--active-params ({active:g}) exceeds --params ({params:g})")
    if args.mfu is not None and args.gpu_hours is not None:
        raise ValueError("give --mfu (to estimate GPU-hours) or --gpu-hours (to get the implied MFU), not both")
    attn = [args.layers, args.attn_dim, args.context_len]
    if any(v is not None for v in attn) and not all(v is not None and v > 0 for v in attn):
        raise ValueError("attention needs all of --layers, --attn-dim, --context-len, each > 0")
    gpu = get_gpu(args.gpu or "H100")
    price = gpu.price if args.price is None else args.price
    if price < 0:
        raise ValueError(f"--price must be >= 0, got {price}")
    peak = gpu.peak(args.precision)
    flops = training_flops(active, args.tokens)
    formula = "6·N·D (N active parameters, D tokens; attention not counted: add --layers --attn-dim --context-len)"
    if args.layers is not None:
        shape = F.Shape(args.layers, 0, 0, args.attn_dim, args.attn_dim)
        flops += F.train_flops(shape, n_tokens=args.tokens, context_len=args.context_len)
        formula = "6·N·D + 3·2·L·(T+1)/2·2·d·D (causal attention, L layers, T context, d = heads × head_dim)"
    if args.gpu_hours is not None:
        hours, mfu = args.gpu_hours, implied_mfu(flops, args.gpu_hours, peak)
    else:
        mfu = 0.4 if args.mfu is None else args.mfu
        hours = gpu_hours(flops, peak, mfu)
    cost = dollars(hours, price)
    rows = [["parameters", f"{format_si(params)} total, {format_si(active)} active"],
            ["tokens", format_si(args.tokens)],
            ["training FLOPs", f"{flops:.4g}  = {formula}"],
            ["GPU", f"{gpu.name}, dense {args.precision.upper()} peak {peak / 1e12:g} TFLOP/s"],
            ["MFU", _pct(mfu) + ("  (implied by --gpu-hours)" if args.gpu_hours is not None else "")
             + ("; over 100%: these hours cannot do this work at this peak" if mfu > 1 else "")],
            ["GPU-hours", f"{hours:,.0f}" if hours >= 10 else f"{hours:.3g}"],
            ["cost", (f"${cost:,.0f}" if cost >= 10 else f"${cost:.3g}") + f"  at ${price:.2f} per GPU-hour"]]
    return {"mode": "what-if", "params": params, "active_params": active, "tokens": args.tokens,
            "formula": formula, "flops": flops, "gpu": gpu.name, "precision": args.precision, "peak_flops": peak,
            "mfu": mfu, "mfu_implied": args.gpu_hours is not None, "gpu_hours": hours,
            "price_per_hour": price, "dollars": cost, "_text": "What if\n" + _table(rows)}


def _recipe(args) -> dict:
    """An RL recipe's run, before it runs: tokens and FLOPs (r1lab/cost/recipes.py), GPU-hours and dollars at an MFU,
    and what the recipe's source published."""
    from r1lab.cost.published import dollars, format_si, get_gpu, gpu_hours
    from r1lab.cost.recipes import PUBLISHED, RLWork, evaluations, matmul_params, recompute_flops, rl_flops
    from r1lab.recipes import load_recipe_config, resolve_recipe
    from r1lab.rl.train import RLConfig, algorithm

    path = resolve_recipe(args.recipe)
    cfg = load_recipe_config(RLConfig, "rl", path, args.overrides + ([f"model={args.model}"] if args.model else []))
    algo = algorithm(cfg)
    config, card_params, shape_from = _model_shape(cfg.model)
    prompt_tokens, prompt_from = ((args.prompt_tokens, "--prompt-tokens") if args.prompt_tokens is not None
                                  else _prompt_tokens(cfg))
    response_tokens, response_from = ((args.response_tokens, "--response-tokens") if args.response_tokens is not None
                                      else (cfg.max_new_tokens / 2, "max_new_tokens / 2"))
    n_evals = evaluations(cfg.steps, cfg.eval_every) if cfg.eval_instances else 0
    work = RLWork(steps=cfg.steps, prompts_per_step=cfg.prompts_per_step, samples_per_prompt=cfg.samples_per_prompt,
                  prompt_tokens=prompt_tokens, response_tokens=response_tokens, mu=cfg.mu,
                  reference=algo.kl_coef != 0, old_logp=cfg.mu > 1 or (algo.kl_coef != 0 and algo.kl_as_reward),
                  lora=cfg.lora_r > 0, eval_sequences=cfg.eval_instances * cfg.eval_samples * n_evals)
    by_kind = rl_flops(config, work)
    total = sum(by_kind.values())
    gpu = get_gpu(args.gpu or "H100")
    price = gpu.price if args.price is None else args.price
    if price < 0:
        raise ValueError(f"--price must be >= 0, got {price}")
    mfu = 0.3 if args.mfu is None else args.mfu
    peak = gpu.peak(args.precision)
    hours = gpu_hours(total, peak, mfu)
    cost = dollars(hours, price)
    n = matmul_params(config)
    published = PUBLISHED.get(path.stem)
    card = f"; model card {card_params / 1e9:.2f}B" if card_params else ""
    lines = [f"{path.stem}: {cfg.model} on {cfg.task} ({path})",
             f"model     {format_si(n)} matmul parameters (N){card}; shape from {shape_from}",
             f"run       {cfg.steps:,} steps x {cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} samples = "
             f"{work.sequences:,} sequences of {prompt_tokens:,.0f} prompt tokens ({prompt_from}) + "
             f"{response_tokens:,.0f} response tokens ({response_from})",
             f"tokens    {format_si(work.tokens)} trained (prompt + response), "
             f"{format_si(work.sequences * response_tokens)} sampled; {work.eval_sequences:,} held-out samples over "
             f"{n_evals} evaluations", ""]
    rows = [["work", "model FLOPs", "share"]]
    for kind, f in by_kind.items():
        rows.append([kind, f"{f:.3e}", _pct(f / total)])
    rows.append(["total", f"{total:.3e}", "100.0%"])
    lines += [_table(rows, right={1, 2}), "",
              f"GPU       {gpu.name}, dense {args.precision.upper()} peak {peak / 1e12:g} TFLOP/s, MFU {_pct(mfu)} "
              f"for all of it (decoding usually runs far below; a floor, not a forecast)",
              f"GPU-hours {_hours(hours)}",
              f"cost      {_dollars(cost)} at ${price:.2f} per GPU-hour"]
    recompute = recompute_flops(config, work) if cfg.grad_checkpointing else 0.0
    if recompute:
        lines.append(f"note      gradient checkpointing recomputes {recompute:.3e} FLOPs more "
                     f"({_pct(recompute / total)} of the above): not model FLOPs, they show as a lower MFU")
    comparison = None
    if published is not None:
        lines += ["", f"source    {published.source}", f"published {published.result}",
                  f"compute   {published.compute}"]
        if published.gpu_hours:
            comparison = hours / published.gpu_hours
            lines.append(f"vs        this estimate is {comparison:.2g}x the published {published.gpu} GPU-hours "
                         f"(at MFU {_pct(mfu)} on {gpu.name})")
        elif published.dollars:
            comparison = cost / published.dollars
            lines.append(f"vs        this estimate is {comparison:.2g}x the published ${published.dollars:g} bound")
        else:
            lines.append("vs        no published GPU-hours for this model to compare with")
    result = {"mode": "recipe", "recipe": path.stem, "path": str(path), "model": cfg.model, "task": cfg.task,
              "matmul_params": n, "card_params": card_params, "steps": cfg.steps,
              "prompts_per_step": cfg.prompts_per_step, "samples_per_prompt": cfg.samples_per_prompt,
              "sequences": work.sequences, "prompt_tokens": prompt_tokens, "response_tokens": response_tokens,
              "tokens": work.tokens, "eval_sequences": work.eval_sequences, "flops_by_kind": by_kind, "flops": total,
              "recompute_flops": recompute,
              "gpu": gpu.name, "precision": args.precision, "peak_flops": peak, "mfu": mfu, "gpu_hours": hours,
              "price_per_hour": price, "dollars": cost,
              "published": None if published is None else dict(vars(published)),
              "vs_published": comparison, "_text": "\n".join(lines)}
    return result


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.3g}"


def _dollars(d: float) -> str:
    return f"${d:,.0f}" if d >= 100 else f"${d:.3g}"


def _model_shape(model: str):
    """(config for flops.shape_of, the model card's parameter count or None, where the shape came from) for a hub id
    in cost.recipes.HUB_MODELS, a local model (a shipped base, a run or model directory: its config.json), or a hub
    model in the local Hugging Face cache. Never touches the network."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from r1lab.cost.flops import shape_of
    from r1lab.cost.recipes import HUB_MODELS
    from r1lab.model.load import ASSETS, hub_cache_dir, resolve_checkpoint

    if model in HUB_MODELS:
        config, card = HUB_MODELS[model]
        return config, card, f"{model}'s config.json (r1lab/cost/recipes.py)"
    if (ASSETS / model / "config.json").exists() or Path(model).expanduser().exists():
        config_path = Path(resolve_checkpoint(model)) / "config.json"
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json", cache_dir=hub_cache_dir())
        if not isinstance(cached, str):
            raise ValueError(f"{model}: no shape known: r1lab cost knows {', '.join(HUB_MODELS)}, and reads the "
                             f"config.json of a local model directory or of a hub model in the Hugging Face cache")
        config_path = Path(cached)
    if not config_path.exists():
        raise ValueError(f"{model}: no config.json in {config_path.parent}")
    config = SimpleNamespace(**json.loads(config_path.read_text()))
    try:
        shape_of(config)
    except (AttributeError, NotImplementedError) as e:
        raise ValueError(f"{model}: cannot count its FLOPs from {config_path}: {e}") from None
    return config, None, str(config_path)


def _prompt_tokens(cfg) -> tuple[float, str]:
    """(prompt tokens a sequence, how they were found): one training prompt rendered with the recipe's template
    (drawn from the task's generator; for a dataset task, a typical question's length), then tokenized by the
    model's own tokenizer when it is a local directory, else estimated at 4 characters a token. A chat template
    without the model's tokenizer is estimated by the plain prompt of the same turns."""
    from pathlib import Path

    from r1lab.cost.recipes import QUESTION_CHARS, estimate_tokens
    from r1lab.model.load import ASSETS
    from r1lab.prompts import CHAT_TEMPLATES, encode
    from r1lab.tasks import get_task, parse_knobs
    from r1lab.tasks.common import render_messages, render_prompt

    tokenizer = None
    local = ASSETS / cfg.model if (ASSETS / cfg.model / "config.json").exists() else Path(cfg.model).expanduser()
    if local.is_dir():
        from r1lab.model.load import resolve_checkpoint
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint(str(local)))
    task, plain = get_task(cfg.task), CHAT_TEMPLATES.get(cfg.template, cfg.template)
    if hasattr(task, "generate"):
        example = task.generate(1, seed=cfg.seed, split="train", **parse_knobs(task, cfg.task_args))[0]
        prompt, turns = task.prompt(example, template=plain), task.messages(example, template=plain)
        what = f"one {cfg.task} prompt"
    else:
        n = QUESTION_CHARS.get(cfg.task, 200)
        prompt, turns = render_prompt("x" * n, plain), render_messages("x" * n, plain)
        what = f"the {plain} template + a {n}-character question"
    if cfg.template in CHAT_TEMPLATES and tokenizer is not None and tokenizer.chat_template:
        prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    elif cfg.template in CHAT_TEMPLATES:
        what += f" (the chat template estimated as the {plain} prompt)"
    if tokenizer is not None:
        return float(len(encode(tokenizer, prompt))), f"{what}, the model's tokenizer"
    return float(estimate_tokens(len(prompt))), f"{what}: {len(prompt)} characters / 4"
