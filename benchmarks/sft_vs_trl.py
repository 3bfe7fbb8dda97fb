"""Training tokens per second: r1lab's SFT stage vs TRL's SFTTrainer, same model, data, batch, packing and precision.

    pip install -e ".[bench]"        # TRL is an optional extra, never a runtime dependency of r1lab
    python benchmarks/sft_vs_trl.py [--preset tiny-5m] [--steps 20] [--warmup 3] [--repeats 3] [--out out.json]

Matched on purpose: the same randomly initialised preset (build_model(seed=0)) saved once and loaded by both; the
same records (countdown search traces from r1lab's pretraining corpus, prompt + completion, EOS appended, loss on
the completion only); packing into rows of max_length = seq_len = 512 tokens, 8 packed rows per step, no gradient
accumulation; AdamW at lr 1e-4, cosine schedule, warm-up 2 steps, grad clip 1.0, weight decay 0; fp32 throughout;
no evaluation, no checkpoints, no logging inside the timed steps; one fresh process per run with the same torch
thread count. TRL packs with its default "bfd" strategy, which is padding-free (a batch is one flattened row with
position ids; without flash attention its records can attend to each other, which TRL warns about); r1lab packs first
fit with a block-diagonal mask, so each record sees only itself.

Throughput = real (non-padding) input tokens of the timed steps / their wall time (r1lab: train_step's
record_tokens; TRL: the tokens its collator emits, counted in a wrapper). A step's time runs between the ends of
consecutive steps (TRL: on_step_end callbacks, so its data loading and bookkeeping count; r1lab: the loop around
train_step, batching included). The first --warmup steps are dropped; the median over --repeats runs is reported.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ_LEN, BATCH, LR = 512, 8, 1e-4


def make_inputs(workdir: Path, preset: str, n_records: int) -> tuple[Path, Path]:
    from r1lab.model.presets import build_model
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.pretrain.corpus import CorpusConfig, corpus_document
    from r1lab.tasks import get_task

    tok = build_tokenizer()
    model_dir = workdir / "model"
    model = build_model(preset, tok, max_positions=1024, seed=0)
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    task, rng, cfg = get_task("countdown"), random.Random(0), CorpusConfig()
    rows = []
    for ex in task.generate(2 * n_records, 0, "train", max_number=12, max_target=100):
        doc = corpus_document(task, ex, rng, cfg, "short")
        if doc is not None and len(rows) < n_records:
            rows.append({"prompt": doc[0], "completion": doc[1]})
    data = workdir / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


def run_r1lab(model_dir: str, data: str, steps: int, threads: int) -> tuple[list[float], list[int]]:
    from r1lab.config import load_config
    from r1lab.sft.train import SFTConfig, setup, train_step

    out = tempfile.mkdtemp()
    cfg = load_config(SFTConfig, None, [f"model={model_dir}", f"data={data}", f"out_dir={out}", f"steps={steps}",
                                        f"seq_len={SEQ_LEN}", f"device_batch_size={BATCH}", "grad_accum=1",
                                        f"lr={LR}", "warmup_steps=2", "dtype=fp32", "eval_instances=0",
                                        f"threads={threads}"])
    run = setup(cfg)
    run.model.train()
    times, tokens = [], []
    t_prev = time.perf_counter()
    for step in range(steps):
        metrics = train_step(step, run)
        now = time.perf_counter()
        times.append(now - t_prev)
        tokens.append(metrics["record_tokens"])
        t_prev = now
    return times, tokens


def run_trl(model_dir: str, data: str, steps: int, threads: int) -> tuple[list[float], list[int]]:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ds = load_dataset("json", data_files=data, split="train")
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_length=SEQ_LEN, packing=True, per_device_train_batch_size=BATCH,
                     gradient_accumulation_steps=1, max_steps=steps, learning_rate=LR, lr_scheduler_type="cosine",
                     warmup_steps=2, weight_decay=0.0, max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.95,
                     logging_steps=10_000, save_strategy="no", report_to=[], use_cpu=True, bf16=False,
                     dataloader_num_workers=0, seed=0, completion_only_loss=True)
    times, tokens, marks = [], [], [time.perf_counter()]

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            times.append(now - marks[-1])
            marks.append(now)

    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting
    trainer.train_dataset  # noqa: B018 (already packed by the constructor)
    # subtle: the dataloader is built inside train() from trainer.data_collator, so the wrapper is in place.

    class Start(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    trainer.add_callback(Start())
    trainer.train()
    return times, tokens[:len(times)]


def worker(args) -> None:
    fn = run_r1lab if args.worker == "r1lab" else run_trl
    times, tokens = fn(args.model_dir, args.data, args.steps, args.threads)
    kept_t, kept_n = times[args.warmup:], tokens[args.warmup:]
    print("RESULT " + json.dumps({"tokens_per_s": sum(kept_n) / sum(kept_t), "median_step_s": statistics.median(kept_t),
                                  "tokens_per_step": statistics.mean(kept_n), "steps": len(times)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny-5m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--worker", choices=["r1lab", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    work = Path(tempfile.mkdtemp(prefix="sft_vs_trl-"))
    model_dir, data = make_inputs(work, args.preset, args.records)
    results = {"r1lab": [], "trl": []}
    for rep in range(args.repeats):
        for name in ("r1lab", "trl"):  # interleaved, so drift in the machine's speed hits both
            cmd = [sys.executable, __file__, "--worker", name, "--model-dir", str(model_dir), "--data", str(data),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(f"{name} worker failed:\n{proc.stderr[-3000:]}")
            results[name].append(json.loads(line[-1][7:]))
            print(f"run {rep}: {name:5s} {json.dumps(results[name][-1])}", flush=True)
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in results.items()}
    summary = {"preset": args.preset, "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
               "seq_len": SEQ_LEN, "batch": BATCH, "threads": args.threads, "runs": results,
               "median_tokens_per_s": med, "speedup": med["r1lab"] / med["trl"]}
    print(f"tokens/s (median of {args.repeats}): r1lab {med['r1lab']:.0f}, TRL {med['trl']:.0f}; "
          f"r1lab / TRL = {summary['speedup']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
