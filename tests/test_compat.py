"""The transformers API the core relies on for caches: fails loudly the day a release drops or deprecates it.

transformers 5.x renamed the cache argument and output field from `past_key_values` to `cache` and
warns on the old name ("removed in version 6.0.0"). These tests run the core's cache paths (compute a
cache, compose it, generate from it) with every warning recorded and fail on any deprecation notice, so
a release that deprecates something else the core uses shows up here first, with its own message.
"""

from __future__ import annotations

import inspect
import logging
import warnings

import pytest
import torch

from grit_components import rag
from grit_components._compat import cache_argument, output_cache
from grit_components.generation import generate_ids
from grit_components.kv_cache import KVStore, compose, compute_cache

DEPRECATION_WORDS = ("deprecat", "will be removed", "no longer")


@pytest.fixture
def notices(monkeypatch):
    """A function returning every Python warning and transformers `warning_once`/`warning` message so far."""
    seen: list[str] = []
    original_warning = logging.Logger.warning

    def record_once(self, message, *args, **kwargs):  # warning_once is cached per process: record every call
        seen.append(str(message))

    def record(self, message, *args, **kwargs):
        seen.append(str(message))
        return original_warning(self, message, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "warning_once", record_once, raising=False)
    monkeypatch.setattr(logging.Logger, "warning", record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: seen + [str(w.message) for w in caught]


def _deprecations(messages: list[str]) -> list[str]:
    return [m for m in messages if any(word in m.lower() for word in DEPRECATION_WORDS)]


def test_the_cache_argument_is_one_the_installed_transformers_takes(tiny_model):
    name = cache_argument(tiny_model.model)
    assert name in inspect.signature(type(tiny_model.model).forward).parameters
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 6 or "cache" in inspect.signature(
            type(tiny_model.model).forward).parameters:
        assert name == "cache"  # the name transformers 6 keeps


def test_cache_paths_raise_no_deprecation_notice(tiny_model, notices):
    doc = "The lighthouse on the northern cape was automated in 1987 and still works."
    ids = rag.cached_text_ids(tiny_model, doc)
    entry = compute_cache(tiny_model, ids, "causal")  # reads the cache a forward returns
    suffix = tiny_model.tokenize(" When was it automated?")
    for reserve in (len(suffix) + 4, None):  # StaticCache and DynamicCache
        _, cache = compose(tiny_model, [entry], reserve=reserve)
        generate_ids(tiny_model, suffix, past_key_values=cache, max_new_tokens=4)  # hands a cache to generate
    rag.answer(tiny_model, "When?", [doc], mode="doc", source="embedding", max_new_tokens=2, store=KVStore())
    assert _deprecations(notices()) == []


def test_output_cache_reads_what_a_forward_returned(tiny_model):
    ids = torch.tensor([tiny_model.tokenize("a few words")])
    with torch.inference_mode():
        out = tiny_model.model(input_ids=ids, use_cache=True)
    cache = output_cache(out)
    assert cache is not None and cache.get_seq_length() == ids.shape[1]
