"""SFT: the loss falls only on completion tokens, packing changes nothing, a tiny run learns and resumes exactly after
kill -9, bad records name FILE:LINE and write nothing, chat records learn assistant turns only."""
import json
import random
import subprocess
import sys

import pytest
import torch
from conftest import gloo_env, kill_after_first_checkpoint
from tolerances import float64_rtol, logprob_atol, rounding_atol

from r1lab.cli import main as cli_main
from r1lab.config import load_config
from r1lab.sft.data import IGNORE, block_causal_mask, collate, pack, shift, tokenize_record
from r1lab.pretrain.train import cosine_lr as lr_at
from r1lab.sft.train import SFTConfig
from r1lab.sft.train import main as sft_main

KNOBS = {"max_number": 12, "max_target": 30}


def traces(n, seed=0, task_name="countdown"):
    """n prompt/completion records from the pretraining corpus (countdown: short ones, few attempts)."""
    from r1lab.pretrain.corpus import CorpusConfig, corpus_document
    from r1lab.tasks import get_task

    task, rng = get_task(task_name), random.Random(seed)
    cfg = CorpusConfig(max_attempts=3)
    out = []
    for ex in task.generate(4 * n, seed, "train", **(KNOBS if task_name == "countdown" else {})):
        doc = corpus_document(task, ex, rng, cfg, "short")
        if doc is not None:
            out.append({"prompt": doc[0], "completion": doc[1]})
    return out[:n]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def base():
    from r1lab.model.load import load_model, resolve_checkpoint

    torch.manual_seed(0)
    return load_model(resolve_checkpoint("countdown-base"))


def test_lr_schedule():
    rel = float64_rtol(8)
    assert lr_at(0, 110, 1.0, 10, 0.1) == pytest.approx(0.1, rel=rel, abs=0)
    assert lr_at(60, 110, 1.0, 10, 0.1) == pytest.approx(0.55, rel=rel, abs=0)
    assert lr_at(110, 110, 1.0, 10, 0.1) == pytest.approx(0.1, rel=rel, abs=0)


def test_prompt_tokens_get_zero_gradient(base):
    model, tok = base
    rec = traces(1)[0]
    x, y = shift(*tokenize_record(rec, tok), 512)
    assert tok.decode([t for t in y if t != IGNORE]) == rec["completion"] + tok.eos_token  # completion + EOS only
    batch = collate([[0]], [(x, y)], len(x), tok.pad_token_id)
    logits = model(input_ids=batch["input_ids"]).logits
    logits.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), batch["labels"].view(-1),
                                             ignore_index=IGNORE, reduction="sum")
    loss.backward()
    g = logits.grad[0].abs().sum(-1)  # (T,) the loss's gradient reaching each position's logits
    prompt = batch["labels"][0] == IGNORE
    assert prompt.sum() > 10 and (g[prompt] == 0).all()  # exactly zero: prompt tokens contribute nothing
    assert (g[~prompt] > 0).all()
    model.zero_grad(set_to_none=True)


def grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def token_losses(logits, labels):
    """(n,) the -logp of every labelled target, in row order."""
    keep = labels != IGNORE
    return torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="none")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked(base, attn):
    model, tok = base
    model.config._attn_implementation = attn
    c = model.config
    try:
        examples = [shift(*tokenize_record(r, tok), 512) for r in traces(6, seed=1)]
        seq_len = 2 * max(len(x) for x, _ in examples)
        packs = pack([len(x) for x, _ in examples], seq_len, 0)
        assert len(packs) < len(examples)  # some records really share a row
        b = collate(packs, examples, seq_len, tok.pad_token_id)
        model.zero_grad(set_to_none=True)
        mask = block_causal_mask(b["segment"], attn)
        out = model(input_ids=b["input_ids"], attention_mask=mask, position_ids=b["position_ids"]).logits
        packed = token_losses(out, b["labels"])
        packed.sum().backward()
        g_packed = grads(model)
        model.zero_grad(set_to_none=True)
        alone, max_logit = [], out.abs().max().item()
        for i in [i for group in packs for i in group]:  # each record by itself, in packed order: no mask
            x, y = examples[i]
            logits = model(input_ids=torch.tensor([x])).logits[0]
            max_logit = max(max_logit, logits.abs().max().item())
            alone.append(token_losses(logits, torch.tensor(y)))
        alone = torch.cat(alone)
        alone.sum().backward()
        g_alone = grads(model)
        model.zero_grad(set_to_none=True)
        n = len(alone)
        atol = logprob_atol(c, max_logit, context=seq_len)  # each token's -logp
        assert packed.shape == alone.shape and (packed - alone).abs().max().item() <= atol
        # A gradient entry: a sum over the n tokens' contributions, through 2 * layers + 1 reductions.
        g_atol = rounding_atol(g_alone.abs().max().item(), n * max(c.hidden_size, c.intermediate_size),
                               2 * c.num_hidden_layers + 1)
        assert (g_packed - g_alone).abs().max().item() <= g_atol
        # Control: the same rows with a plain causal mask (attention across records) miss the bound by far.
        with torch.no_grad():
            leaked = token_losses(model(input_ids=b["input_ids"]).logits, b["labels"])
        assert (leaked - alone).abs().max().item() > 100 * atol
    finally:
        model.config._attn_implementation = "sdpa"


def test_block_mask_is_block_diagonal_and_causal():
    seg = torch.tensor([[0, 0, 1, 1, -1]])
    m = block_causal_mask(seg, "sdpa")[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    add = block_causal_mask(seg, "eager")[0, 0]
    assert ((add == 0).int().tolist() == m) and add.min() == torch.finfo(torch.float32).min


def test_chat_records_learn_assistant_turns_only():
    from r1lab.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": "five"}, {"role": "user", "content": "And 4+4?"},
            {"role": "assistant", "content": "eight"}]
    ids, flags = tokenize_record({"messages": msgs}, tok)
    learnt = tok.decode([t for t, f in zip(ids, flags) if f])
    assert learnt == f"five{tok.eos_token}\neight{tok.eos_token}\n"
    unlearnt = tok.decode([t for t, f in zip(ids, flags) if not f])
    assert "What is 2+3?" in unlearnt and "Be brief." in unlearnt and "five" not in unlearnt


BAD = [
    ('{"prompt": "a", "completion": "b"', "invalid JSON"),
    ('{"prompt": "a"}', "needs 'prompt' and 'completion'"),
    ('{"prompt": 3, "completion": "b"}', "'prompt' must be a string"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "unknown role"),
    ('[1, 2]', "expected a JSON object"),
]


@pytest.mark.parametrize("line,problem", BAD)
def test_bad_record_names_file_line_and_writes_nothing(tmp_path, capsys, line, problem):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "x", "completion": "y"}\n\n' + line + "\n")
    out = tmp_path / "run"
    assert cli_main(["sft", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:3: " in err and problem in err
    assert not out.exists()


def test_bad_settings_exit_2(tmp_path, capsys):
    data = write(tmp_path / "d.jsonl", traces(2))
    assert cli_main(["sft", "--data", str(data), "--set", "lr=-1"]) == 2
    assert "lr = -1.0: must be > 0" in capsys.readouterr().err
    assert cli_main(["sft", "--set", "learning_rate=1"]) == 2
    assert "valid keys for SFTConfig" in capsys.readouterr().err
    assert cli_main(["sft", "--recipe", "sft_countdown"]) == 2  # a recipe without data
    assert "no data file" in capsys.readouterr().err


TINY = ["seq_len=512", "device_batch_size=2", "grad_accum=2", "lr=1e-3", "warmup_steps=2", "threads=1",
        "eval_instances=2", "eval_max_new_tokens=16", "task_args=max_number=12,max_target=30"]


def losses(run_dir):
    # subtle: compared exactly; a resumed run repeats the same float32 operations with threads=1.
    rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


def test_sft_learns_and_resumes_exactly_after_kill(tmp_path):
    # Arithmetic traces (column sums, partial products): a notation the countdown base has never seen, so there is
    # something to learn; its held-out evaluation stays countdown (eval/pass1 checks the path, not the skill).
    data = write(tmp_path / "traces.jsonl", traces(48, seed=2, task_name="arithmetic"))
    straight = tmp_path / "straight"
    cfg = load_config(SFTConfig, None, TINY + ["steps=8", f"data={data}", f"out_dir={straight}"])
    sft_main(cfg)
    ref = losses(straight)
    assert len(ref) == 8 and ref[-1][1] < 0.8 * ref[0][1]  # the loss falls
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert "eval/pass1" in rows[-1] and 0 <= rows[-1]["eval/pass1"] <= 1
    assert (straight / "checkpoints" / "step_000008" / "model.safetensors").exists()
    account = json.loads((straight / "account.json").read_text())
    assert account["flops"] > 0 and account["flops_by_kind"]["train"] > 0

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "r1lab.cli", "sft", "--data", str(data)] + sum((["--set", s] for s in TINY), []) + [
        "--set", "steps=8", "--set", "save_every=4", "--set", "keep_last=1", "--out", str(killed)]
    kill_after_first_checkpoint(args, killed, timeout_s=120)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert losses(killed) == ref


@pytest.mark.slow
def test_two_process_data_parallel_matches_one_process(tmp_path):
    """torchrun --nproc_per_node 2 (gloo) with B=2 x accum 1 per rank trains on the same sequences as one process
    with B=2 x accum 2, and the update is the same: the loss divides by the global token count."""
    data = write(tmp_path / "traces.jsonl", traces(32, seed=3, task_name="arithmetic"))
    common = ["--data", str(data), "--set", "seq_len=256", "--set", "device_batch_size=2", "--set", "steps=3",
              "--set", "eval_instances=0", "--set", "dtype=fp32", "--set", "threads=1", "--set", "lr=1e-3"]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "r1lab.cli", "sft", *common, "--set", "grad_accum=2", "--out", str(one)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                    "-m", "r1lab.cli", "sft", *common, "--set", "grad_accum=1", "--out", str(two)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, env=gloo_env())
    a, b = losses(one), losses(two)
    from r1lab.model.load import load_model, resolve_checkpoint

    config = load_model(resolve_checkpoint("countdown-base"))[0].config
    # Per-token -logp agree within logprob_atol (logits of this base stay below 30); a mean of them does too.
    # Later steps compound the first update's rounding, so only the first loss is held to the bound.
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == [1, 2, 3]
    assert abs(a[0][1] - b[0][1]) <= logprob_atol(config, 30.0, context=256)
    assert all(abs(x[1] - y[1]) < 1e-3 for x, y in zip(a, b))
    acc_one, acc_two = (json.loads((d / "account.json").read_text()) for d in (one, two))
    assert acc_two["flops"] == acc_one["flops"] and (acc_one["devices"], acc_two["devices"]) == (1, 2)


def test_records_longer_than_seq_len_are_counted_in_a_warning(tmp_path, capsys):
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.sft.train import prepare_examples

    data = tmp_path / "d.jsonl"
    write(data, [{"prompt": "User: 1+1\nAssistant: <think>", "completion": "2</think> <answer>2</answer>"},
                 {"prompt": "User: 1+1\nAssistant: <think>", "completion": "1+1=2 " * 20 + "</think> <answer>2</answer>"}])
    examples = prepare_examples(SFTConfig(data=str(data), seq_len=48), build_tokenizer())
    assert [len(x) for x, _ in examples][1] == 48
    assert "1 of 2 records are longer than seq_len = 48" in capsys.readouterr().err


def test_input_errors_found_after_the_model_loads_exit_2_without_a_traceback(tmp_path, capsys):
    """A chat template that does not render turns as prefixes of the conversation, and a seq_len beyond the model's
    positions, are found only once the model loads: still one line on stderr, exit 2, and no run folder."""
    import shutil
    from r1lab.model.load import resolve_checkpoint

    model = tmp_path / "model"
    shutil.copytree(resolve_checkpoint("countdown-base"), model)
    # the number of turns up front: every longer conversation renders a different first line
    (model / "chat_template.jinja").write_text("{{ messages|length }}\n{% for m in messages %}{{ m['content'] }}\n"
                                               "{% endfor %}{% if add_generation_prompt %}A: {% endif %}")
    data = write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "1+1"},
                                                         {"role": "assistant", "content": "2"}]}])
    out = tmp_path / "run"
    assert cli_main(["sft", "--data", str(data), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:1: the chat template does not render turn 1 as a prefix" in err and "Traceback" not in err
    assert not out.exists()
    plain = write(tmp_path / "plain.jsonl", traces(2))
    assert cli_main(["sft", "--data", str(plain), "--set", "seq_len=5000", "--out", str(out)]) == 2
    assert "the model has only 1024 positions" in capsys.readouterr().err
    assert not out.exists()


def test_a_plain_record_encodes_its_prompt_as_the_engine_does():
    """A tokenizer that adds a BOS (Llama, R1-Distill): SFT tokenized plain prompts without it while eval, sampling
    and RL encode them with it, so a cold start trained on prompts the model never saw again."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{ch: i + 3 for i, ch in enumerate("abc: ")}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    ids, labelled = tokenize_record({"prompt": "ab: ", "completion": "c"}, tok)
    assert ids[:5] == tok("ab: ")["input_ids"] == [0, 3, 4, 6, 7]  # what Engine.encode feeds the model
    assert ids == [0, 3, 4, 6, 7, 5, 1] and labelled == [0] * 5 + [1, 1]  # one BOS; the completion and EOS learnt


def test_a_record_holding_both_forms_is_refused_and_a_completions_own_eos_is_not_doubled():
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.sft.data import record_problem

    both = {"prompt": "p", "completion": "c", "messages": [{"role": "assistant", "content": "x"}]}
    assert "both 'messages' and 'prompt'/'completion'" in record_problem(both)
    tok = build_tokenizer()
    plain, labelled = tokenize_record({"prompt": "1+1", "completion": "2</think>"}, tok)
    own, _ = tokenize_record({"prompt": "1+1", "completion": "2</think>" + tok.eos_token}, tok)
    assert own == plain and plain[-2:] == [tok.convert_tokens_to_ids("</think>"), tok.eos_token_id]


def test_packing_is_first_fit_exactly():
    """The tree search puts each record where a scan of the open sequences would; the scan grew quadratically
    (3.65 s at 40K records, against 0.33 s: dev/LOG.md, session 22)."""
    def first_fit(lengths, seq_len, seed):
        order = list(range(len(lengths)))
        random.Random(f"{seed}/pack").shuffle(order)
        packs, room = [], []
        for i in order:
            j = next((j for j, r in enumerate(room) if lengths[i] <= r), len(packs))
            if j == len(packs):
                packs.append([])
                room.append(seq_len)
            packs[j].append(i)
            room[j] -= lengths[i]
        return packs

    rng = random.Random(0)
    for trial in range(500):
        seq_len = rng.randint(1, 40)
        lengths = [rng.randint(1, seq_len) for _ in range(rng.randint(0, 50))]
        assert pack(lengths, seq_len, trial) == first_fit(lengths, seq_len, trial)
    with pytest.raises(ValueError, match="a record of 6 tokens is longer than seq_len = 5"):
        pack([3, 6], 5, 0)


def test_a_warm_up_that_covers_the_whole_run_is_said(tmp_path, capsys):
    """A cold start of a few hundred traces is 3-6 steps: sft_countdown's 10 warm-up steps kept the learning rate
    below lr for the whole run, silently (the R1 recipes now set warmup_steps=1 for it)."""
    data = write(tmp_path / "traces.jsonl", traces(4))
    common = ["--data", str(data), "--set", "seq_len=512", "--set", "eval_instances=0", "--set", "threads=1",
              "--set", "steps=2", "--set", "lr=1e-4"]
    assert cli_main(["sft", *common, "--set", "warmup_steps=10", "--out", str(tmp_path / "a")]) == 0
    assert "warmup_steps = 10 covers all 2 steps: the learning rate peaks at 2e-05, not lr = 0.0001" in \
        capsys.readouterr().err
    assert cli_main(["sft", *common, "--set", "warmup_steps=1", "--out", str(tmp_path / "b")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_resume_keeps_the_steps_global_batch_on_any_split_and_refuses_another(tmp_path):
    """The checkpoint keeps the step's global sequence count (B x grad_accum x world); a resume may split it otherwise
    (2 x 2 -> 4 x 1: the same sequences, the same update to rounding), and any other count (one rank resuming two
    ranks' run with their per-rank settings; another B here) is refused before any work, naming settings that keep
    it. A checkpoint without the count (written before it was kept) keeps the old rule: B and grad_accum fixed."""
    from r1lab.config import ConfigError

    data = write(tmp_path / "traces.jsonl", traces(16, seed=2, task_name="arithmetic"))
    common = ["seq_len=128", "steps=2", "save_every=1", "keep_last=2", "lr=1e-3", "warmup_steps=0",
              "eval_instances=0", "threads=1", "dtype=fp32", "task=arithmetic", "task_args=", f"data={data}"]
    straight = tmp_path / "straight"
    sft_main(load_config(SFTConfig, None, common + ["device_batch_size=2", "grad_accum=2", f"out_dir={straight}"]))
    state_1 = straight / "checkpoints" / "step_000001" / "trainer_state.pt"
    assert torch.load(state_1, weights_only=False)["per_step"] == 4

    def cut(name, per_step="keep"):
        import shutil

        d = tmp_path / name
        shutil.copytree(straight, d)
        shutil.rmtree(d / "checkpoints" / "step_000002")
        (d / "checkpoints" / "latest").write_text("step_000001")
        (d / "metrics.jsonl").write_text((straight / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
        state = torch.load(d / "checkpoints" / "step_000001" / "trainer_state.pt", weights_only=False)
        if per_step is None:
            del state["per_step"]
        elif per_step != "keep":
            state["per_step"] = per_step
        torch.save(state, d / "checkpoints" / "step_000001" / "trainer_state.pt")
        return d

    def resume(d, b, a):
        return sft_main(load_config(SFTConfig, None, common + [f"device_batch_size={b}", f"grad_accum={a}",
                                                               f"out_dir={d}"]))

    split = cut("split")
    resume(split, 4, 1)
    want, got = ([json.loads(x) for x in open(d / "metrics.jsonl")] for d in (straight, split))
    assert [r["step"] for r in got] == [1, 2] and got[0] == want[0]
    for key in ("tokens", "labelled_tokens", "record_tokens"):  # the same sequences
        assert got[1][key] == want[1][key], key
    assert abs(got[1]["loss"] - want[1]["loss"]) <= rounding_atol(want[1]["loss"], 4 * 128, 2 * 6 + 1)

    refused = cut("half")
    with pytest.raises(ConfigError, match=r"trained on 4 sequences a step, and device_batch_size = 2 x grad_accum = 1 "
                                          r"x 1 rank\(s\) = 2 .*--set device_batch_size=2 --set grad_accum=2 or "
                                          r"--set device_batch_size=4 --set grad_accum=1"):
        resume(refused, 2, 1)
    two_ranks = cut("two_ranks", per_step=8)  # as if written by 2 ranks of 2 x 2
    with pytest.raises(ConfigError, match=r"trained on 8 sequences a step.*--set device_batch_size=2 --set "
                                          r"grad_accum=4 or --set device_batch_size=4 --set grad_accum=2"):
        resume(two_ranks, 2, 2)
    for d in (refused, two_ranks):  # nothing was written
        assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["latest", "step_000001"]
        assert len((d / "metrics.jsonl").read_text().splitlines()) == 1
    old = cut("old", per_step=None)
    with pytest.raises(ConfigError, match=r"other settings \(device_batch_size 2 -> 4, grad_accum 2 -> 1\)"):
        resume(old, 4, 1)


def test_batch_splits():
    from r1lab.sft.train import batch_splits

    assert batch_splits(4, 2, 1) == [(2, 2), (4, 1)]
    assert batch_splits(3, 2, 2) == [(3, 1)]
    assert batch_splits(8, 4, 2) == [(4, 2), (8, 1)]  # B and grad_accum both kept: one way
    assert batch_splits(6, 4, 3) == [(2, 3), (6, 1)]


def test_a_failing_final_evaluation_keeps_the_trained_weights(tmp_path_factory, tmp_path, monkeypatch):
    """The last checkpoint is written before the final evaluation: one that breaks loses no training."""
    from conftest import tiny_checkpoint

    import r1lab.sft.train as sft_train

    def broken(run):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(sft_train, "evaluate", broken)
    model = tiny_checkpoint(tmp_path_factory, "tiny")
    data = write(tmp_path / "d.jsonl", traces(4))
    cfg = load_config(SFTConfig, None, ["seq_len=256", "steps=2", "threads=1", "eval_instances=2",
                                        "eval_max_new_tokens=8", f"model={model}", f"data={data}",
                                        f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(RuntimeError, match="evaluation broke"):
        sft_main(cfg)
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "model.safetensors").exists()


def test_records_cut_to_no_completion_token_are_counted_and_all_of_them_refused(tmp_path, capsys):
    """A record whose prompt fills seq_len keeps no labelled token; when none keeps one, the run would 'train' on a
    loss of 0.0 and say done: refused before any work, with the seq_len that keeps one."""
    from r1lab.model.tokenizer import build_tokenizer
    from r1lab.sft.train import prepare_examples

    short = {"prompt": "User: 1+1\nAssistant: <think>", "completion": "2</think> <answer>2</answer>"}
    long = {"prompt": "User: " + "1+" * 30 + "1\nAssistant: <think>", "completion": "31</think> <answer>31</answer>"}
    data = write(tmp_path / "d.jsonl", [short, long])
    prepare_examples(SFTConfig(data=str(data), seq_len=48), build_tokenizer())
    assert ("1 of 2 records are longer than seq_len = 48 tokens; their tails are cut and not learnt, 1 of them with "
            "no completion token left at all" in capsys.readouterr().err)
    out = tmp_path / "run"
    assert cli_main(["sft", "--data", str(data), "--out", str(out), "--set", "seq_len=16"]) == 2
    err = capsys.readouterr().err
    assert "seq_len = 16: no record keeps a completion token to learn" in err and "Traceback" not in err
    assert "raise seq_len to at least 22" in err  # short's prompt is 22 tokens: y[21] is its first target
    assert not out.exists()


def test_chat_data_without_a_task_skips_the_default_evaluation(tmp_path_factory, tmp_path, capsys):
    """Chat records and no recipe or evaluation setting: the default held-out set (countdown under the plain
    template) would not measure the run, so there is none, and one line says how to ask for one; naming a task (or
    any evaluation setting) keeps it."""
    from conftest import tiny_checkpoint

    model = tiny_checkpoint(tmp_path_factory, "chat", max_positions=256)
    (model / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                                               "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    data = write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "1+1"},
                                                         {"role": "assistant", "content": "2"}]}] * 4)
    common = ["sft", "--data", str(data), "--model", str(model), "--set", "seq_len=128", "--set", "steps=1",
              "--set", "threads=1"]
    assert cli_main(common + ["--out", str(tmp_path / "a")]) == 0
    assert "no held-out evaluation" in capsys.readouterr().err
    rows = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert not any(k.startswith("eval/") for r in rows for k in r)
    # a task named: the evaluation is kept, and this model's 256 positions cannot hold its 512 new tokens
    assert cli_main(common + ["--set", "task=countdown", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no held-out evaluation" not in err and "eval_max_new_tokens = 512" in err
