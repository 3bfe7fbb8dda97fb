"""The one <think>/<answer> rule (r1lab/tasks/format.py): hand-made cases, the reward and the server reading the same
reasoning and answer on malformed completions, the stream adding up to the whole text under any chunking, bounded
time on hostile input, and the writers (corpus, chat template) producing what the parser reads back."""
import doctest
import random

import pytest
from conftest import best_of_three
from hypothesis import given, settings
from hypothesis import strategies as st

from r1lab.model.tokenizer import build_tokenizer
from r1lab.serve.text import split_reasoning
from r1lab.tasks import arithmetic, countdown, format as fmt, gsm8k
from r1lab.tasks.extract import extract_answer
from r1lab.tasks.format import (MAX_COMPLETION_CHARS, TAGS, Parsed, StreamSplitter, parse_completion,
                                render_completion)


def test_doctests():
    assert doctest.testmod(fmt).failed == 0


@pytest.mark.parametrize("text, reasoning, answer, content, format_ok", [
    ("3+4=7</think> <answer>7</answer>", "3+4=7", "7", "7", True),
    (" <think>3+4=7</think>\n<answer> 7 </answer>\n", " <think>3+4=7", "7", "7", True),  # optional <think>
    ("3+4=7</think> <answer></answer>", "3+4=7", "", "", True),  # an empty answer is still well formed
    ("no end <answer>7</answer>", "no end <answer>7</answer>", None, "", False),  # still thinking: no answer
    ("a <answer>6</answer></think> <answer>7</answer>", "a <answer>6</answer>", "7", "7", False),  # tag in thinking
    ("a <answer>6</answer></think> none", "a <answer>6</answer>", None, "none", False),
    ("a</think> b</think> <answer>7</answer>", "a", "7", "b</think> 7", False),  # two </think>: the first counts
    ("a</think> <answer>6</answer> <answer>7</answer>", "a", "7", "6 7", False),  # the last block after </think>
    ("a</think> <answer>6</answer> <answer>7", "a", "6", "6 7", False),  # the last *complete* block
    ("a</think> <answer>6<answer>7</answer>", "a", "7", "67", False),  # a block holds no answer tag
    ("a</think> <answer>7</answer> done", "a", "7", "7 done", False),  # text after the answer
    ("a</think> 7", "a", None, "7", False),
    ("<think><think>a</think><answer>7</answer>", "<think><think>a", "7", "7", False),  # one <think> at most
    ("a</answer></think><answer>7</answer>", "a</answer>", "7", "7", False),
    ("", "", None, "", False),
])
def test_the_rule(text, reasoning, answer, content, format_ok):
    assert parse_completion(text) == Parsed(reasoning, answer, content, format_ok, "</think>" in text)


# Malformed completions: what the reward graded and what a user is shown must be the same reading.
MALFORMED = [
    "a</think> b</think> <answer>3 * 5 + 7</answer>",
    "<answer>3 * 5 + 7</answer></think> <answer>3 + 5 + 7</answer>",
    "<answer>3 * 5 + 7</answer></think> no answer",
    "3 * 5 + 7 = 22, <answer>3 * 5 + 7</answer>",
    "<think>3 * 5 = 15</think> <answer>3 * 5 + 7</answer> <answer>2 * 11</answer>",
    "  <think>x</think>\n\n<answer>\n3 * 5 + 7\n</answer>\n",
    "x</think><answer>3 * 5 + 7",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_reward_and_server_read_the_same_reasoning_and_answer(text):
    parsed = parse_completion(text)
    assert split_reasoning(text) == (parsed.reasoning, parsed.content)
    ex = {"nums": [3, 5, 7], "target": 22}
    assert countdown.score(text, ex).answer == parsed.answer
    assert countdown.score(text, ex).correct == (parsed.answer == "3 * 5 + 7")
    if parsed.answer is not None:
        assert extract_answer(text).answer == parsed.answer and extract_answer(text).source == "answer_tag"
    for score in (countdown.score(text, ex), arithmetic.score(text, {"a": 1, "op": "+", "b": 2}),
                  gsm8k.score(text, {"question": "q", "answer": "#### 22"})):
        assert score.format_ok == parsed.format_ok


def test_well_formed_means_content_is_the_answer():
    for text in ["r</think> <answer>a</answer>", "<think>r</think><answer> a b </answer>  "]:
        parsed = parse_completion(text)
        assert parsed.format_ok and parsed.content == parsed.answer


PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<", "</", "<ans", "wer>", "think>", " ", "\n", "7", "x"]


def stream(text: str, cuts: list[int]) -> tuple[str, str]:
    splitter, r, c = StreamSplitter(), "", ""
    for a, b in zip(cuts, cuts[1:]):
        dr, dc = splitter.push(text[a:b])
        r, c = r + dr, c + dc
    dr, dc = splitter.finish()
    return r + dr, c + dc


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14).map("".join), st.randoms(use_true_random=False))
def test_stream_adds_up_to_the_whole_text_under_any_chunking(text, rng):
    cuts = sorted([0, len(text)] + [rng.randint(0, len(text)) for _ in range(rng.randint(0, len(text)))])
    parsed = parse_completion(text, limit=None)
    assert stream(text, cuts) == (parsed.reasoning, parsed.content)  # repeated cuts push empty pieces too
    if parsed.format_ok:
        assert parsed.content == parsed.answer and not any(tag in parsed.reasoning for tag in TAGS)


def test_stream_character_by_character_on_a_long_reply():
    rng = random.Random(0)
    text = "".join(rng.choice(PIECES) for _ in range(3000))
    parsed = parse_completion(text, limit=None)
    assert stream(text, list(range(len(text) + 1))) == (parsed.reasoning, parsed.content)


HOSTILE = ["<answer>" * 5000, "</think>" * 5000, "</think> <answer>" * 2000, " " * 19_000 + "</think><answer>7",
           "<think>" * 5000, "</think>" + "</answer><answer>" * 3000, "x" * 1_000_000]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_input_is_parsed_in_bounded_time(text):
    _, seconds = best_of_three(parse_completion, text)
    assert seconds < 0.05  # linear scans of at most MAX_COMPLETION_CHARS; a quadratic regex took seconds


def test_verifiers_read_a_bounded_prefix_the_server_all():
    text = "x" * MAX_COMPLETION_CHARS + "</think> <answer>7</answer>"
    assert parse_completion(text).answer is None and parse_completion(text, limit=None).answer == "7"
    assert parse_completion(None) == parse_completion(b"</think> <answer>7</answer>") == parse_completion("")


@pytest.mark.parametrize("reasoning, answer", [("3+4=7\n", "7"), ("", ""), ("a\nb ", " 4 2 ")])
def test_render_completion_reads_back(reasoning, answer):
    parsed = parse_completion(render_completion(reasoning, answer))
    assert parsed == Parsed(reasoning, answer.strip(), answer.strip(), True, True)


def test_chat_template_writes_an_assistant_turn_as_render_completion_does():
    tok = build_tokenizer()
    messages = [{"role": "user", "content": "2+3"},
                {"role": "assistant", "content": "5", "reasoning_content": "2+3=5"}]
    text = tok.apply_chat_template(messages, tokenize=False)
    turn = text.split("Assistant: <think>", 1)[1].removesuffix(tok.eos_token + "\n")
    assert turn == render_completion("2+3=5", "5")
    assert split_reasoning(turn) == ("2+3=5", "5")


@pytest.mark.parametrize("task_name, example, answer", [
    ("countdown", {"nums": [1, 2, 3], "target": 9}, "(1 + 2) * 3"),
    ("arithmetic", {"a": 12, "op": "*", "b": 3}, "36"),
    ("gsm8k", {"question": "q", "answer": "#### 18"}, "18"),
    ("math", {"problem": "p", "answer": "\\frac{1}{2}"}, "\\frac{1}{2}"),
])
def test_a_long_reasoning_keeps_its_answer(task_name, example, answer):
    """A 32K-token answer of a reasoning model is ~130K characters; its answer comes last. A bound of 20K characters
    graded these wrong (and gsm8k's last-number rule then read a number from the cut reasoning)."""
    from r1lab.tasks import get_task

    task = get_task(task_name)
    reasoning = "try 7 and 19, no. " * 8_000  # 144,000 characters
    assert task.score(f"{reasoning}</think> <answer>{answer}</answer>", example).correct
    assert task.score(f"{reasoning}</think> <answer>{answer}</answer>", example).format_ok
    assert not task.score(f"{reasoning}</think> <answer>4</answer>", example).correct
