"""Helpers shared by the tests."""
import time

import pytest
import torch


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


def tiny_checkpoint(tmp_path_factory, name: str, max_positions: int = 1024):
    """A real r1lab checkpoint directory holding tiny_model and the char tokenizer."""
    from r1lab.checkpoint import save_model_dir
    from r1lab.model.tokenizer import build_tokenizer

    tok = build_tokenizer()
    path = tmp_path_factory.mktemp(name) / "ckpt"
    save_model_dir(path, tiny_model(tok, max_positions), tok)
    return path
