"""Helpers shared by the tests."""
import importlib
import string
import sys
import time
from pathlib import Path

import pytest
import torch


def load_benchmark(name: str):
    """benchmarks/NAME.py imported as module NAME, benchmarks/ first on sys.path as when run as a script (its sibling
    imports work): once, registered in sys.modules (a dataclass of its looks its module up there)."""
    path = str(Path(__file__).resolve().parents[1] / "benchmarks")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(name)


def gloo_env() -> dict:
    """The environment of a test's multi-process (torchrun) run: each rank on the CPU with one thread, and no GPU
    visible, so a GPU machine runs the gloo group the test is about (there every rank would take cuda:LOCAL_RANK, and
    a one-GPU machine has no cuda:1)."""
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def best_of_three(fn, *args, **kwargs):
    """(fn's result, the best of three wall times): one slow scheduler tick should not fail a timing test."""
    times = []
    for _ in range(3):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return result, min(times)


@pytest.fixture(scope="module")
def one_thread():
    # subtle: these matmuls are tiny; with other jobs on the two cores, two OpenMP threads ran the tests 5x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(tok, max_positions: int = 1024):
    """A tiny-1m model whose text varies: at the default init (std 0.02) it repeats one token; larger weights give
    varied text, some </think> and some EOS, so the reasoning split and every finish reason get exercised."""
    from r1lab.model.presets import build_model

    model = build_model("tiny-1m", tok, max_positions=max_positions)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15, generator=g)
    return model.eval()


def token_logp(model, c) -> torch.Tensor:
    """(T, V) log-probs of `model` predicting each token of completion `c`, from one forward over prompt + tokens (in
    the caller's grad mode and autocast)."""
    ids = torch.tensor([c.prompt_ids + c.token_ids])
    return torch.log_softmax(model(ids).logits[0, len(c.prompt_ids) - 1:-1].float(), -1)  # position t predicts t


def tiny_checkpoint(tmp_path_factory, name: str, max_positions: int = 1024):
    """A real r1lab checkpoint directory holding tiny_model and the char tokenizer."""
    from r1lab.checkpoint import save_model_dir
    from r1lab.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    path = tmp_path_factory.mktemp(name) / "ckpt"
    save_model_dir(path, tiny_model(tok, max_positions), tok)
    return path


def hub_snapshot(cache, repo_id: str, files: dict[str, str], commit: str = "0" * 40):
    """Write `files` ({name: text}) as the main-branch snapshot of hub model `repo_id` in the Hugging Face cache
    folder `cache` (HF_HUB_CACHE's layout: models--ORG--NAME/refs/main names snapshots/COMMIT/), as a download
    would; returns the snapshot folder."""
    from pathlib import Path

    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


async def drain_events(job) -> list:
    """Every token event of a serve Scheduler job, in order, once the job has finished."""
    return [ev for batch in [b async for b in job.events()] for _, evs in batch for ev in evs]


def kill_after_first_checkpoint(args: list[str], run_dir, timeout_s: float = 240.0) -> None:
    """Start a stage's command line, SIGKILL it as soon as RUN/checkpoints/latest exists (a kill at the worst
    moment short of a torn write, which checkpoint.py's renames rule out), and wait for it to die."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = Path(run_dir) / "checkpoints" / "latest"
    deadline = time.time() + timeout_s
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the run never wrote its first checkpoint"


# A chat template that writes its BOS, as Llama-3's and DeepSeek-R1-Distill's do.
CHAT = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
BOS = "<s>"


def bos_tokenizer(chat_template=CHAT, tags: bool = True):
    """A Llama-3-like tokenizer built here: one token per printable character and (tags) per format tag; encoding
    adds <s>, as a Llama tokenizer does, and `chat_template` (default CHAT) writes it too. tags=False spells
    </think> in several tokens, as Qwen2.5's and Llama 3's tokenizers do."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from r1lab.tasks.format import TAGS

    specials = ["<pad>", "</s>", "<unk>", BOS]
    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    words = specials + (list(TAGS) if tags else []) + chars
    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if tags:
        core.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = chat_template
    tok.padding_side = "left"
    return tok
