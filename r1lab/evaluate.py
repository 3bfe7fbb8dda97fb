"""Evaluation with the task's own verifier, through the same engine as RL rollouts and serving."""
from __future__ import annotations

import statistics

from r1lab.behaviour import arithmetic_steps


def evaluate_model(model, tokenizer, task, examples, template: str = "short", max_new_tokens: int = 512,
                   autocast_dtype=None, samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                   seed: int = 0, account=None) -> dict:
    """pass@1 (mean over `samples` per problem), format rate and arithmetic-step accuracy of sampled answers."""
    from r1lab.engine import Engine, SamplingParams

    engine = Engine(model, tokenizer, autocast_dtype=autocast_dtype)
    prompts = [task.prompt(ex, template=template) for ex in examples for _ in range(samples)]
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    outs = engine.generate(prompts, params)
    if account is not None:
        for o in outs:
            account.add_generate(len(o.prompt_ids), len(o.token_ids))
    scores = [task.score(o.text, ex) for o, ex in zip(outs, [ex for ex in examples for _ in range(samples)])]
    steps = [arithmetic_steps(o.text) for o in outs]
    n_ok, n_steps = sum(s[0] for s in steps), sum(s[1] for s in steps)
    return {
        "pass1": statistics.mean(s.correct for s in scores),
        "format_rate": statistics.mean(s.format_ok for s in scores),
        "step_acc": n_ok / n_steps if n_steps else float("nan"),
        "response_len": statistics.mean(len(o.token_ids) for o in outs),
    }
