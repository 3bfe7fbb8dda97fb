"""The engine's KV cache: a transformers DynamicCache whose layers grow in place, and the row surgery on it.

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


@functools.cache
def _growing_layer_class():  # built on first use: importing transformers.cache_utils takes seconds
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer with spare capacity along L: appending a token writes one column instead of torch.cat-ing
        the whole cache every step (a copy whose cost grows with the cache, paid once per token)."""

        def set(self, keys, values):  # (B, heads, L, head_dim) each; the next update() grows a copy
            self._k, self._v, self.keys, self.values = keys, values, keys, values

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.set(key_states, value_states)
                return self.keys, self.values
            n, q = self.keys.shape[-2], key_states.shape[-2]
            if n + q > self._k.shape[-2]:
                cap = n + q + max(64, n // 2)
                self._k, self._v = _grown(self.keys, cap), _grown(self.values, cap)  # (B, heads, cap, head_dim)
            self._k[:, :, n:n + q] = key_states
            self._v[:, :, n:n + q] = value_states
            self.keys, self.values = self._k[:, :, :n + q], self._v[:, :, :n + q]
            return self.keys, self.values

    return GrowingLayer
