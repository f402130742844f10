"""benchmarks/fact_qa.py: the three passage settings of every question (mechanics, on a tiny random model)."""

from __future__ import annotations

from benchmarks.fact_qa import run_model


def test_fact_qa_answers_from_retrieved_gold_and_other_passages(tiny_llama_dir):
    corpus = [{"_id": f"d{i}", "title": f"Title {i}", "text": f"Passage number {i} says {i * 7} things."} for i in range(6)]
    questions = [{"_id": "q0", "question": "What does passage number 2 say?", "answer": "14", "gold": "d2"},
                 {"_id": "q1", "question": "What does passage number 4 say?", "answer": "28", "gold": "d4"}]
    result = run_model(str(tiny_llama_dir), questions, corpus, top_k=3, new_tokens=2,
                       passages=("retrieved", "gold", "without_gold"))
    assert result["questions"] == 2
    for record, question in zip(result["records"], questions):
        assert len(record["retrieved"]) == 3 and record["gold_retrieved"] == (question["gold"] in record["retrieved"])
        assert {"answer", "gold_answer", "without_gold_answer", "refused", "gold_match"} <= set(record)
    assert result["gold_answer_match"] == sum(r["gold_match"] for r in result["records"]) / 2
    assert result["without_gold_refusals"] == sum(r["refused"] for r in result["records"]) / 2
    plain = run_model(str(tiny_llama_dir), questions, corpus, top_k=3, new_tokens=2)
    assert "gold_answer" not in plain["records"][0] and "without_gold_refusals" not in plain


def test_fact_qa_gold_answers_from_the_gold_passage_and_from_others_alone(tiny_llama_dir):
    from benchmarks.fact_qa_gold import bm25_others
    from benchmarks.fact_qa_gold import run_model as run_gold

    corpus = [{"_id": f"d{i}", "title": f"Title {i}", "text": f"Passage number {i} says {i * 7} things."} for i in range(6)]
    questions = [{"_id": "q0", "question": "What does passage number 2 say?", "answer": "14", "gold": "d2"}]
    others = bm25_others(questions, corpus, 3)
    assert len(others[0]) == 3 and not any(text.startswith("Title 2 ") for text in others[0])
    result = run_gold(str(tiny_llama_dir), questions, corpus, others, new_tokens=2)
    record = result["records"][0]
    assert result["gold_answer_match"] == float(record["match"]) and result["questions"] == 1
    assert result["without_gold_refusals"] == float(record["refused"])
