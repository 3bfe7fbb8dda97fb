"""A character-level tokenizer for arithmetic reasoning, saved as a Hugging Face fast tokenizer.

Every character is its own token (so every digit is), and the four format tags are single tokens:

    >>> tok = build_tokenizer()
    >>> tok.convert_ids_to_tokens(tok("<think>12+3</think>")["input_ids"])
    ['<think>', '1', '2', '+', '3', '</think>']

Characters outside printable ASCII map to <unk>. The chat template renders the R1 turn structure and ends the
generation prompt with "<think>", exactly as the "short" plain template does when there is no system message; an
assistant turn with reasoning_content is written as r1lab.tasks.format.render_completion writes it.
"""
from __future__ import annotations

import string

from r1lab.tasks.format import TAGS, THINK_START, render_completion

EOS = "<|endoftext|>"
UNK = "<unk>"
PAD = "<pad>"

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}Assistant: " + THINK_START +
    "{% if m.get('reasoning_content') %}" + render_completion("{{ m['reasoning_content'] }}", "{{ m['content'] }}") +
    "{% else %}{{ m['content'] }}{% endif %}" + EOS + "\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant: " + THINK_START + "{% endif %}"
)


def build_tokenizer():
    """A PreTrainedTokenizerFast: specials, the four tags, then printable ASCII (one token per character)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]  # letters, digits, punctuation, " \t\n"
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *TAGS] + chars)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # subtle: split into single characters before the word-level lookup; tags are matched first as added tokens.
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, EOS, UNK)])
    # The tags are added but not "special", so decode(skip_special_tokens=True) keeps them in the text.
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS, pad_token=PAD, unk_token=UNK, bos_token=None,
        clean_up_tokenization_spaces=False, model_max_length=4096,
        padding_side="left",  # generation pads on the left
    )
    # subtle: padding_side goes to the constructor: set afterwards, save_pretrained does not write it and
    # AutoTokenizer reloads the tokenizer padding on the right.
    tok.chat_template = CHAT_TEMPLATE
    return tok
