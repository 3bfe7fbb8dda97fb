"""The pure rules of r1lab.evaluation.replies (how a teacher's reply becomes an r1lab completion, what a malformed
reply is, the journal's fingerprint and the request seeds) and r1lab.evaluation.teacher's (the retry schedule, the
URL). tests/test_distill.py runs `r1lab distill` against a scripted server, tests/test_distill_servers.py against
real ones."""
import json

import pytest

from r1lab.evaluation import replies as R
from r1lab.evaluation import teacher as T
from r1lab.tasks import get_task
from r1lab.tasks.format import parse_completion

TASK = get_task("countdown")


# --- pure rules ---------------------------------------------------------------------------------------------------

def test_doctests():
    import doctest

    assert doctest.testmod(R).failed == 0
    assert doctest.testmod(T).failed == 0


@pytest.mark.parametrize("reasoning, content, expected", [
    ("3+4=7", "7", ("3+4=7", "7")),                                                  # DeepSeek, r1lab serve
    ("3+4=7", "\n\n<answer> 7 </answer>\n", ("3+4=7", "7")),                         # vLLM keeps the tags
    ("r", "<answer>1</answer> then <answer>2</answer>", ("r", "2")),                 # the last answer block
    ("r", "so <answer>7", ("r", "so 7")),                                            # no complete block: tags gone
    (None, "<think>3+4=7</think> <answer>7</answer>", ("3+4=7", "7")),               # inline
    (None, "\n<think>\nthinking\n</think>\n\n7", ("\nthinking\n", "7")),
    (None, "3+4=7</think> <answer>7</answer>", ("3+4=7", "7")),                       # the prompt opened <think>
    ("", "<think>cut off while thinking", ("cut off while thinking", "")),
    (None, "7", ("", "7")),                                                          # no reasoning at all
    ("thinking", "", ("thinking", "")),                                              # ran out of tokens
    ("r", "</think> <answer>7</answer>", ("r", "7")),
])
def test_split_reply(reasoning, content, expected):
    assert R.split_reply(reasoning, content) == expected


@pytest.mark.parametrize("content, finish, expected", [
    ("3+4=7, 7-2=5 vs 9 mi", "length", "3+4=7, 7-2=5 vs 9 mi"),          # cut in the <think> the template opened
    ("3+4=7</think> <answer>7</answer>", "length", "3+4=7</think> <answer>7</answer>"),  # closed: as before
    # an answer drafted while thinking, then cut: still thinking (it read as an empty reasoning and a right answer)
    ("so <answer>7</answer> and", "length", "so <answer>7</answer> and"),
    ("7", "stop", "</think> <answer>7</answer>"),                          # finished: a bare answer
])
def test_a_reply_cut_off_without_a_reasoning_parser_is_reasoning(content, finish, expected):
    """vLLM without --reasoning-parser sends the thinking in `content`, unopened (the chat template wrote <think>):
    cut off by max_tokens before </think>, it is reasoning cut off (wrong), not an answer."""
    assert R.rebuild(R.Reply(None, content, finish, {})) == expected
    assert not TASK.score(expected, {"nums": [3, 4, 2], "target": 9}).correct or finish == "stop"


@pytest.mark.parametrize("name", ["countdown", "arithmetic", "logic", "gsm8k"])
def test_short_chat_turns_render_as_the_short_prompt(name):
    """--teacher-template short: an r1lab model behind r1lab serve sees the prompt it was trained on, its chat
    template applied to the task's short turns; r1 keeps R1's system prompt."""
    from transformers import AutoTokenizer

    from r1lab.model.load import ASSETS
    from r1lab.tasks.common import R1_SYSTEM

    tok, task = AutoTokenizer.from_pretrained(ASSETS / "countdown-base"), get_task(name)
    ex = task.generate(1, seed=0)[0] if name != "gsm8k" else {"question": "2+2?", "answer": "#### 4"}
    chat = tok.apply_chat_template(task.messages(ex, template="short"), tokenize=False, add_generation_prompt=True)
    assert chat == task.prompt(ex, template="short")
    assert task.messages(ex)[0] == {"role": "system", "content": R1_SYSTEM} and task.messages(ex) == \
        task.messages(ex, template="r1")
    with pytest.raises(ValueError, match="unknown template"):
        task.messages(ex, template="chatml")


def test_rebuild_is_the_format_the_verifier_reads():
    ex = {"nums": [3, 5, 7], "target": 22}
    done = R.rebuild(R.Reply("5*3=15, 15+7=22", "(5*3)+7", "stop", {}))
    assert done == "5*3=15, 15+7=22</think> <answer>(5*3)+7</answer>"
    assert parse_completion(done).format_ok and TASK.score(done, ex).correct
    cut = R.rebuild(R.Reply("5*3=15, 15+7=22 so (5*3)+7", "", "length", {}))  # no answer: the reasoning alone
    assert cut == "5*3=15, 15+7=22 so (5*3)+7" and not TASK.score(cut, ex).correct


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b'{"n": ' + b"9" * 5000 + b"}", b"\xff\xfe",
    b'{"choices": []}', b'{"choices": [1]}', b'{"choices": [{"text": "x"}]}', b'{"choices": "x"}',
    b'{"choices": [{"message": {"content": 5}}]}', b'{"choices": [{"message": {"content": "a", "reasoning": [1]}}]}',
    b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": -1}}',
    b'{"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens": "7"}}',
    b'{"choices": [{"message": {"content": "a"}}], "usage": {"prompt_tokens": true}}',
    b'{"choices": [{"message": {"content": "a"}}], "usage": {"completion_tokens_details": {"reasoning_tokens": 1.5}}}',
    b'{"error": {"message": "overloaded"}}',
])
def test_a_malformed_reply_is_bad_reply_and_nothing_else(body):
    with pytest.raises(R.BadReply):
        R.parse_reply(body)


def test_parse_reply_reads_every_shape():
    deepseek = {"choices": [{"message": {"content": "7", "reasoning_content": "r"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
                          "completion_tokens_details": {"reasoning_tokens": 3}}}
    assert R.parse_reply(json.dumps(deepseek).encode()) == R.Reply("r", "7", "stop",
                                                                   {"prompt": 9, "completion": 5, "reasoning": 3})
    vllm = {"choices": [{"message": {"content": None, "reasoning": "r"}, "finish_reason": "length"}]}
    assert R.parse_reply(json.dumps(vllm).encode()) == R.Reply("r", "", "length",
                                                               {"prompt": 0, "completion": 0, "reasoning": 0})
    assert "overloaded" in R.error_text(b'{"error": {"message": "overloaded"}}')


def test_backoff_schedule_and_retry_after():
    assert [T.backoff_delay(a, 1.0, jitter=0.5) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert T.backoff_delay(2, 0.01, jitter=0.0) == 0.02 and T.backoff_delay(2, 0.01, jitter=0.999) < 0.06
    assert T.backoff_delay(0, 0.01, retry_after=3.0) == 3.0  # Retry-After is a floor...
    assert T.backoff_delay(0, 0.01, retry_after=1e9) == T.MAX_BACKOFF  # ...up to the cap
    assert T.backoff_delay(10**6, 1.0) == T.MAX_BACKOFF  # no overflow
    assert [T.parse_retry_after(v) for v in ("0", "1.5", "-3", "", None, "nan", "soon")] == [0.0, 1.5, 0.0, None,
                                                                                           None, None, None]


def test_endpoint_fingerprint_and_seeds():
    from r1lab.engine.engine import GOLDEN

    assert T.endpoint("http://127.0.0.1:8000/v1") == T.endpoint("http://127.0.0.1:8000/v1/") == \
        "http://127.0.0.1:8000/v1/chat/completions"
    assert T.endpoint("https://api.deepseek.com") == "https://api.deepseek.com/chat/completions"
    for bad in ("127.0.0.1:8000/v1", "ftp://host/v1", "http:///v1", "http://user:key@host/v1",
                "http://host/v1?api_key=k", "http://host:99999/v1"):
        with pytest.raises(ValueError):
            T.endpoint(bad)
    settings = {"url": "u", "temperature": 0.6, "samples": 2}
    assert R.fingerprint(settings) == R.fingerprint(dict(reversed(settings.items())))
    assert R.fingerprint(settings) != R.fingerprint({**settings, "temperature": 0.7})
    assert R.GOLDEN == GOLDEN and R.request_seed(3, 5) == (3 + 5 * GOLDEN) % 2 ** 63  # the engine's row seeds
    assert R.cost({"prompt": 2_000_000, "completion": 1_000_000, "reasoning": 900_000}, 0.55, 2.19) == 1.1 + 2.19
