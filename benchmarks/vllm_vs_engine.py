"""Rollout tokens/s: vLLM (the colocated rollout backend, r1lab/engine/vllm_backend.py) vs r1lab's engine, on CPU.

    /work/vllm-venv/bin/python benchmarks/vllm_vs_engine.py [--models tiny-5m,qwen2-100m] [--prompts 8] [--samples 8]
        [--new 256] [--budget 128] [--logprobs] [--threads 1] [--repeats 3]

An RL-shaped batch: P countdown prompts x G samples each (rows of a group share their prompt, which both engines
exploit: r1lab's engine prefills a prompt once and reads its KV once per group, vLLM's prefix cache shares blocks),
through each backend's generate(), as `r1lab rl` calls it. Two models, both randomly initialised (no downloads):
  tiny-5m     r1lab's preset (a 4.8M-parameter Llama, character tokenizer);
  qwen2-100m  transformers' Qwen2Config (hidden 768, 12 layers, 12 query and 2 key/value heads, MLP 3072; 101.6M
              parameters) on r1lab's character tokenizer, so nearly every parameter is in the layers.
Greedy rows (temperature 0) run the full --new tokens in both (random weights do not pick EOS), so tokens/s compare
like for like; sampled rows (temperature 1, as rollouts) may end early, and tokens/s counts the tokens returned.
A third row: greedy under a thinking budget (--budget, then "\ngive up\n</think>" forced): the engine forces it
inside its decoding loop, vLLM samples each row in runs and prefills prompt + tokens again for the run after the
forced text (r1lab/engine/runs.py); both return --new tokens a row, so its vLLM figure against the plain greedy row's
is what the runs cost. With --logprobs (every row asks the sampled tokens' log-probs, as RL's rollouts do), the run
after a forced text also asks the forced tokens' log-probs as prompt log-probs, and vLLM then skips its prefix cache
for that request (vllm.SamplingParams.skip_reading_prefix_cache): the whole prompt and tokens so far are prefilled.
Each repeat times the engine and vLLM back to back (so load from other jobs falls on both); the median of --repeats
is printed. Also: vLLM's build time and one weight sync (push + prefix-cache reset), the cost RL pays per step.
Needs vLLM (pip install -e ".[vllm]"; README "Scaling up").
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from r1lab.engine import SamplingParams, make_backend
from r1lab.model.presets import build_model, count_parameters
from r1lab.model.tokenizer import build_tokenizer


def qwen2_100m(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      num_key_value_heads=2, intermediate_size=3072, max_position_embeddings=1024,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg)


MODELS = {"tiny-5m": lambda tok: build_model("tiny-5m", tok), "qwen2-100m": qwen2_100m}


def rollout_prompts(P: int, G: int) -> list[str]:
    from r1lab.tasks import get_task

    task = get_task("countdown")
    return [task.prompt(ex, template="short") for ex in task.generate(P, seed=0, split="train") for _ in range(G)]


def timed_generate(backend, prompts, params) -> tuple[int, float]:
    t = time.perf_counter()
    outs = backend.generate(prompts, params)
    return sum(len(o.token_ids) for o in outs), time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tiny-5m,qwen2-100m")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="1 is steadier when other jobs share the cores")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=128, help="thinking tokens before the forced close, greedy rows")
    ap.add_argument("--logprobs", action="store_true", help="every row asks the sampled tokens' log-probs, as RL does")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # before vLLM is built: it pins the count for the rest of the process
    import vllm

    tok = build_tokenizer()
    prompts = rollout_prompts(args.prompts, args.samples)
    rows = len(prompts)
    print(f"{args.prompts} prompts x {args.samples} samples, {args.new} new tokens, budget {args.budget}, "
          f"{'log-probs, ' if args.logprobs else ''}{args.threads} thread(s), fp32, median of {args.repeats}; "
          f"torch {torch.__version__}, vllm {vllm.__version__}")
    for name in args.models.split(","):
        model = MODELS[name](tok).eval()
        engine = make_backend("engine", model, tok, max_batch_size=rows)
        t = time.perf_counter()
        llm = make_backend("vllm", model, tok, max_batch_size=rows)
        build_s = time.perf_counter() - t
        for backend in (engine, llm):  # warm-up
            backend.generate(prompts[:4], SamplingParams(max_new_tokens=8))
        print(f"{name}: {count_parameters(model) / 1e6:.1f}M parameters; vLLM built in {build_s:.1f} s")
        lp = args.logprobs
        budget = SamplingParams(temperature=0.0, max_new_tokens=args.new, max_thinking_tokens=args.budget,
                                thinking_end="\ngive up\n</think>", logprobs=lp)
        for label, params in (("greedy", SamplingParams(temperature=0.0, max_new_tokens=args.new, logprobs=lp)),
                              ("T=1", SamplingParams(temperature=1.0, max_new_tokens=args.new, seed=0, logprobs=lp)),
                              ("budget", budget)):
            runs = {"engine": [], "vllm": []}
            for _ in range(args.repeats):
                for key, backend in (("engine", engine), ("vllm", llm)):
                    runs[key].append(timed_generate(backend, prompts, params))
            rates = {}
            for key, rs in runs.items():
                n = statistics.median(r[0] for r in rs)
                dt = statistics.median(r[1] for r in rs)
                rates[key] = statistics.median(r[0] / r[1] for r in rs)
                print(f"  {label:7s} {key:6s} {n:7.0f} tokens {dt:7.2f} s {rates[key]:8.0f} tok/s", flush=True)
            print(f"  {label:7s} vllm / engine {rates['vllm'] / rates['engine']:.2f}x")
        syncs = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            llm.sync_weights(model)
            syncs.append(time.perf_counter() - t)
        print(f"  one weight sync (push + prefix-cache reset): {statistics.median(syncs) * 1e3:.1f} ms", flush=True)
        del llm


if __name__ == "__main__":
    main()
