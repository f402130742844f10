"""The YAML pipelines end to end with the packaged SmolLM2 (real weights): index, then the three RAG pipelines."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from grit_components.cli.pipelines import demo_question
from haystack_integrations.common.grit import pipelines as hp
from tests._models import index_folders

pytestmark = pytest.mark.integration

WIKIDESC = "Given a short description, retrieve the Wikipedia passage about the entity it describes"


def test_smollm2_indexing_and_rag_pipelines(tmp_path, smol):
    data = files("grit_components") / "data"
    passages = [json.loads(line) for line in (data / "wikidesc-demo.jsonl").read_text(encoding="utf-8").splitlines()]
    questions = [json.loads(line) for line in
                 (data / "wikidesc-demo-questions.jsonl").read_text(encoding="utf-8").splitlines()]
    item = next(q for q in questions if q["answer"] == "Eric Hobsbawm")
    gold = next(p for p in passages if p["_id"] == item["gold"])
    chosen = [gold] + [p for p in passages if p["_id"] != gold["_id"]][:11]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for passage in chosen:
        (corpus / f"{passage['_id']}.txt").write_text(passage["text"], encoding="utf-8")

    result = index_folders(tmp_path, [corpus], pipeline="indexing_doc_cache",  # the YAML's model: SmolLM2
                           meta=[{"passage_id": p["_id"]} for p in sorted(chosen, key=lambda p: p["_id"])])
    assert result.documents_in_store == 12

    for name in ("rag", "rag_rerank", "rag_doc_cache"):
        built = hp.load_pipeline(name, data_dir=tmp_path, instruction=WIKIDESC)
        try:
            answer = hp.ask(built, demo_question(item), retrieval_text=item["description"])
        finally:
            hp.close_pipeline(built)
        assert answer.text, name
        assert len(answer.sources) == (2 if name == "rag_doc_cache" else 3), name
        assert answer.sources[0].meta["passage_id"] == gold["_id"], name  # rag_rerank: query likelihood
        if name == "rag_doc_cache":
            assert answer.meta["cache"]["cache_hits"] >= 1
