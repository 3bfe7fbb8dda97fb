"""A task's problem as the model sees it: rendered with a prompt template, then encoded.

    text = render(task, example, "chat", tokenizer)   # the model's own chat template around the question
    ids = encode(tokenizer, text)                       # what the engine, vLLM and SFT feed the model

Templates (PROMPT_TEMPLATES):
- "short", "r1": r1lab's plain-text templates (r1lab.tasks.common.TEMPLATES), for base models; the prompt ends
  inside <think>. The tokenizer is not needed.
- "chat", "chat-r1": the tokenizer's chat template, with its generation prompt, over the task's chat turns:
  the question alone ("chat": no system prompt, as DeepSeek recommends for R1 and its Distill models: "all
  instructions in the user prompt"), or R1's system prompt then the question with the task's format instructions
  ("chat-r1": how open-r1 and TRL's GRPO examples prompt an Instruct model to write <think>/<answer>). r1lab's own
  tokenizer has a chat template too: its "chat" renders exactly the short prompt.

encode() keeps one rule for every prompt: the tokenizer's own special tokens (a Llama or R1-Distill BOS), as a base
model saw its pretraining text, except where the text already starts with the BOS a chat template writes. A prompt
never gets two.
"""
from __future__ import annotations

from r1lab.config import ConfigError
from r1lab.tasks.common import TEMPLATES

# A chat template -> the task's chat turns it renders (task.messages(example, template=...)).
CHAT_TEMPLATES = {"chat": "short", "chat-r1": "r1"}
PROMPT_TEMPLATES = (*TEMPLATES, *CHAT_TEMPLATES)


def check_template(template: str, tokenizer=None) -> None:
    """ConfigError (a ValueError) for a template render() does not have, or a chat template for a tokenizer without
    one (checked when `tokenizer` is given)."""
    if template not in PROMPT_TEMPLATES:
        raise ConfigError(f"unknown template {template!r}; valid: {', '.join(PROMPT_TEMPLATES)}")
    if template in CHAT_TEMPLATES and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"template = {template!r} renders the model's chat template, and its tokenizer has none "
                          f"(a base model): use {' or '.join(TEMPLATES)}")


def render(task, example: dict, template: str, tokenizer=None) -> str:
    """The prompt text of `example`: task.prompt for a plain template, the tokenizer's chat template (with the
    generation prompt) over task.messages for a chat one, which needs the tokenizer."""
    if template not in CHAT_TEMPLATES:
        return task.prompt(example, template=template)
    if tokenizer is None:
        raise ValueError(f"template {template!r} renders the model's chat template: it needs the model's tokenizer")
    check_template(template, tokenizer)
    return tokenizer.apply_chat_template(task.messages(example, template=CHAT_TEMPLATES[template]), tokenize=False,
                                         add_generation_prompt=True)


def longest_prompt(task, examples, template: str, tokenizer) -> int:
    """The token count of the longest of the examples' prompts as the engine receives them (render, then encode):
    what a model's positions must hold besides the new tokens."""
    return max(len(encode(tokenizer, render(task, ex, template, tokenizer))) for ex in examples)


def encode(tokenizer, text: str) -> list[int]:
    """`text`'s token ids with the tokenizer's special tokens, unless it already starts with the tokenizer's BOS
    (then none are added)."""
    bos = getattr(tokenizer, "bos_token", None)
    return tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]
