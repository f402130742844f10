"""Multi-task GRIT training data: relevance judgements, RAG answers in every cache format, inverse-cloze pairs.

A GRIT model used by every component is trained for what each component asks of it, in exactly the
token layout each one builds at inference:

- `PointwiseRecord`: the pointwise relevance prompt `GritReranker` scores (`rerank.pointwise_prompt_ids`),
  answered "yes" or "no";
- `RankingGroup`: one query's relevant passage and several hard negatives, each scored as `GritReranker`
  scores it (`score` "pointwise": log p(yes) - log p(no) of the relevance prompt; "query_likelihood": the
  log-likelihood of the query given the passage prompt) and trained with a ranking loss under a softmax
  over the group (as RankLLaMA-style rerankers are trained), so every step compares passages for one query;
- `RagRecord`: a question answered from passages in one `rag.CacheMode` and cache source. The prompt is
  `rag.build_prompt` (the function `GritGenerator.answer` uses); cached texts are laid out as the KV
  store composes them, each attending only to itself (bidirectionally for the embedding source,
  causally for the causal source), and the suffix attends to everything the composed cache holds;
- inverse-cloze embedding pairs (`inverse_cloze_records`): a sentence of a passage as the query for the
  rest of it, so the embedder also learns queries in other styles than the labelled ones.

`encode_rag` turns a `RagRecord` into one training sequence with its own attention layout
(`GenerativeSequence`), so training sees the states a cached answer really continues from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from grit_components.training.data import EmbeddingRecord
from grit_components.training.questions import SENTENCE_END, leading_sentences

if TYPE_CHECKING:
    from grit_components.grit_model import GritModel

IGNORE_INDEX = -100
RANKING_SCORES = ("pointwise", "query_likelihood")
RAG_FORMATS = ("doc_first", "query_first", "doc", "query", "doc_query", "query_doc", "multi_doc")


@dataclass(frozen=True)
class PointwiseRecord:
    """Is `passage` relevant to `query`? Trained as the answer "yes" or "no" to the reranker's prompt."""

    query: str
    passage: str
    relevant: bool
    dataset: str = "pointwise"


@dataclass(frozen=True)
class RankingGroup:
    """One query's passages to compare: `passages[0]` is relevant, the others are (hard) negatives.

    `score` is the reranker score trained: "pointwise" (yes/no log-odds) or "query_likelihood".
    """

    query: str
    passages: tuple[str, ...]
    dataset: str = "ranking"
    score: str = "pointwise"


@dataclass(frozen=True)
class RagRecord:
    """A question answered from `documents` with a RAG cache format.

    `fmt` is "doc_first" or "query_first" (uncached RAG), "no_retrieval" (no documents) or a cache mode
    ("doc", "query", "doc_query", "query_doc", "multi_doc") with `source` "embedding" or "causal".
    """

    question: str
    documents: tuple[str, ...]
    fmt: str
    source: str
    answer: str
    dataset: str = "rag"


@dataclass
class GenerativeSequence:
    """One training sequence. `blocks` is None for a plain causal sequence; otherwise the attention layout:
    (start, end, visible_from, attention) per cached text, where tokens of [start, end) attend within the
    block ("embedding": all of it, "causal": up to themselves) and later tokens see [visible_from, end)."""

    ids: list[int]
    labels: list[int]
    positions: list[int] | None = None
    blocks: list[tuple[int, int, int, str]] | None = None


def answer_ids(model: GritModel, answer: str) -> list[int]:
    eos = model.tokenizer.eos_token_id
    return model.tokenize(answer) + ([eos] if eos is not None else [])


def encode_pointwise(model: GritModel, record: PointwiseRecord, *, max_passage_tokens: int) -> GenerativeSequence:
    """The reranker's own prompt ids followed by "yes"/"no" and EOS (the only labelled tokens)."""
    from grit_components.rerank import NO_WORDS, YES_WORDS, pointwise_prompt_ids

    prompt = pointwise_prompt_ids(model, record.query, record.passage, max_passage_tokens=max_passage_tokens)
    answer = answer_ids(model, (YES_WORDS if record.relevant else NO_WORDS)[0])
    return GenerativeSequence(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)


def encode_rag(model: GritModel, record: RagRecord) -> GenerativeSequence:
    """The prompt `rag.answer` continues from, laid out as its caches are composed, then the answer."""
    from grit_components.rag import build_prompt

    answer = answer_ids(model, record.answer)
    if record.fmt in ("doc_first", "query_first", "no_retrieval"):
        documents = [] if record.fmt == "no_retrieval" else list(record.documents)
        order = "query_first" if record.fmt == "query_first" else "doc_first"
        prompt = build_prompt(model, record.question, documents, "none", order=order)
        return GenerativeSequence(prompt.suffix_ids + answer, [IGNORE_INDEX] * len(prompt.suffix_ids) + answer)
    prompt = build_prompt(model, record.question, list(record.documents), record.fmt)
    ids: list[int] = []
    positions: list[int] = []
    blocks: list[tuple[int, int, int, str]] = []
    offset = 0  # position of the next token of the composed prompt
    for index, segment in enumerate(prompt.segments):
        drop = 0 if index == 0 else prompt.drop_leading
        # Each cached text was computed on its own from position 0; RoPE is relative, so placing it at
        # `offset - drop` gives the states of the re-rotated cache. Its dropped BOS is seen by the text
        # itself (as when it was cached) but not by what follows (it is not in the composed cache).
        start = len(ids)
        ids += segment
        positions += range(offset - drop, offset - drop + len(segment))
        blocks.append((start, len(ids), start + drop, record.source))
        offset += len(segment) - drop
    suffix = prompt.suffix_ids + answer
    labels = [IGNORE_INDEX] * (len(ids) + len(prompt.suffix_ids)) + answer
    ids += suffix
    positions += range(offset, offset + len(suffix))
    return GenerativeSequence(ids, labels, positions, blocks)


def sequence_mask(sequence: GenerativeSequence, width: int) -> torch.Tensor:
    """(width, width) bool: True where a query row may attend to a key column (padding rows see themselves)."""
    length = len(sequence.ids)
    mask = torch.zeros(width, width, dtype=torch.bool)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    if not sequence.blocks:
        mask[:length, :length] = causal
    else:
        suffix_start = max(end for _, end, _, _ in sequence.blocks)
        for start, end, visible_from, attention in sequence.blocks:
            span = end - start
            mask[start:end, start:end] = (torch.ones(span, span, dtype=torch.bool) if attention == "embedding"
                                          else torch.ones(span, span, dtype=torch.bool).tril())
            mask[suffix_start:length, visible_from:end] = True
        mask[suffix_start:length, suffix_start:length] = causal[suffix_start:, suffix_start:]
    padding = torch.arange(length, width)
    mask[padding, padding] = True  # a fully masked row would give NaN; padding rows are never read
    return mask


def truncate_words(text: str, max_words: int | None) -> str:
    return text if max_words is None else " ".join(text.split()[:max_words])


def pointwise_records(records: Sequence[EmbeddingRecord], *, negatives_per_positive: int = 1, seed: int = 0,
                      dataset: str = "pointwise") -> list[PointwiseRecord]:
    """Balanced relevance judgements: each query's positive and as many of its hard negatives as asked."""
    rng = random.Random(seed)
    out = []
    for record in records:
        query = record.query[1]
        negatives = [text for _, text in record.neg]
        for _, positive in record.pos[:1]:
            out.append(PointwiseRecord(query, positive, True, dataset))
            for negative in rng.sample(negatives, min(negatives_per_positive, len(negatives))):
                out.append(PointwiseRecord(query, negative, False, dataset))
    return out


def ranking_groups(records: Sequence[EmbeddingRecord], *, group_size: int = 4, seed: int = 0,
                   dataset: str = "ranking", score: str = "pointwise") -> list[RankingGroup]:
    """A group per query: its first positive, then `group_size - 1` of its hard negatives (sampled).

    Queries with fewer negatives are skipped, so every group has `group_size` passages (one tensor shape).
    `score`: "pointwise" or "query_likelihood", the reranker score the groups train.
    """
    if score not in RANKING_SCORES:
        raise ValueError(f"score must be one of {list(RANKING_SCORES)}, got {score!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an int, got {type(group_size).__name__}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 (a positive and at least one negative), got {group_size}")
    rng = random.Random(seed)
    out = []
    for record in records:
        negatives = [text for _, text in record.neg]
        if not record.pos or len(negatives) < group_size - 1:
            continue
        out.append(RankingGroup(record.query[1], (record.pos[0][1], *rng.sample(negatives, group_size - 1)), dataset,
                                score))
    return out


def rag_records(records: Sequence[EmbeddingRecord], answers: Sequence[str], *, question: str,
                formats: Sequence[str] = RAG_FORMATS, sources: Sequence[str] = ("embedding", "causal"),
                max_documents: int = 3, max_passage_words: int | None = 120, titles: Mapping[str, str] | None = None,
                untitled: float = 0.5, seed: int = 0, dataset: str = "rag", min_documents: int = 1,
                unanswerable: float = 0.0, evidence: Sequence[str] | None = None,
                unanswerable_twins: bool = False) -> list[RagRecord]:
    """One RAG answer per query, cycling through `formats` (and `sources` for cache formats).

    Every prompt holds the gold passage and `min_documents - 1`..`max_documents - 1` of the query's hard
    negatives as distractors, the gold one at a random place; `multi_doc` always gets at least two passages.
    `titles` maps a passage ("title text", as retrieval indexes it) to its title: in a share `untitled`
    of the records every passage loses its leading title, as passages stored without one look.
    In a share `unanswerable` of the records the gold passage is left out and the answer is
    `templates.NO_ANSWER`; a record whose distractors contain its `evidence` string (by default its answer,
    case-insensitive) keeps its gold passage, so a refusal is never trained where the answer is shown.
    With `unanswerable_twins`, every refusal record is followed by its answerable twin: the same passages
    in the same format, one of them (at random) replaced by the gold passage, answered as usual. The pair
    differs only by the gold passage, so the model learns that the passage decides, not the question or
    the distractors (a model trained on refusals alone also refuses answerable questions).
    """
    from grit_components.templates import NO_ANSWER

    unknown = set(formats) - set(RAG_FORMATS) - {"no_retrieval"}
    if unknown:
        raise ValueError(f"formats: unknown {sorted(unknown)}; choose from {[*RAG_FORMATS, 'no_retrieval']}")
    if "{query}" not in question:
        raise ValueError("question must contain a '{query}' field")
    if not 1 <= min_documents <= max_documents:
        raise ValueError(f"min_documents must be between 1 and max_documents ({max_documents}), got {min_documents}")
    if not 0.0 <= unanswerable < 1.0:
        raise ValueError(f"unanswerable must be in [0, 1), got {unanswerable}")
    if evidence is not None and len(evidence) != len(answers):
        raise ValueError(f"evidence has {len(evidence)} entries for {len(answers)} answers")
    rng = random.Random(seed)
    out = []
    for index, (record, answer) in enumerate(zip(records, answers)):
        fmt = formats[index % len(formats)]
        source = sources[(index // len(formats)) % len(sources)]
        asked = question.format(query=record.query[1])
        strip = titles is not None and rng.random() < untitled
        refuse = unanswerable > 0 and fmt != "no_retrieval" and rng.random() < unanswerable  # no draw at 0: seeds keep

        def passage(text: str) -> str:
            title = (titles or {}).get(text)
            if strip and title and text.startswith(title + " "):
                text = text[len(title) + 1:]
            return truncate_words(text, max_passage_words)

        gold = passage(record.pos[0][1])
        distractors = [passage(text) for _, text in record.neg]
        wanted = rng.randint(max(min_documents, 2 if fmt == "multi_doc" else 1), max(max_documents, 2 if fmt ==
                                                                                        "multi_doc" else 1))
        chosen = rng.sample(distractors, min(wanted - 1, len(distractors)))
        key = (evidence[index] if evidence is not None else answer).lower()
        if refuse and distractors and not any(key in text.lower() for text in distractors):
            # the same number of passages, none of them the gold one
            documents = rng.sample(distractors, min(max(len(chosen) + 1, 2 if fmt == "multi_doc" else 1),
                                                    len(distractors)))
            rng.shuffle(documents)
            if unanswerable_twins:  # drawn only then: the records of a seed without twins stay the same
                out.append(RagRecord(asked, tuple(documents), fmt, source, NO_ANSWER, dataset))
                documents[rng.randrange(len(documents))] = gold  # the answerable twin (the refusal has a copy)
            else:
                answer = NO_ANSWER
        else:
            documents = [gold] + chosen
            rng.shuffle(documents)
        if fmt == "no_retrieval":
            documents = []
        out.append(RagRecord(asked, tuple(documents), fmt, source, answer, dataset))
    return out


CLOZE_BLANK = "____"
CLOZE_QUESTION = 'Which words fill the blank in "{query}"?'
# a number (years, counts, 209,331, 3.5) or a run of capitalised words ("Ursa Minor", "Francisco Pizarro",
# "Cape of Good Hope"): the facts a passage states that a question asks for
_CLOZE_SPAN = re.compile(r"\b\d{1,3}(?:,\d{3})+\b|\b\d+(?:\.\d+)?\b"
                         r"|\b[A-Z][\w'-]*(?:\s+(?:(?:of|the|de|von|van|da|del|la|le)\s+)?[A-Z][\w'-]*)*")
_CLOZE_SKIP = frozenset("A An And As At But By For From He Her His I In It Its On Or She The Their They This These "
                        "Those To We With".split())


def fact_cloze_records(documents: Sequence[tuple[str, str, str]], *, min_words: int = 8,
                       max_words: int | None = None, seed: int = 0,
                       dataset: str = "fact-cloze") -> list[tuple[EmbeddingRecord, str]]:
    """Self-supervised fact questions (cloze questions, as in Lewis et al. 2019, "Unsupervised Question
    Answering by Cloze Translation"): a sentence of a passage with one fact blanked out, answered with it.

    `documents` are (document as indexed, its body, its title). Per document, a random sentence of at least
    `min_words` words with a number or a capitalised name not at its start, not part of the title and not
    repeated in the sentence, is blanked (`CLOZE_BLANK`). Returns (record, answer) pairs: the record's query
    is the blanked sentence and its positive the whole document (mine distractors for it like for any query).
    With `max_words`, only whole sentences within the document's first `max_words` words are used (what a
    prompt that cuts passages to that many words still shows; the title before the body counts).
    """
    rng = random.Random(seed)
    out = []
    for document, body, title in documents:
        sentences = [s for s in leading_sentences(document, body, max_words) if len(s.split()) >= min_words]
        rng.shuffle(sentences)
        for sentence in sentences:
            spans = [span for span in map(_cloze_span, _CLOZE_SPAN.finditer(sentence))
                     if span is not None and sentence.count(span[2]) == 1 and span[2].lower() not in title.lower()
                     and title.lower() not in span[2].lower()]
            if spans:
                start, end, answer = rng.choice(spans)
                blanked = sentence[:start] + CLOZE_BLANK + sentence[end:]
                out.append((EmbeddingRecord((None, blanked), ((None, document),), (), dataset), answer))
                break
    return out


_PRONOUN_START = re.compile(r"^(It|He|She|They|Its|His|Her|Their)\b")


def wh_cloze_question(blanked: str, answer: str, subject: str | None = None) -> str | None:
    """A cloze sentence (`fact_cloze_records`) asked as a question: the blank becomes a question phrase where it
    stands (Lewis et al. 2019's wh-substitution), by what the answer is. A year -> "what year" ("founded in what
    year?"), another number -> "how many" before a noun and "what number" otherwise, a name -> "what"
    ("... with the Canadian province of what to the north and east?"). A leading pronoun becomes `subject` (the
    passage's subject), so the question still says what it asks about among other passages. None when the
    sentence holds no blank, or the blank follows "a"/"an" (a modifier such as a year before a noun)."""
    if blanked.count(CLOZE_BLANK) != 1:
        return None
    if subject:
        blanked = _PRONOUN_START.sub(lambda m: subject if m.group(1) in ("It", "He", "She", "They") else f"{subject}'s",
                                     blanked)
    before, after = blanked.split(CLOZE_BLANK)
    if re.search(r"\b(?:a|an)\s+$", before, re.IGNORECASE):  # a modifier ("an 1865 English novel"): no question
        return None
    if re.fullmatch(r"1[0-9]{3}|20[0-2][0-9]", answer):
        phrase = "what year"
    elif re.fullmatch(r"[\d,.]+", answer):
        # "how many" before a plural noun, perhaps after one modifier ("___ described species"), not before "as"
        phrase = "how many" if re.match(r"\s+(?:[a-z-]+\s+)?[a-z]{3,}(?<![su])s\b", after) else "what number"
    else:
        phrase = "what"
    if not before:
        phrase = phrase.capitalize()
    return f"{before}{phrase}{after}".rstrip().rstrip(".!;:,") + "?"


def _cloze_span(match: re.Match) -> tuple[int, int, str] | None:
    """(start, end, text) of a usable cloze answer, without a possessive ending; None when the match starts
    the sentence, is a function word, a one- or two-letter abbreviation (AD, BC) or a part of a longer name
    ("One Thousand" of "One Thousand and One Nights")."""
    start, text, sentence = match.start(), match.group(), match.string
    text = re.sub(r"(?:'s|')$", "", text)
    end = start + len(text)
    if start == 0 or text in _CLOZE_SKIP or (text[0].isupper() and len(text) < 3):
        return None
    if re.match(r"\s+(?:and|of|&)\s+[A-Z]", sentence[end:]) or re.search(r"[A-Z][\w'-]*\s+(?:and|of|&)\s+$",
                                                                          sentence[:start]):
        return None
    return start, end, text




def inverse_cloze_records(passages: Sequence[str], *, keep_sentence: float = 0.1, min_words: int = 5,
                          seed: int = 0, dataset: str = "inverse-cloze") -> list[EmbeddingRecord]:
    """Self-supervised pairs (inverse cloze task): a random sentence of a passage is the query, the passage
    without it (kept in it with probability `keep_sentence`) the positive. Passages of one sentence are skipped."""
    rng = random.Random(seed)
    out = []
    for passage in passages:
        sentences = [s for s in SENTENCE_END.split(passage.strip()) if s]
        if len(sentences) < 2:
            continue
        choice = rng.randrange(len(sentences))
        query = sentences[choice]
        if len(query.split()) < min_words:
            continue
        rest = sentences if rng.random() < keep_sentence else sentences[:choice] + sentences[choice + 1:]
        out.append(EmbeddingRecord((None, query), ((None, " ".join(rest)),), (), dataset))
    return out
