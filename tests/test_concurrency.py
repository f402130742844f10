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
