"""`r1lab chat` on a tiny checkpoint: stdin that is not a terminal, the thinking dimmed and the answer plain, the same
text as the offline engine, history through the chat template, /reset, /exit and EOF, context trimming."""
import io
import json
import sys

import pytest
from conftest import tiny_checkpoint, tiny_model

from r1lab.cli import main
from r1lab.commands.chat import DIM, RESET, chat_loop
from r1lab.serve.chat import ChatSession
from r1lab.engine import Engine, SamplingParams
from r1lab.model.load import load_model
from r1lab.model.tokenizer import build_tokenizer
from r1lab.engine.forcing import budget_forcer
from r1lab.serve.text import chat_prompt_ids, split_reasoning


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory, "chat")


@pytest.fixture(scope="module")
def engine(ckpt):
    model, tok = load_model(str(ckpt))
    return Engine(model, tok)


def offline_reply(engine, messages, seed, max_new_tokens=24, max_thinking=5, close_ids=None):
    forced = budget_forcer(engine.tokenizer.convert_tokens_to_ids("</think>"), engine.encode("Wait"), max_thinking,
                           close_ids=close_ids)
    params = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed)
    return split_reasoning(engine.generate([chat_prompt_ids(engine.tokenizer, messages)], params, forced)[0].text)


def test_cli_reads_a_pipe_dims_the_thinking_and_matches_the_engine(ckpt, engine, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("2+3\n\n7*8\n/exit\nnever read\n"))
    code = main(["chat", "--model", str(ckpt), "--color", "always", "--max-new-tokens", "24", "--max-thinking-tokens", "5",
                 "--seed", "0", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0 and ">>>" not in out  # no prompt when stdin is not a terminal
    r1, c1 = offline_reply(engine, [{"role": "user", "content": "2+3"}], seed=0)
    history = [{"role": "user", "content": "2+3"}, {"role": "assistant", "content": c1, "reasoning_content": r1},
               {"role": "user", "content": "7*8"}]
    r2, c2 = offline_reply(engine, history, seed=1)  # reply t uses seed + t; the second prompt holds the first turn
    assert r1 and c1 and r1 != r2
    assert out == f"{DIM}{r1}{RESET}\n{c1}\n{DIM}{r2}{RESET}\n{c2}\n"


def test_thinking_end_is_what_the_budget_forces(ckpt, engine, monkeypatch, capsys):
    end = "\ngive up\n</think>"
    monkeypatch.setattr(sys, "stdin", io.StringIO("2+3\n"))
    code = main(["chat", "--model", str(ckpt), "--color", "never", "--max-new-tokens", "24", "--max-thinking-tokens",
                 "5", "--thinking-end", end, "--seed", "0", "--threads", "1"])
    r, c = offline_reply(engine, [{"role": "user", "content": "2+3"}], seed=0, close_ids=engine.encode(end))
    plain, _ = offline_reply(engine, [{"role": "user", "content": "2+3"}], seed=0)
    assert code == 0 and capsys.readouterr().out == f"<think>{r}</think>\n{c}\n"
    assert r == plain + "\ngive up\n"  # the same thinking, then the closing words where </think> was forced
    for bad in (["--thinking-end", end], ["--max-thinking-tokens", "5", "--thinking-end", "give up"]):
        assert main(["chat", "--model", str(ckpt), *bad]) == 2
        assert "--thinking-end" in capsys.readouterr().err


def test_plain_output_eof_and_reset(engine):
    session = ChatSession(engine, SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=24), max_thinking=5,
                          seed=0)
    out = io.StringIO()
    assert chat_loop(session, io.StringIO("2+3\n/reset\n2+3"), out, color=False) == 0  # EOF without a newline
    r, c = offline_reply(engine, [{"role": "user", "content": "2+3"}], seed=0)
    first = f"<think>{r}</think>\n{c}\n"
    assert out.getvalue().startswith(first) and DIM not in out.getvalue()
    assert len(session.history) == 2 and session.turns == 2  # /reset forgot the first turn


def test_old_turns_are_dropped_to_fit_the_context():
    tok = build_tokenizer()
    engine = Engine(tiny_model(tok, max_positions=160), tok)
    session = ChatSession(engine, SamplingParams(temperature=0, max_new_tokens=40))
    session.history = [m for i in range(4) for m in ({"role": "user", "content": f"question {i}"},
                                                     {"role": "assistant", "content": "x" * 20,
                                                      "reasoning_content": "y" * 10})]
    ids, room = session.prompt_ids("last question")
    text = tok.decode(ids)
    assert len(ids) + room <= 160 and room == 40
    assert "question 0" not in text and "question 3" in text and text.endswith("last question\nAssistant: <think>")
    with pytest.raises(ValueError):
        session.reply("z" * 200, lambda r, c: None)  # the message alone does not fit


def test_a_long_reply_budget_keeps_the_turns_that_leave_it_half_the_context():
    """max_new_tokens of the whole context used to drop every turn, though the reply got the same room with them."""
    tok = build_tokenizer()
    engine = Engine(tiny_model(tok, max_positions=160), tok)
    session = ChatSession(engine, SamplingParams(temperature=0, max_new_tokens=160))
    session.history = [{"role": "user", "content": "question 0"}, {"role": "assistant", "content": "x"}]
    ids, room = session.prompt_ids("last question")
    assert "question 0" in tok.decode(ids) and room == 160 - len(ids) and len(ids) <= 80
    session.history = session.history * 4  # past half the context: the oldest turns go
    ids, room = session.prompt_ids("last question")
    assert len(ids) <= 80 and room == 160 - len(ids) and tok.decode(ids).count("question 0") < 4


@pytest.mark.parametrize("flag", ["--max-thinking-tokens", "--num-ignore"])
def test_negative_counts_are_refused(flag, capsys):
    assert main(["chat", "--model", "countdown-base", flag, "-1"]) == 2
    assert f"{flag} must be at least 0, got -1" in capsys.readouterr().err


def test_a_reply_the_engine_failed_is_reported_and_not_kept(engine, monkeypatch):
    """The engine ends a row whose forced-token hook raises with finish_reason "error"; the chat says so in one
    bracketed line and the conversation stays as it was."""
    import r1lab.serve.chat as chat_module

    def broken(*args, **kwargs):
        def hook(ids):
            raise KeyError("hook broke")
        return hook

    monkeypatch.setattr(chat_module, "budget_forcer", broken)
    session = ChatSession(engine, SamplingParams(temperature=0, max_new_tokens=8), max_thinking=4)
    out = io.StringIO()
    assert chat_loop(session, io.StringIO("2+3\n"), out, color=False) == 0
    assert "[generation failed:" in out.getvalue() and "hook broke" in out.getvalue()
    assert session.history == [] and session.turns == 0


def test_a_thinking_budget_where_think_end_is_several_tokens():
    """Qwen2.5's and Llama 3's tokenizers spell </think> in several tokens: convert_tokens_to_ids gave their unk (or
    None), so a budget forced <unk> (Qwen: its EOS) or failed every turn. The engine's own budget matches the
    marker's tokens; "Wait" (num_ignore) needs one </think> token and says so."""
    from conftest import CHAT, bos_tokenizer

    tok = bos_tokenizer(CHAT.replace("<|assistant|>\n{% endif %}", "<|assistant|>\n<think>{% endif %}"), tags=False)
    assert len(tok("</think>", add_special_tokens=False)["input_ids"]) == 8
    engine = Engine(tiny_model(tok), tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=40)
    session = ChatSession(engine, params, max_thinking=4, seed=0)
    reasoning, content = session.reply("2+3", lambda r, c: None)
    ids = chat_prompt_ids(tok, [{"role": "user", "content": "2+3"}])
    offline = engine.generate([ids], SamplingParams(temperature=1.0, max_new_tokens=40, max_thinking_tokens=4,
                                                    seed=0))[0].text
    assert "</think>" in offline and len(offline.split("</think>")[0]) <= 4
    assert (reasoning, content) == split_reasoning(offline)
    with pytest.raises(ValueError, match="needs </think> to be one token"):
        ChatSession(engine, params, max_thinking=4, num_ignore=1)


def test_a_model_without_a_chat_template_is_refused_at_once(tmp_path, ckpt, capsys):
    # before: the transformers error on every turn, and exit 0
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(ckpt, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert main(["chat", "--model", str(plain), "--threads", "1"]) == 2
    assert "this model has no chat template, which a chat needs" in capsys.readouterr().err

