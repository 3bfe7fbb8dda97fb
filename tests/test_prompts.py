"""Prompt templates: r1lab's plain ones, and the model's own chat template ("chat", "chat-r1") through every path that
encodes a prompt (the engine, the vLLM backend's request, SFT records, the server's /v1/completions), with one BOS.

The chat-template model here is a tiny Llama-3-like one built locally: a character tokenizer whose encoding adds a
BOS, and a chat template that writes `{{ bos_token }}` itself, as Llama-3's and DeepSeek-R1-Distill's do."""
import json

import pytest
import torch
from conftest import BOS, bos_tokenizer

from r1lab.cli import main as cli_main
from r1lab.config import ConfigError
from r1lab.engine import Engine, SamplingParams
from r1lab.prompts import CHAT_TEMPLATES, PROMPT_TEMPLATES, check_template, encode, render
from r1lab.tasks import get_task
from r1lab.tasks.format import R1_SYSTEM

@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A saved checkpoint: tiny-1m on bos_tokenizer()."""
    from r1lab.checkpoint import save_model_dir
    from r1lab.model.presets import build_model

    tok = bos_tokenizer()
    path = tmp_path_factory.mktemp("llama") / "model"
    save_model_dir(path, build_model("tiny-1m", tok, max_positions=512), tok)
    return path


def example(task="arithmetic"):
    return get_task(task).generate(1, seed=0)[0]


def test_r1labs_own_chat_template_renders_the_short_prompt_and_r1_turns():
    from r1lab.model.tokenizer import build_tokenizer

    tok, countdown, ex = build_tokenizer(), get_task("countdown"), example("countdown")
    assert render(countdown, ex, "chat", tok) == render(countdown, ex, "short") == countdown.prompt(ex, "short")
    assert render(countdown, ex, "chat-r1", tok) == (f"{R1_SYSTEM}\nUser: {countdown.messages(ex, 'r1')[1]['content']}"
                                                     f"\nAssistant: <think>")
    assert PROMPT_TEMPLATES == ("r1", "short", "chat", "chat-r1") and set(CHAT_TEMPLATES.values()) == {"r1", "short"}


def test_a_chat_prompt_is_encoded_with_one_bos_and_a_plain_one_gets_the_tokenizers():
    tok, task, ex = bos_tokenizer(), get_task("arithmetic"), example()
    chat = render(task, ex, "chat", tok)
    assert chat == f"{BOS}<|user|>\n{task.question(ex, short=True)}\n<|assistant|>\n"
    ids = encode(tok, chat)
    assert ids[0] == 3 and ids.count(3) == 1  # the template's BOS, and no second one
    assert ids == tok.apply_chat_template(task.messages(ex, "short"), add_generation_prompt=True, tokenize=True,
                                          return_dict=False)  # what transformers' own tokenize=True gives
    plain = render(task, ex, "short")
    assert encode(tok, plain) == tok(plain)["input_ids"] and encode(tok, plain)[0] == 3  # a base model's BOS
    r1 = render(task, ex, "chat-r1", tok)
    assert r1.startswith(f"{BOS}<|system|>\n{R1_SYSTEM}\n<|user|>\n") and "<answer>" in r1  # the format instructions


def test_bad_templates_are_clear_errors():
    tok, task, ex = bos_tokenizer(chat_template=None), get_task("arithmetic"), example()
    with pytest.raises(ConfigError, match="unknown template 'chatml'; valid: r1, short, chat, chat-r1"):
        check_template("chatml")
    with pytest.raises(ConfigError, match="'chat' renders the model's chat template, and its tokenizer has none"):
        render(task, ex, "chat", tok)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        render(task, ex, "chat-r1")
    check_template("short", tok)  # a base model takes the plain templates


def test_the_engine_feeds_the_chat_prompt_with_one_bos(llama_dir):
    """The engine's prompt ids for a chat prompt and a plain one (the vLLM backend's: tests/test_vllm_rollouts.py)."""
    from r1lab.model.load import load_checkpoint

    model, tok, _ = load_checkpoint(str(llama_dir), device=torch.device("cpu"))
    task, ex = get_task("arithmetic"), example()
    prompts = [render(task, ex, "chat", tok), render(task, ex, "short")]
    got = [c.prompt_ids for c in Engine(model, tok).generate(prompts, SamplingParams(temperature=0.0,
                                                                                      max_new_tokens=2))]
    assert got == [encode(tok, p) for p in prompts] and [ids.count(3) for ids in got] == [1, 1]


def test_an_sft_record_with_a_chat_prompt_keeps_one_bos():
    """`r1lab sample --template chat` writes the rendered prompt; SFT must feed it as the engine did."""
    from r1lab.sft.data import tokenize_record

    tok, task, ex = bos_tokenizer(), get_task("arithmetic"), example()
    prompt = render(task, ex, "chat", tok)
    ids, labelled = tokenize_record({"prompt": prompt, "completion": "1</think> <answer>1</answer>"}, tok)
    assert ids[:len(encode(tok, prompt))] == encode(tok, prompt) and ids.count(3) == 1
    assert sum(labelled) == len(ids) - len(encode(tok, prompt))


def test_eval_sample_and_rl_run_on_the_models_chat_template(llama_dir, tmp_path, capsys):
    """Through the CLI: eval's completions, sample's records and RL's samples.jsonl hold prompts rendered by the
    model's own template; a base model (no chat template) is refused before any work."""
    common = ["--model", str(llama_dir), "--task", "arithmetic", "--n", "3", "--samples", "2", "--max-new-tokens", "4",
              "--threads", "1"]
    done = tmp_path / "eval.jsonl"
    assert cli_main(["eval", *common, "--template", "chat-r1", "--no-greedy", "--completions-out", str(done)]) == 0
    rows = [json.loads(line) for line in done.read_text().splitlines()]
    assert len(rows) == 6 and all(r["prompt"].startswith(f"{BOS}<|system|>\n{R1_SYSTEM}") for r in rows)
    traces = tmp_path / "traces.jsonl"
    assert cli_main(["sample", *common, "--template", "chat", "--keep", "all", "--out", str(traces)]) == 0
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    assert records and all(r["prompt"].startswith(f"{BOS}<|user|>\n") for r in records)
    run = tmp_path / "rl"
    assert cli_main(["rl", "--recipe", "countdown_rl_quick", "--set", f"model={llama_dir}", "--set", "task=arithmetic",
                     "--set", "task_args=", "--set", "template=chat", "--set", "steps=1", "--set", "eval_instances=0",
                     "--set", "max_new_tokens=4", "--set", "sample_every=1", "--set", "threads=1",
                     "--out", str(run)]) == 0
    sampled = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sampled and all(r["prompt"].startswith(f"{BOS}<|user|>\n") for r in sampled)
    capsys.readouterr()
    assert cli_main(["eval", *common, "--model", "countdown-base", "--template", "chat", "--out",
                     str(tmp_path / "e.json")]) == 0  # r1lab's tokenizer has one
    base = tmp_path / "base"
    save_plain(llama_dir, base)
    assert cli_main(["eval", *common, "--model", str(base), "--template", "chat"]) == 2
    assert "its tokenizer has none (a base model): use r1 or short" in capsys.readouterr().err
    assert cli_main(["rl", "--recipe", "countdown_rl_quick", "--set", f"model={base}", "--set", "template=chat-r1",
                     "--out", str(tmp_path / "rl2")]) == 2
    assert "template = 'chat-r1' renders the model's chat template" in capsys.readouterr().err


def save_plain(src, dst):
    """A copy of the checkpoint whose tokenizer has no chat template (a base model)."""
    import shutil

    shutil.copytree(src, dst)
    for name in ("chat_template.jinja", "chat_template.json"):
        (dst / name).unlink(missing_ok=True)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))


def test_cost_counts_a_chat_prompt_with_the_models_tokenizer(llama_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{llama_dir}"\ntask = "arithmetic"\ntemplate = "chat-r1"\nseed = 3\n')
    assert cli_main(["cost", "--recipe", str(recipe), "--json"]) == 0
    tok, task = AutoTokenizer.from_pretrained(llama_dir), get_task("arithmetic")
    ex = task.generate(1, seed=3, split="train")[0]
    assert json.loads(capsys.readouterr().out)["prompt_tokens"] == len(encode(tok, render(task, ex, "chat-r1", tok)))
    recipe.write_text('model = "Qwen/Qwen2.5-0.5B"\ntask = "arithmetic"\ntemplate = "chat-r1"\n')  # no tokenizer here
    assert cli_main(["cost", "--recipe", str(recipe)]) == 0
    assert "one arithmetic prompt (the chat template estimated as the r1 prompt)" in capsys.readouterr().out


def test_distill_from_an_api_refuses_a_chat_template_for_the_student(tmp_path, capsys):
    assert cli_main(["distill", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t", "--task",
                     "arithmetic", "--samples", "2", "--template", "chat", "--out", str(tmp_path / "t.jsonl")]) == 2
    assert "--template chat: a chat template renders the student's prompts with the student's tokenizer" in \
        capsys.readouterr().err
    assert not (tmp_path / "t.jsonl.journal").exists()


def test_pretraining_writes_plain_text_only(tmp_path, capsys):
    assert cli_main(["pretrain", "--recipe", "countdown_base_short", "--set", "template=chat", "--out",
                     str(tmp_path / "p")]) == 2
    assert "template = 'chat': must be one of r1, short" in capsys.readouterr().err and not (tmp_path / "p").exists()
