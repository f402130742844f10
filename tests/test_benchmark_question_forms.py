"""benchmarks/question_forms.py: the scoring rule per kind, the questions drawn per kind, the passage mixes, and
a run on a tiny random model (mechanics)."""

from __future__ import annotations

import pytest

from benchmarks.question_forms import KINDS, is_right, make_questions, mixed_passages, run_model

CORPUS = [
    {"_id": "d0", "title": "Aeneid", "text": "The Aeneid is a Latin epic poem written by Virgil between 29 and 19 BC."},
    {"_id": "d1", "title": "Manaus", "text": "Manaus is the capital of the state of Amazonas. It has a population of "
                                            "2,219,580 people. Manaus is located in the Amazon rainforest."},
    {"_id": "d2", "title": "Stanford University", "text": "Stanford University is a private research university. "
                                                          "Stanford University was founded in 1885 by Leland Stanford."},
    {"_id": "d3", "title": "Rock dove", "text": "The rock dove is a member of the bird family Columbidae."},
    {"_id": "d4", "title": "Syngas", "text": "Syngas is a fuel gas mixture. Syngas is used for producing ammonia."},
]


@pytest.mark.parametrize("reply, answer, kind, right", [
    ("Yes, it is.", "Yes", "yes_no", True),
    ("No, the rock dove is a member of the bird family Columbidae.", "Yes", "yes_no", False),
    ("yes", "Yes", "yes_no", True),
    ("It is not clear. Yes.", "Yes", "yes_no", False),          # the first word decides
    ("The Aeneid is a Latin epic poem.", "a Latin epic poem written by Virgil", "definition", True),
    ("A poem.", "a Latin epic poem", "definition", False),
    ("1,500 species", "1500", "number", True),
    ("About 15 species", "1500", "number", False),
    ("It was founded in 1885.", "1885", "when", True),
    ("virgil.", "Virgil", "who", True),
])
def test_a_reply_is_right_by_its_kinds_rule(reply, answer, kind, right):
    assert is_right(reply, answer, kind) is right


def test_questions_are_drawn_per_kind_from_their_own_passage():
    questions = make_questions(CORPUS, per_kind=1)
    kinds = [q["kind"] for q in questions]
    assert len(kinds) == len(set(kinds)) and set(kinds) <= set(KINDS) and len(kinds) >= 3
    assert kinds == sorted(kinds, key=KINDS.index)  # grouped in KINDS order
    text = {d["_id"]: f"{d['title']} {d['text']}" for d in CORPUS}
    for q in questions:
        assert q["kind"] == "yes_no" or q["answer"].lower() in text[q["gold"]].lower()
    assert make_questions(CORPUS, per_kind=1) == questions  # seeded


def test_mixed_passages_hold_the_gold_one_among_distractors():
    questions = make_questions(CORPUS, per_kind=1)
    mixed = mixed_passages(questions, CORPUS, distractors=2)
    text = {d["_id"]: f"{d['title']} {d['text']}" for d in CORPUS}
    for q, passages in zip(questions, mixed):
        assert len(passages) == 3 and passages.count(text[q["gold"]]) == 1


def test_run_scores_every_answer_per_kind(tiny_llama_dir):
    questions = make_questions(CORPUS, per_kind=1)
    result = run_model(str(tiny_llama_dir), questions, CORPUS, mixed_passages(questions, CORPUS, 1), new_tokens=2)
    assert result["questions"] == len(questions)
    for record in result["records"]:
        assert record["gold_right"] == is_right(record["gold_reply"], record["answer"], record["kind"])
        assert record["mixed_right"] == is_right(record["mixed_reply"], record["answer"], record["kind"])
    gold = result["summary"]["gold"]
    assert gold["all"] == sum(r["gold_right"] for r in result["records"]) / len(questions)
    assert set(gold) == {q["kind"] for q in questions} | {"all"}
    assert "mixed" in result["summary"]
    alone = run_model(str(tiny_llama_dir), questions[:1], CORPUS, None, new_tokens=2)
    assert set(alone["summary"]) == {"gold"} and "mixed_reply" not in alone["records"][0]
