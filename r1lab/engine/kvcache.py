"""The engine's KV cache: a transformers DynamicCache whose layers grow in place (or keep a contiguous body and a short
tail, for the lean decoding step's attention on a CPU), and the row surgery on it.

r1lab.engine passes the cache to the model (under the keyword `cache_kwarg` names) and edits its per-layer
(B, heads, L, head_dim) tensors to drop finished rows, trim all-padding columns and merge admitted rows (map_cache,
cat_caches).
"""
from __future__ import annotations

import functools
import inspect

import torch


def cache_kwarg(model) -> str:
    """The keyword under which `model`'s forward takes a KV cache: "cache" in recent transformers, which renamed
    `past_key_values` (the old name still works there, with a FutureWarning, until its removal), else the old name.
    A peft wrapper passes its kwargs through: its base model's signature decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_kwarg(type(base))


@functools.cache
def _cache_kwarg(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def returned_cache(out):
    """The cache a forward returned: `out.cache` in recent transformers, `out.past_key_values` before the rename."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def new_cache(model):
    """A DynamicCache whose layers grow in place (full-attention models only)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache(config=model.config)
    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        raise NotImplementedError("the engine edits plain DynamicLayer caches; sliding-window models need a backend")
    cache.layers = [_growing_layer_class()() for _ in cache.layers]
    return cache


def map_cache(cache, fn):
    """Apply fn to every layer's keys and values, each (B, heads, L, head_dim)."""
    for layer in cache.layers:
        layer.set(fn(layer.keys), fn(layer.values))


def cat_caches(cache, other):
    """Append other's rows to cache's rows (same L)."""
    for mine, theirs in zip(cache.layers, other.layers):
        mine.set(torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values]))


def _grown(t, cap: int):
    """t (B, heads, n, head_dim) copied into uninitialised room for cap columns: the spare columns are written before
    they are read, so zero-filling them (F.pad) would only add a pass over fresh memory (first touch)."""
    out = t.new_empty(*t.shape[:2], cap, t.shape[3])
    out[:, :, :t.shape[2]] = t
    return out


def _folding_side(name: str, buffer: str):
    """GrowingLayer's `keys` or `values`: reading or assigning it first folds a split layout's tail into the body;
    assigning also makes the tensor the side's buffer (no spare columns: the next update() grows a copy)."""
    def get(layer):
        if layer._tail_len:
            layer._fold()
        return getattr(layer, name)

    def put(layer, t):
        if layer._tail_len:
            layer._fold()
        setattr(layer, name, t)
        setattr(layer, buffer, t)

    return property(get, put)


@functools.cache
def _growing_layer_class():  # built on first use: importing transformers.cache_utils takes seconds
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer that never torch.cat-s the whole cache per token, in one of two layouts.

        Grown (the model's forward, `update`): keys/values are views of a buffer with spare capacity along L, so
        appending a token writes one column instead of copying the cache (a copy whose cost grows with it).
        Split (DecodeStep on a CPU, `append_split`): a contiguous float32 body plus a tail buffer of up to TAIL
        columns, folded into the body when full. On a CPU, bmm over a view whose batch stride is not its own size
        (the grown layout's [:L] of a longer buffer) copies it first: at batch 256 that copy was most of a decoding
        step's attention (dev/LOG.md, session 29). The split layout keeps the long part contiguous. Keys and values
        that arrive in bf16 (bf16 weights, or autocast's values) are held in float32, exactly: twice a bf16 cache's
        memory, for attention in float32 (dev/LOG.md, session 30).
        Reading `keys`/`values` folds the tail (the surgery of r1lab.engine.batch reads them, and sees one tensor).
        """
        TAIL = 64

        def __init__(self, *args, **kwargs):
            self._tail_len = 0
            super().__init__(*args, **kwargs)

        def set(self, keys, values):  # (B, heads, L, head_dim) each; the next update() grows a copy
            self._tail_len = 0
            self._k, self._v, self._keys, self._values = keys, values, keys, values

        keys = _folding_side("_keys", "_k")  # transformers' own methods assign the two sides one at a time
        values = _folding_side("_values", "_v")

        def get_seq_length(self) -> int:
            if not self.is_initialized or self._keys is None or self._keys.numel() == 0:
                return 0
            return self._keys.shape[-2] + self._tail_len

        def _fold(self):
            """Split -> one contiguous tensor per side: the body with the tail's columns after it."""
            t, self._tail_len = self._tail_len, 0
            self._k = self._keys = torch.cat([self._keys, self._tk[:, :, :t]], 2)
            self._v = self._values = torch.cat([self._values, self._tv[:, :, :t]], 2)

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.set(key_states, value_states)
                return self._keys, self._values
            n, q = self.keys.shape[-2], key_states.shape[-2]  # (reading keys folds a split layout's tail)
            if n + q > self._k.shape[-2]:
                cap = n + q + max(64, n // 2)
                self._k, self._v = _grown(self._keys, cap), _grown(self._values, cap)  # (B, heads, cap, head_dim)
            self._k[:, :, n:n + q] = key_states
            self._v[:, :, n:n + q] = value_states
            self._keys, self._values = self._k[:, :, :n + q], self._v[:, :, :n + q]
            return self._keys, self._values

        def append_split(self, key_states, value_states):
            """Append one column per row (key_states (B, heads, 1, head_dim)) in the split layout; returns (body keys,
            body values, tail keys, tail values), the body contiguous and the tail a view of at most TAIL columns."""
            if self._tail_len == self.TAIL:
                self._fold()
            if self._tail_len == 0:  # entering the layout, or just folded: one copy if the body is a grown view
                self._k = self._keys = self._keys.to(torch.float32).contiguous()  # (bf16 from bf16 weights or autocast)
                self._v = self._values = self._values.to(torch.float32).contiguous()
                B, H, _, d = self._keys.shape
                tk = getattr(self, "_tk", None)
                if tk is None or tk.shape != (B, H, self.TAIL, d) or tk.device != self._keys.device:  # float32 always
                    self._tk = self._keys.new_empty(B, H, self.TAIL, d)
                    self._tv = self._values.new_empty(B, H, self.TAIL, d)
            t = self._tail_len
            self._tk[:, :, t:t + 1] = key_states
            self._tv[:, :, t:t + 1] = value_states
            self._tail_len = t + 1
            return self._keys, self._values, self._tk[:, :, :t + 1], self._tv[:, :, :t + 1]

    return GrowingLayer
