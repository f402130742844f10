"""Questions of many forms built from passages (training.questions) and the qa_forms training source."""

from __future__ import annotations

from collections import Counter

import pytest

from grit_components.templates import NO_ANSWER
from grit_components.training import EmbeddingRecord
from grit_components.training.config import load_config
from grit_components.training.questions import QUESTION_KINDS, interleave_kinds, passage_questions
from grit_components.training.tasks import rag_records
from tests._models import write_corpus_source

PASSAGES = {
    "Parthenon": "The Parthenon is a former temple on the Athenian Acropolis, Greece, that was dedicated to the "
                 "goddess Athena. It was built in 447 BC. Its construction was paid for by the Delian League.",
    "Alice's Adventures in Wonderland": "Alice's Adventures in Wonderland is an 1865 English children's novel. "
                                        "It was written by Lewis Carroll.",
    "Venus de Milo": "The Venus de Milo is an ancient Greek sculpture. It was discovered in 1820 on the island "
                     "of Milos.",
    "Stuttgart": "Stuttgart is the capital and largest city of the German state of Baden-Württemberg. It has a "
                 "population of 613,111 as of 2023.",
    "Basil": "Basil is a culinary herb of the family Lamiaceae. It is native to tropical regions from Central "
             "Africa to Southeast Asia.",
    "Lake Baikal": "Lake Baikal is the deepest lake in the world, located in southern Siberia.",
    "Glucose": "Glucose is a sugar with the molecular formula C6H12O6. It is made from water and carbon dioxide "
               "during photosynthesis by plants.",
    "Sahara": "The Sahara is a desert spanning North Africa. The desert is dry because the Hadley cell keeps "
              "the air descending over it.",
}


def triples(passages=PASSAGES):
    return [(f"{title} {text}", text, title) for title, text in passages.items()]


def test_every_answer_is_stated_by_its_passage_and_every_question_names_the_subject():
    questions = passage_questions(triples(), seed=0, per_passage=10)
    assert {q.kind for q in questions} >= {"definition", "who", "when", "where", "why", "how", "number",
                                           "superlative", "yes_no"}
    for q in questions:
        title = q.document.split(" ")[0]
        if q.kind == "yes_no":
            assert q.answer in ("Yes", "No") and q.target.startswith(q.answer)
        else:
            assert q.answer.lower() in q.document.lower(), q
            assert q.answer in q.target
        assert q.question.endswith("?")
        if q.kind not in ("superlative", "why"):
            assert title.lower().strip("'s") in q.question.lower(), q  # the subject is named, not "it"


def test_question_forms_on_known_sentences():
    by = {(q.document.split(" ")[0], q.kind): q for q in passage_questions(triples(), seed=0, per_passage=10)}
    assert by[("Alice's", "who")].answer == "Lewis Carroll"
    assert by[("Alice's", "who")].question in ("Who wrote Alice's Adventures in Wonderland?",
                                               "By whom was Alice's Adventures in Wonderland written?")
    assert by[("Venus", "when")].answer == "1820" and "discovered" in by[("Venus", "when")].question
    assert by[("Stuttgart", "number")].answer == "613,111"
    assert by[("Stuttgart", "number")].question == "What was the population of Stuttgart in 2023?"
    assert by[("Basil", "where")].answer.startswith("tropical regions")
    assert by[("Lake", "superlative")].question == "What is the deepest lake in the world?"
    assert by[("Lake", "superlative")].answer == "Lake Baikal"
    assert by[("Glucose", "how")].answer.startswith("water and carbon dioxide")
    assert by[("Sahara", "why")].answer.startswith("the Hadley cell")
    definition = by[("Parthenon", "definition")]
    assert definition.answer == "a former temple on the Athenian Acropolis, Greece" and "the Parthenon" in definition.question


def test_yes_no_questions_are_true_or_use_another_passages_category():
    answers = Counter()
    for seed in range(30):
        for q in passage_questions(triples(), kinds=["yes_no"], seed=seed):
            answers[q.answer] += 1
            if q.answer == "Yes":
                assert q.question.lower().split(" ", 2)[2].rstrip("?").split(" ", q.question.count(" "))[-1] in \
                    q.document.lower()
            else:
                assert q.target.startswith("No, ")
    assert answers["Yes"] > 20 and answers["No"] > 20


def test_sentences_past_max_words_and_unknown_kinds():
    cut = passage_questions(triples({"Venus de Milo": PASSAGES["Venus de Milo"]}), max_words=14, per_passage=10)
    assert cut and all(q.kind != "when" for q in cut)  # the date is in the second sentence, past 14 words
    with pytest.raises(ValueError, match="kinds"):
        passage_questions(triples(), kinds=["definition", "riddle"])
    assert "cloze" in QUESTION_KINDS


def test_interleaving_balances_the_kinds_of_any_prefix():
    questions = passage_questions(triples(), seed=0, per_passage=10)
    mixed = interleave_kinds(questions)
    assert sorted(map(id, mixed)) == sorted(map(id, questions))
    kinds = {q.kind for q in questions}
    assert {q.kind for q in mixed[:len(kinds)]} == kinds


def _record(query, gold, negatives):
    return EmbeddingRecord((None, query), ((None, gold),), tuple((None, n) for n in negatives), "t")


def test_unanswerable_records_leave_the_gold_passage_out_and_refuse():
    records = [_record(f"Where is thing {i}?", f"Thing {i} is in Place {i}.", [f"Other {i}.{j} is elsewhere." for j in
                                                                               range(4)]) for i in range(200)]
    out = rag_records(records, [f"Place {i}" for i in range(200)], question="{query}", formats=["doc_first", "multi_doc"],
                      min_documents=3, max_documents=5, unanswerable=0.3, seed=1)
    refused = [r for r in out if r.answer == NO_ANSWER]
    assert 40 < len(refused) < 80
    for index, record in enumerate(out):
        assert 3 <= len(record.documents) <= 5
        gold = f"Thing {index} is in Place {index}."
        assert (gold in record.documents) == (record.answer != NO_ANSWER)
    # a distractor that states the answer: never a refusal
    shown = [_record("Where is X?", "X is in Paris.", ["Paris is big.", "Y is in Paris."]) for _ in range(50)]
    assert NO_ANSWER not in {r.answer for r in rag_records(shown, ["Paris"] * 50, question="{query}", unanswerable=0.9)}
    # without unanswerable, the random draws (and so older recipes' data) are unchanged
    plain = rag_records(records, ["x"] * 200, question="{query}", seed=3)
    assert plain == rag_records(records, ["x"] * 200, question="{query}", seed=3, unanswerable=0.0)
    with pytest.raises(ValueError, match="min_documents"):
        rag_records(records, ["x"] * 200, question="{query}", min_documents=4, max_documents=3)
    with pytest.raises(ValueError, match="unanswerable"):
        rag_records(records, ["x"] * 200, question="{query}", unanswerable=1.0)


def test_qa_forms_source_builds_balanced_questions_outside_the_excluded_corpus(tmp_path):
    from grit_components.training.run import build_records

    corpus = [(f"d{i}", title, text) for i, (title, text) in enumerate(PASSAGES.items())]
    config = write_corpus_source(tmp_path, corpus, excluded=1, qrel_doc="d0", task="qa_forms")
    _, records = build_records(config)
    assert len(records) >= 10
    assert not any("Parthenon" in d for r in records for d in r.documents if r.answer != NO_ANSWER and
                   d.startswith("Parthenon"))
    questions = [r.question for r in records]
    assert any(q.startswith("Which words fill the blank") for q in questions)  # cloze questions are mixed in
    assert any(q.startswith(("Who ", "By whom")) for q in questions) and any(q.startswith(("When ", "In what year")) for q in questions)
    for record in records:
        assert record.answer.rstrip(".").lower() in " ".join(record.documents).lower() or \
            record.answer.startswith(("Yes", "No", "Because", "It is named")) or record.answer[:-1] in record.question or \
            record.answer.split(" ")[0] in " ".join(record.documents)
    for bad, message in (("max_documents: 3,", "max_documents: 3, min_documents: 4,"),
                         ("max_documents: 3,", "max_documents: 3, unanswerable: 1.5,"),
                         ("max_documents: 3,", "max_documents: 3, kinds: [riddle],")):
        (tmp_path / "bad.yaml").write_text((tmp_path / "train.yaml").read_text().replace(bad, message))
        with pytest.raises(ValueError, match=message.split(",")[1].split(":")[0].strip()):
            load_config(tmp_path / "bad.yaml")


def test_unanswerable_twins_pair_each_refusal_with_the_same_passages_and_the_gold_one():
    records = [_record(f"Where is thing {i}?", f"Thing {i} is in Place {i}.", [f"Other {i}.{j} is elsewhere." for j in
                                                                               range(4)]) for i in range(200)]
    answers = [f"Place {i}" for i in range(200)]
    kwargs = dict(question="{query}", formats=["doc_first", "multi_doc", "doc"], min_documents=2, max_documents=4,
                  unanswerable=0.3, seed=1)
    single = rag_records(records, answers, **kwargs)
    paired = rag_records(records, answers, unanswerable_twins=True, **kwargs)
    refusals = [i for i, r in enumerate(paired) if r.answer == NO_ANSWER]
    assert len(paired) == 200 + len(refusals) and 40 < len(refusals) < 80
    for i in refusals:
        refusal, twin = paired[i], paired[i + 1]
        assert twin.answer != NO_ANSWER and twin.question == refusal.question and twin.fmt == refusal.fmt
        assert twin.source == refusal.source and len(twin.documents) == len(refusal.documents)
        gold = f"Thing {int(refusal.question.split()[-1][:-1])} is in Place {int(refusal.question.split()[-1][:-1])}."
        assert gold in twin.documents and gold not in refusal.documents
        # the same passages at the same places but one, which is now the gold one
        assert sum(a != b for a, b in zip(twin.documents, refusal.documents)) == 1
    # twins only draw after a refusal: up to and including the first refusal both runs made the same records
    first = refusals[0]
    assert len(single) == 200 and single[: first + 1] == paired[: first + 1]
    assert single[first].answer == NO_ANSWER and paired[first + 1] not in single


@pytest.mark.parametrize("blanked, answer, question", [
    ("Venus de Milo was discovered in ____ on the island of Milos.", "1820",
     "Venus de Milo was discovered in what year on the island of Milos?"),
    ("It has a population of ____ as of 2023.", "613,111", "Stuttgart has a population of what number as of 2023?"),
    ("The genus has ____ described species.", "1,500", "The genus has how many described species?"),
    ("Its capital is ____.", "Fuzhou", "Stuttgart's capital is what?"),
    ("____ took Helen from her husband Menelaus.", "Paris", "What took Helen from her husband Menelaus?"),
    ("No blank here.", "x", None),
    ("It is an ____ English novel.", "1865", None),
])
def test_a_cloze_sentence_is_asked_as_a_wh_question_where_its_blank_stands(blanked, answer, question):
    from grit_components.training.tasks import CLOZE_BLANK, wh_cloze_question

    assert wh_cloze_question(blanked.replace("____", CLOZE_BLANK), answer, "Stuttgart") == question


def test_qa_forms_trains_wh_cloze_questions_only_when_listed(tmp_path):
    """kinds: [..., wh_cloze] adds cloze sentences asked as questions, whose answer a passage states; without it
    (the default kinds) the data is what the recipes written before it made."""
    import dataclasses

    from grit_components.training.run import build_records

    corpus = [(f"d{i}", title, text) for i, (title, text) in enumerate(PASSAGES.items())]
    config = write_corpus_source(tmp_path, corpus, excluded=1, qrel_doc="d0", task="qa_forms")
    source = config.data.generative[0]
    _, default = build_records(config)
    config.data.generative[0] = dataclasses.replace(source, kinds=list(QUESTION_KINDS))
    assert build_records(config)[1] == default
    config.data.generative[0] = dataclasses.replace(source, kinds=[*QUESTION_KINDS, "wh_cloze"])
    _, records = build_records(config)
    wh = [r for r in records if r.question.endswith("?") and " what" in r.question and not r.question.startswith(
        ("What ", "Who ", "When ", "Where ", "Which ", "How ", "In what", "Can you"))]
    assert len(wh) >= 3 and {r.question for r in default} < {r.question for r in records}
    for record in wh:
        assert record.answer.lower() in " ".join(record.documents).lower()
        assert not record.question.startswith(("It ", "Its ", "He ", "She "))  # the subject is named instead
    config.data.generative[0] = dataclasses.replace(source, kinds=["wh_cloze"])  # alone: only wh-questions
    assert all(" what" in r.question.lower() for r in build_records(config)[1])


def test_qa_forms_embedding_source_pairs_each_question_with_its_passage(tmp_path):
    """Embedding task qa_forms: questions of many forms as retrieval queries, each paired with the passage it is
    asked of (never one of exclude_corpus_file), with mined negatives from the rest of the corpus."""
    from grit_components.training.run import build_records

    corpus = [(f"d{i}", title, text) for i, (title, text) in enumerate(PASSAGES.items())]
    write_corpus_source(tmp_path, corpus, excluded=1, qrel_doc="d0", task="qa_forms")
    (tmp_path / "embed.yaml").write_text(
        "model: none\noutput_dir: run\ndata:\n  embedding:\n"
        f"    - {{beir: {tmp_path}, task: qa_forms, name: qa-questions, corpus_file: corpus.jsonl,\n"
        "       exclude_corpus_file: eval.jsonl, mine_negatives: {method: bm25, num_negatives: 2}}\n")
    records, _ = build_records(load_config(tmp_path / "embed.yaml"))
    texts = {f"{title} {text}": title for title, text in PASSAGES.items()}
    assert len(records) >= 5 and all(r.dataset == "qa-questions" for r in records)
    assert len({r.query[1] for r in records}) == len(records)
    starts = Counter(r.query[1].split()[0] for r in records)
    assert len(starts) >= 3  # several forms ("What", "Who", "In", "Is" ...), not one template
    for record in records:
        (_, passage), = record.pos
        title = texts[passage]  # an exact passage of the corpus ...
        assert title != "Parthenon"  # ... never an excluded one
        words = {w.strip("?,.'").lower() for w in record.query[1].split() if len(w) > 4}
        assert words & {w.strip(",.'").lower() for w in passage.split()}, (record.query[1], passage)  # asked of it
        assert record.neg and all(n[1] != passage and n[1] in texts for n in record.neg)
    for bad in ("kinds: [cloze]", "kinds: [riddle]", "skip: -1"):
        (tmp_path / "bad.yaml").write_text((tmp_path / "embed.yaml").read_text().replace(
            "name: qa-questions,", f"name: qa-questions, {bad},"))
        with pytest.raises(ValueError, match=bad.split(":")[0]):
            load_config(tmp_path / "bad.yaml")
