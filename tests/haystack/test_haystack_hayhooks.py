"""The hayhooks deployment: safe by default (no admin routes, API key, CORS, Host check, short errors),
tested through the real app; then served by the launcher on 127.0.0.1, answering one and several questions."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from haystack_integrations.common.grit import pipelines as hp
from tests._models import index_folders

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "hayhooks"
START_TIMEOUT = 600  # seconds; an upper bound for imports and model loading on a busy 2-core machine
KEY = "test-key-0123456789"


def _serve_module():
    spec = importlib.util.spec_from_file_location("grit_hayhooks_serve", DEPLOY / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny, corpus_dir):
    folder = tmp_path_factory.mktemp("data")
    index_folders(folder, [corpus_dir], model=tiny)
    return folder


@pytest.fixture
def serve(monkeypatch, tmp_path, data_dir, tiny):
    """`serve.py` as a module, with hayhooks' global settings restored and the served pipeline closed after."""
    from hayhooks.server.pipelines.loader import REGISTRY_ROOT
    from hayhooks.server.utils.module_loader import unload_pipeline_modules
    from hayhooks.settings import settings

    for variable in [k for k in os.environ if k.upper().startswith("HAYHOOKS_") or k.startswith("GRIT_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("GRIT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GRIT_MODEL", tiny)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # hayhooks' local dashboard credential
    saved = dict(settings.__dict__)
    dont_write_bytecode = sys.dont_write_bytecode
    module = _serve_module()
    apps = []
    real_create = module.create_app

    def create_app(**kwargs):
        app = real_create(**kwargs)
        apps.append(app)
        return app

    def close_app(app):
        """Release the embedded Qdrant folder the app's pipeline holds (one client at a time)."""
        registry = app.state.pipeline_registry
        for name in registry.get_names():
            hp.close_pipeline(registry.get(name).pipeline)
        apps.remove(app)

    module.create_app, module.close_app = create_app, close_app
    try:
        yield module
    finally:
        for app in list(apps):
            close_app(app)
        unload_pipeline_modules(REGISTRY_ROOT)
        settings.__dict__.update(saved)
        sys.dont_write_bytecode = dont_write_bytecode


def _client(app, host: str = "127.0.0.1"):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=f"http://{host}")


def test_admin_routes_are_absent_and_the_pipeline_is_served(serve):
    with _client(serve.create_app()) as client:
        paths = set(client.app.openapi()["paths"])
        assert "/grit_rag/run" in paths
        assert not {"/deploy_files", "/deploy-yaml", "/undeploy/{pipeline_name}"} & paths
        assert client.post("/deploy_files", json={"name": "x", "files": {"pipeline_wrapper.py": "import os"}}
                           ).status_code in (404, 405)
        assert client.post("/undeploy/grit_rag").status_code in (404, 405)
        assert (DEPLOY / "grit_rag" / "pipeline_wrapper.py").exists()
        status = client.get("/status").json()
        assert status["pipelines"] == ["grit_rag"] and status["durable_mode"] is True


def test_api_key_protects_run_and_chat(serve):
    with _client(serve.create_app(api_key=KEY)) as client:
        question = {"question": "Who was Diogenes?"}
        chat = {"model": "grit_rag", "messages": [{"role": "user", "content": "Who was Diogenes?"}]}
        assert client.post("/grit_rag/run", json=question).status_code == 401
        assert client.post("/grit_rag/run", json=question, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/grit_rag/run", json=question, headers={"X-API-Key": KEY[:-1]}).status_code == 401
        assert client.post("/v1/chat/completions", json=chat).status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/status").status_code == 200  # health checks need no key
        reply = client.post("/grit_rag/run", json=question, headers={"Authorization": f"Bearer {KEY}"})
        assert reply.status_code == 200 and isinstance(reply.json()["result"]["answer"], str)
        reply = client.post("/v1/chat/completions", json=chat, headers={"X-API-Key": KEY})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None


def test_key_comes_from_the_environment(serve, monkeypatch):
    monkeypatch.setenv("GRIT_API_KEY", KEY)
    with _client(serve.create_app()) as client:
        assert client.post("/grit_rag/run", json={"question": "q"}).status_code == 401


def test_client_errors_are_4xx_with_a_short_message(serve):
    with _client(serve.create_app()) as client:
        assert client.post("/grit_rag/run", json={}).status_code == 422  # no question
        assert client.post("/grit_rag/run", content=b"{not json", headers={"Content-Type": "application/json"}
                           ).status_code == 422
        empty = client.post("/grit_rag/run", json={"question": "   "})
        assert empty.status_code == 400 and "non-empty" in empty.json()["detail"]
        too_long = client.post("/grit_rag/run", json={"question": "word " * 5000})
        assert too_long.status_code == 400, too_long.text
        detail = too_long.json()["detail"]
        assert "context length" in detail and "\n" not in detail and "Traceback" not in detail
        no_user = client.post("/v1/chat/completions", json={"model": "grit_rag",
                                                            "messages": [{"role": "system", "content": "x"}]})
        assert no_user.status_code == 400 and "user message" in no_user.json()["detail"]


def test_server_errors_do_not_leak_internal_messages(serve, monkeypatch):
    app = serve.create_app()
    wrapper = app.state.pipeline_registry.get("grit_rag")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal state /home/me/.grit")

    monkeypatch.setattr(wrapper.pipeline, "run", broken)
    with _client(app) as client:
        reply = client.post("/grit_rag/run", json={"question": "Who was Diogenes?"})
        assert reply.status_code == 500 and reply.json() == {"detail": "Internal server error"}


def test_cors_answers_no_origin_unless_configured(serve, monkeypatch):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    app = serve.create_app()
    with _client(app) as client:
        reply = client.options("/grit_rag/run", headers=preflight)
        assert "access-control-allow-origin" not in reply.headers
        reply = client.post("/grit_rag/run", json={"question": "q"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in reply.headers
    serve.close_app(app)
    monkeypatch.setenv("HAYHOOKS_CORS_ALLOW_ORIGINS", '["https://app.example"]')
    from hayhooks.settings import settings

    settings.cors_allow_origins = ["https://app.example"]  # what hayhooks reads from that variable at import
    with _client(serve.create_app(api_key=KEY)) as client:
        reply = client.options("/grit_rag/run", headers={**preflight, "Origin": "https://app.example"})
        assert reply.headers.get("access-control-allow-origin") == "https://app.example"
        reply = client.options("/grit_rag/run", headers=preflight)
        assert "access-control-allow-origin" not in reply.headers


def test_loopback_server_answers_only_loopback_host_names(serve):
    app = serve.create_app()
    with _client(app, "127.0.0.1") as client:
        assert client.get("/status").status_code == 200
    with _client(app, "localhost") as client:
        assert client.get("/status").status_code == 200
    with _client(app, "rebound.attacker.example") as client:  # DNS rebinding: a page's own host name
        assert client.get("/status").status_code == 400


def test_exposed_host_needs_a_key(serve, monkeypatch):
    from hayhooks.settings import settings

    settings.host = "0.0.0.0"
    with pytest.raises(serve.UnsafeConfigurationError, match="GRIT_API_KEY"):
        serve.create_app()
    monkeypatch.setenv("GRIT_ALLOW_UNAUTHENTICATED", "1")
    serve.check_exposure("0.0.0.0", None)
    serve.check_exposure("0.0.0.0", KEY)
    assert serve.is_loopback("::1") and serve.is_loopback("localhost") and not serve.is_loopback("10.0.0.5")


def test_admin_routes_switched_on_need_a_key(serve, monkeypatch):
    monkeypatch.setenv("HAYHOOKS_DURABLE_MODE", "false")
    from hayhooks.settings import settings

    settings.durable_mode = False
    with pytest.raises(serve.UnsafeConfigurationError, match="deploy/undeploy"):
        serve.check_exposure("127.0.0.1", None)
    serve.check_exposure("127.0.0.1", KEY)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path, tiny, data_dir):
    """The launcher in its own process, on 127.0.0.1 with an API key."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HAYHOOKS_")}
    env.update({"GRIT_DATA_DIR": str(data_dir), "GRIT_MODEL": tiny, "GRIT_API_KEY": KEY,
                "HAYSTACK_TELEMETRY_ENABLED": "False", "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path)})
    log = open(tmp_path / "hayhooks.log", "w")
    process = subprocess.Popen([sys.executable, str(DEPLOY / "serve.py"), "--host", "127.0.0.1", "--port", str(port)],
                               cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited: {(tmp_path / 'hayhooks.log').read_text()[-3000:]}")
            try:
                status = httpx.get(f"{base}/status", timeout=5)
                if status.status_code == 200 and "grit_rag" in status.text:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not ready in {START_TIMEOUT}s: "
                            f"{(tmp_path / 'hayhooks.log').read_text()[-3000:]}")
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


def _ask(base: str, question: str) -> dict:
    response = httpx.post(f"{base}/grit_rag/run", json={"question": question}, timeout=300,
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_launcher_serves_answers_and_concurrent_requests_get_their_own(server):
    from concurrent.futures import ThreadPoolExecutor

    assert httpx.post(f"{server}/grit_rag/run", json={"question": "q"}, timeout=30).status_code == 401
    assert httpx.post(f"{server}/deploy_files", json={}, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"}).status_code in (404, 405)
    questions = ["Who was Diogenes?", "What is the Parthenon?", "Name a river in Europe."]
    alone = [_ask(server, q) for q in questions]
    first = alone[0]
    assert isinstance(first["answer"], str) and first["timings"]["total"] > 0
    assert len(first["sources"]) == 3 and all(s["score"] is not None for s in first["sources"])
    with ThreadPoolExecutor(len(questions)) as pool:
        together = list(pool.map(lambda q: _ask(server, q), questions))
    for one, other in zip(alone, together):
        assert other["answer"] == one["answer"]  # greedy: the same answer with or without company
        assert [s["id"] for s in other["sources"]] == [s["id"] for s in one["sources"]]
        assert {"query_embedder", "retriever", "llm", "total"} <= set(other["timings"])
        assert sum(v for k, v in other["timings"].items() if k != "total") <= other["timings"]["total"] + 1e-6


# -- the OpenAI-compatible chat endpoint ---------------------------------------------------------------------

def _chat(client, messages, **fields):
    return client.post("/v1/chat/completions", json={"model": "grit_rag", "messages": messages, **fields})


def _events(response) -> list:
    """The JSON payloads of an SSE response (without the final [DONE])."""
    import json

    return [json.loads(line[len("data: "):]) for line in response.text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_chat_returns_the_answer_with_usage(serve):
    with _client(serve.create_app()) as client:
        reply = _chat(client, [{"role": "user", "content": "Who was Diogenes?"}], max_tokens=5, user="ignored-field")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
        usage = body["usage"]
        assert usage["completion_tokens"] <= 5 and usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        bad = _chat(client, [{"role": "user", "content": "q"}], temperature=-1)
        assert bad.status_code == 422 and "temperature" in bad.json()["detail"]
        tool_turn = _chat(client, [{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}])
        assert tool_turn.status_code == 422 and "messages[0].role" in tool_turn.json()["detail"]


def test_chat_streams_tokens_then_usage(serve):
    with _client(serve.create_app()) as client:
        messages = [{"role": "user", "content": "Who was Diogenes?"}]
        whole = _chat(client, messages, max_tokens=8).json()
        streamed = _chat(client, messages, max_tokens=8, stream=True)
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        events = _events(streamed)
        deltas = [e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]]
        assert sum(1 for d in deltas if d) > 1  # token by token, not one chunk at the end
        assert "".join(deltas).strip() == whole["choices"][0]["message"]["content"]
        assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
        assert any(e["choices"] and e["choices"][0].get("finish_reason") for e in events)


def test_a_declined_question_is_answered_and_streamed_by_the_router(serve, monkeypatch, tmp_path):
    """rag_answerability.yaml served: when the router declines, the generator does not run, and both the plain
    and the streamed chat answer with the router's reply (hayhooks streams only components' callbacks)."""
    from grit_components import templates

    text = (hp.pipelines_dir() / "rag_answerability.yaml").read_text()
    declining = text.replace("      threshold: 0.0", "      weights: {query_likelihood_gain: 1.0, cosine: 1.0, bias: -100.0}")
    assert declining != text
    (tmp_path / "declining.yaml").write_text(declining)
    monkeypatch.setenv("GRIT_PIPELINE", str(tmp_path / "declining.yaml"))
    with _client(serve.create_app()) as client:
        messages = [{"role": "user", "content": "Who was Diogenes?"}]
        whole = _chat(client, messages, max_tokens=8).json()
        assert "choices" in whole, whole
        assert whole["choices"][0]["message"]["content"] == templates.NO_ANSWER
        events = _events(_chat(client, messages, max_tokens=8, stream=True))
        deltas = [e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]]
        assert "".join(deltas) == templates.NO_ANSWER


def test_chat_uses_the_whole_conversation(serve, monkeypatch):
    from tests._planted import plant

    app = serve.create_app()
    llm = app.state.pipeline_registry.get("grit_rag").pipeline.get_component("llm")
    planted = plant(monkeypatch, llm.generator.model, ["Paris.", "Berlin."])
    with _client(app) as client:
        first = [{"role": "system", "content": "Answer with a city."}, {"role": "user", "content": "Capital of France?"}]
        assert _chat(client, first).json()["choices"][0]["message"]["content"] == "Paris."
        second = [*first, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Germany?"}]
        assert _chat(client, second, stream=True).status_code == 200
    prompt = planted.prompts[1]
    assert prompt.index("Answer with a city.") < prompt.index("Capital of France?") < prompt.index("Paris.")
    assert prompt.index("Paris.") < prompt.index("And of Germany?")


def test_concurrent_chats_each_get_their_own_answer(serve):
    from concurrent.futures import ThreadPoolExecutor

    questions = ["Who was Diogenes?", "What is the Parthenon made of, and who built it?", "Name a river."]
    with _client(serve.create_app()) as client:
        def ask(question, stream):
            reply = _chat(client, [{"role": "user", "content": question}], max_tokens=6, stream=stream)
            assert reply.status_code == 200, reply.text
            if not stream:
                return reply.json()["choices"][0]["message"]["content"], reply.json()["usage"]
            events = _events(reply)
            return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]), events[-1]["usage"]

        alone = [ask(q, False) for q in questions]
        with ThreadPoolExecutor(2 * len(questions)) as pool:
            together = list(pool.map(lambda args: ask(*args), [(q, s) for s in (True, False) for q in questions]))
    assert len({usage["prompt_tokens"] for _, usage in alone}) == len(questions)  # the prompts differ
    for i, (text, usage) in enumerate(together):
        expected_text, expected_usage = alone[i % len(questions)]
        assert text.strip() == expected_text and usage == expected_usage


def test_sync_chat_completion_streams_too(serve):
    app = serve.create_app()
    wrapper = app.state.pipeline_registry.get("grit_rag")
    messages = [{"role": "user", "content": "Who was Diogenes?"}]
    events = list(wrapper.run_chat_completion("grit_rag", messages, {"stream": True, "max_tokens": 6}))
    text = "".join(getattr(e, "content", "") for e in events if not hasattr(e, "usage"))
    assert events[-1].usage["completion_tokens"] <= 6
    assert text.strip() == wrapper.run_chat_completion("grit_rag", messages, {"max_tokens": 6}).choices[0].message.content
