"""hayhooks serves the RAG pipeline: start it on 127.0.0.1, post a question, get an answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from haystack_integrations.common.grit import pipelines as hp

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240  # seconds; imports are slow on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny, corpus_dir):
    data_dir = tmp_path / "data"
    built = hp.load_pipeline("indexing", data_dir=data_dir, model=tiny)
    try:
        hp.index_files(built, hp.collect_files([corpus_dir]))
    finally:
        hp.close_pipeline(built)
    port = free_port()
    env = {**os.environ, "GRIT_DATA_DIR": str(data_dir), "GRIT_MODEL": tiny, "HAYSTACK_TELEMETRY_ENABLED": "False",
           "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "hayhooks.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "hayhooks"), "run", "--host", "127.0.0.1", "--port", str(port),
         "--pipelines-dir", str(ROOT / "deploy" / "hayhooks")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"hayhooks exited: {(tmp_path / 'hayhooks.log').read_text()[-3000:]}")
            try:
                status = httpx.get(f"{base}/status", timeout=5)
                if status.status_code == 200 and "grit_rag" in status.text:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"hayhooks not ready in {START_TIMEOUT}s: {(tmp_path / 'hayhooks.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        log.close()


def test_hayhooks_answers_a_question(server):
    response = httpx.post(f"{server}/grit_rag/run", json={"question": "Who was Diogenes?"}, timeout=180)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert isinstance(result["answer"], str)
    assert len(result["sources"]) == 3 and all(s["score"] is not None for s in result["sources"])
    assert result["timings"]["total"] > 0


def test_hayhooks_concurrent_requests_get_their_own_answers_and_timings(server):
    from concurrent.futures import ThreadPoolExecutor

    questions = ["Who was Diogenes?", "What is the Parthenon?", "Name a river in Europe."]

    def ask(question):
        response = httpx.post(f"{server}/grit_rag/run", json={"question": question}, timeout=300)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    alone = [ask(q) for q in questions]
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(ask, questions))
    for one, other in zip(alone, together):
        assert other["answer"] == one["answer"]  # greedy: the same answer with or without company
        assert [s["id"] for s in other["sources"]] == [s["id"] for s in one["sources"]]
        assert {"query_embedder", "retriever", "llm", "total"} <= set(other["timings"])
        assert sum(v for k, v in other["timings"].items() if k != "total") <= other["timings"]["total"] + 1e-6
