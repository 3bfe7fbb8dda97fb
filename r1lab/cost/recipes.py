"""What an RL recipe will cost before it runs: its tokens and FLOPs from its batch sizes and lengths, then GPU-hours
and dollars (published.py), beside what its source published.

One step of `r1lab rl` (r1lab/rl/train.py) on S = prompts_per_step x samples_per_prompt sequences of P prompt and
R response tokens (T = P + R) does:

    generate   S sampled sequences with a KV cache        flops.generate_flops(P, R) each
    train      mu forward + backward passes over S x T    flops.train_flops(S*T, T) each (3x forward); with LoRA
                                                          flops.frozen_train_flops: no weight gradients for the
                                                          frozen base (2x its matmuls, 3x attention)
    reference  with a KL term, the reference's log-probs  flops.forward_flops(S*T, T)
    old_logp   with mu > 1 or the KL in the reward        flops.forward_flops(S*T, T)

plus the held-out evaluations (generation only). These are model FLOPs, as every run's account counts them
(cost/account.py): gradient checkpointing's recomputed forward (`recompute_flops`) is not among them, and shows as a
lower MFU. R is an expectation, not a budget: responses stop at EOS, and R1-Zero-style runs see them grow, so the
caller passes its estimate (`r1lab cost` takes max_new_tokens / 2 unless told). Decoding is memory-bound and runs
far below the MFU of training, and one MFU for all of it makes the hours a floor for that MFU, not a forecast.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from r1lab.cost import flops as F


@dataclass(frozen=True)
class RLWork:
    """What one RL run processes; plain numbers, so a test can build one by hand."""
    steps: int
    prompts_per_step: int
    samples_per_prompt: int
    prompt_tokens: float                 # P, per sequence (an estimate)
    response_tokens: float               # R, per sequence (an estimate)
    mu: int = 1                          # training passes over each step's batch
    reference: bool = False              # a KL term: the reference model's forward every step
    old_logp: bool = False               # mu > 1 or KL in the reward: a no-grad forward of the policy every step
    lora: bool = False                   # LoRA: the base is frozen, its backward computes no weight gradients
    eval_sequences: int = 0              # held-out samples over the whole run (instances x samples x evaluations)

    @property
    def sequences(self) -> int:
        return self.steps * self.prompts_per_step * self.samples_per_prompt

    @property
    def tokens(self) -> float:
        """Training tokens: every step's sequences, prompt and response (the trainer's forward sees both)."""
        return self.sequences * (self.prompt_tokens + self.response_tokens)


def rl_flops(config, work: RLWork) -> dict[str, float]:
    """Model FLOPs of an RL run by kind (generate, train, reference, old_logp, eval; only those that run) for a model
    shape (a flops.Shape or a Llama / Qwen2-style config).

        s = F.Shape(n_layers=1, body_params=10, head_params=5, qk_dim=8, v_dim=8)
        rl_flops(s, RLWork(steps=1, prompts_per_step=1, samples_per_prompt=2, prompt_tokens=3, response_tokens=2))
        # {"generate": 840.0, "train": 3780.0}: 2 x 420 to sample, 3 x (2*15*10 + 2*1*10*3*16) to train
    """
    P, R = work.prompt_tokens, work.response_tokens
    forward = _forward(config, work)
    train = _forward(config, work, F.frozen_train_flops) if work.lora else 3 * forward
    out = {"generate": work.sequences * F.generate_flops(config, P, R), "train": work.mu * train}
    if work.reference:
        out["reference"] = forward
    if work.old_logp:
        out["old_logp"] = forward
    if work.eval_sequences:
        out["eval"] = work.eval_sequences * F.generate_flops(config, P, R)
    return out


def recompute_flops(config, work: RLWork) -> float:
    """What gradient checkpointing adds: one more forward per training pass. Hardware work, not model FLOPs (it
    lowers the MFU a run reaches). recompute_flops(s, work) == 1260 for rl_flops' example."""
    return work.mu * _forward(config, work)


def _forward(config, work: RLWork, flops=F.forward_flops) -> float:
    """One pass over every step's sequences, prompt and response: steps x flops(S*T, T) (a forward by default)."""
    T = work.prompt_tokens + work.response_tokens
    return work.steps * flops(config, work.prompts_per_step * work.samples_per_prompt * T, T)


def matmul_params(config) -> float:
    """N of 2·N FLOPs a token: the matmul weights of every layer plus the lm_head (tied or not), what the FLOP
    counts use; a few percent off a model card's count, which has no second lm_head when tied but has norms and
    biases."""
    s = F.shape_of(config)
    return s.body_params + s.head_params


def estimate_tokens(characters: float, chars_per_token: float = 4.0) -> int:
    """Tokens of English text with a byte-pair tokenizer, roughly: estimate_tokens(729) == 182"""
    return round(characters / chars_per_token)


# Typical question lengths in characters, for tasks whose problems come from a dataset (no generator to draw one
# from): GSM8K word problems run ~150-400 characters, MATH problems ~100-300. Rough; `--prompt-tokens` overrides.
QUESTION_CHARS = {"gsm8k": 240, "math": 200}


def evaluations(steps: int, eval_every: int) -> int:
    """How often `r1lab rl` evaluates the held-out set: before the first step, every eval_every steps, and after the
    last (never twice at the end). evaluations(25, 0) == 2; evaluations(25, 5) == 6 (0, 5, 10, 15, 20, 25)"""
    return 2 + ((steps - 1) // eval_every if eval_every else 0)


# --- the hub models the GPU recipes use -----------------------------------------------------------------------------
# Shapes from each model's config.json on the hub (https://huggingface.co/ID/blob/main/config.json); parameter counts
# from the model cards ("Number of Parameters", https://huggingface.co/ID), which count the tied embedding once.
# Every one is Qwen2 (GQA, two key/value heads, tied embeddings, vocabulary 151,936).

def _qwen2(hidden: int, intermediate: int, layers: int, heads: int) -> SimpleNamespace:
    return SimpleNamespace(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=2, vocab_size=151936)


HUB_MODELS = {
    "Qwen/Qwen2.5-0.5B": (_qwen2(896, 4864, 24, 14), 0.49e9),
    "Qwen/Qwen2.5-1.5B": (_qwen2(1536, 8960, 28, 12), 1.54e9),
    "Qwen/Qwen2.5-3B": (_qwen2(2048, 11008, 36, 16), 3.09e9),
    "Qwen/Qwen2.5-Math-1.5B": (_qwen2(1536, 8960, 28, 12), 1.54e9),  # Qwen2.5-1.5B's shape, 4,096 positions
}


# --- what each GPU recipe's source published -----------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    source: str
    result: str                       # the figure the recipe aims at
    compute: str                      # what the source says its compute was, in its words and numbers
    gpu: str | None = None            # the GPU of `gpu_hours`, when a figure is published for this very run
    gpu_hours: float | None = None
    dollars: float | None = None      # a published upper bound in dollars


PUBLISHED = {
    "tinyzero_countdown_qwen3b": Published(
        source="TinyZero (Pan et al. 2025), https://github.com/Jiayi-Pan/TinyZero",
        result="the 3B base learns to search and self-verify on countdown (no accuracy table; W&B logs: "
               "https://wandb.ai/jiayipan/TinyZero)",
        compute="README: 'experience the Ahah moment yourself for < $30'; 3B+ runs on 2 GPUs (N_GPUS=2, "
                "ROLLOUT_TP_SIZE=2); GPU type and hours not stated",
        dollars=30.0),
    "simplerl_gsm8k_qwen05b": Published(
        source="SimpleRL-Zoo (Zeng et al. 2025), arXiv:2503.18892, https://github.com/hkust-nlp/simpleRL-reason",
        result="Qwen-2.5-0.5B: GSM8K 36.7 -> 49.5, MATH-500 15.8 -> 34.4 (README's table)",
        compute="no hours for 0.5B; README: it needs at least one 80 GB H100/A100; the 7B and 14B ran ~100 steps "
                "in ~15 hours on 2x8 H100 (~240 H100-hours)"),
    "simplerl_math_qwen15b": Published(
        source="SimpleRL-Zoo (Zeng et al. 2025), arXiv:2503.18892, https://github.com/hkust-nlp/simpleRL-reason",
        result="Qwen-2.5-1.5B: MATH-500 29.6 -> 59.0, GSM8K 55.7 -> 74.4 (README's table)",
        compute="no hours for 1.5B; the 7B and 14B ran ~100 steps in ~15 hours on 2x8 H100 (~240 H100-hours)"),
    "drgrpo_math_qwen_math15b": Published(
        source="Dr. GRPO / Oat-Zero (Liu et al. 2025), arXiv:2503.20783, https://github.com/sail-sg/understand-r1-zero",
        result="Oat-Zero-1.5B (Qwen2.5-Math-1.5B): MATH-500 pass@1 74.2 (greedy, 3,000 tokens, Qwen-Math template)",
        compute="no hours for 1.5B (its script runs on 8 A100-40G); the 7B minimalist recipe took 27 hours on "
                "8 A100 (216 A100-hours)"),
}
