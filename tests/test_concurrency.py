"""Embedding (bidirectional) and generation (causal) at once on one shared model object."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

TEXTS = [["The Parthenon is a temple."], ["Alum is a salt.", "Short."], ["Hobsbawm was a historian of the 19th century."]]
PROMPTS = ["Tell me about temples.", "What is alum?", "Who was Hobsbawm?"]


@pytest.mark.slow
def test_four_embedding_and_four_generating_threads_for_30_seconds(tiny_model):
    expected_embeddings = [tiny_model.embed(texts, instruction="Represent this") for texts in TEXTS]
    expected_texts = [tiny_model.generate(p, max_new_tokens=8).text for p in PROMPTS]
    deadline = time.monotonic() + 30
    errors: list[str] = []
    counts = {"embed": 0, "generate": 0}
    lock = threading.Lock()

    def embedder(worker: int) -> None:
        i = worker
        while time.monotonic() < deadline and not errors:
            k = i % len(TEXTS)
            got = tiny_model.embed(TEXTS[k], instruction="Represent this")
            if not np.allclose(got, expected_embeddings[k], atol=1e-5):
                errors.append(f"embedding {k} differs by {np.abs(got - expected_embeddings[k]).max()}")
            with lock:
                counts["embed"] += 1
            i += 1

    def generator(worker: int) -> None:
        i = worker
        while time.monotonic() < deadline and not errors:
            k = i % len(PROMPTS)
            got = tiny_model.generate(PROMPTS[k], max_new_tokens=8).text
            if got != expected_texts[k]:
                errors.append(f"generation {k}: {got!r} != {expected_texts[k]!r}")
            with lock:
                counts["generate"] += 1
            i += 1

    threads = [threading.Thread(target=embedder, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=generator, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert counts["embed"] > 20 and counts["generate"] > 20, counts
    assert getattr(tiny_model.model.config, "is_causal", True) is not False


def _mixed_calls(model, count: int) -> list[tuple[str, dict]]:
    """`count` calls cycling through greedy and seeded sampling (plain and after a cached document) and
    embedding; unseeded sampling runs beside them but is not compared (it is random by design)."""
    kinds = [
        ("generate", {"messages": "Tell me about temples.", "max_new_tokens": 8}),
        ("generate", {"messages": "What is alum?", "max_new_tokens": 8, "temperature": 1.0, "seed": 11}),
        ("generate", {"messages": "What is alum?", "max_new_tokens": 8, "temperature": 0.7, "top_p": 0.9, "seed": 12}),
        ("embed", {"texts": ["Hobsbawm was a historian."], "instruction": "Represent this"}),
        ("answer", {"query": "Who was he?", "documents": ["Hobsbawm was a historian."], "mode": "doc",
                    "source": "causal", "max_new_tokens": 8, "temperature": 1.0, "seed": 13}),
        ("generate", {"messages": "Anything.", "max_new_tokens": 8, "temperature": 1.0}),  # unseeded: noise
    ]
    return [(kinds[i % len(kinds)][0], {**kinds[i % len(kinds)][1]}) for i in range(count)]


def _call(model, kind: str, kwargs: dict):
    from grit_components import rag

    if kind == "embed":
        return model.embed(**kwargs)
    if kind == "answer":
        return rag.answer(model, **kwargs).text
    return model.generate(**kwargs).text


def test_eight_threads_fifty_mixed_calls_match_single_threaded_runs(tiny_model):
    """Seeded sampling draws from the call's own generator: concurrency changes nothing, and the global
    generator (used by the unseeded calls in between) is not disturbed by the seeded ones."""
    from concurrent.futures import ThreadPoolExecutor

    calls = _mixed_calls(tiny_model, 50)
    alone = [_call(tiny_model, kind, kwargs) for kind, kwargs in calls]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda call: _call(tiny_model, *call), calls))
    compared = mismatches = 0
    for (kind, kwargs), one, other in zip(calls, alone, together):
        if kind == "generate" and kwargs.get("temperature") and "seed" not in kwargs:
            continue
        compared += 1
        same = np.allclose(one, other, atol=1e-5) if kind == "embed" else one == other
        mismatches += not same
    assert compared >= 40 and mismatches == 0, f"{mismatches} of {compared} calls differ under 8 threads"
