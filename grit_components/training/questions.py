"""Questions of many forms built from passages alone, for RAG training beyond one question template.

A small model answers well only the question forms it was trained on. These generators turn the sentences
of an encyclopaedic passage into extractive questions whose answer the passage states verbatim (templated
question generation, in the spirit of Heilman and Smith 2010, without a parser): who / what / when / where
facts, "why" (a stated reason) and "how" (a stated process or material), numbers and dates, definitions
whose answer is a phrase of the passage rather than its title, superlatives whose answer is the title,
yes/no questions (true, and false with another passage's category), and cloze questions
(`tasks.fact_cloze_records`). Each question names the passage's subject, so it stays answerable when the
passage sits among distractors; `unanswerable` questions are made later by leaving the passage out.

Every template was checked on WikiDesc's corpus; a sentence that fits no template is skipped, never forced.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

QUESTION_KINDS = ("definition", "who", "when", "where", "why", "how", "number", "superlative", "yes_no", "cloze")
# the kinds `passage_questions` writes from templates ("cloze" sentences come from `tasks.fact_cloze_records`)
TEMPLATED_KINDS = tuple(k for k in QUESTION_KINDS if k != "cloze")
# kinds a `qa_forms` source trains only when it lists them (the default `kinds` stays QUESTION_KINDS, so the
# recipes written before them make the same data): "wh_cloze", a cloze sentence asked as a question
# (`tasks.wh_cloze_question`)
OPTIONAL_KINDS = ("wh_cloze",)
ALL_KINDS = QUESTION_KINDS + OPTIONAL_KINDS

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_PRONOUNS = {"it": "it", "he": "he", "she": "she", "they": "they"}
_NUMBER_WORDS = ("two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen twenty "
                 "thirty forty fifty hundred").split()
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|" + "|".join(_NUMBER_WORDS) + r")"
_YEAR = r"(?:1[0-9]{3}|20[0-2][0-9])"
_MONTH = r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE = rf"(?:(?:\d{{1,2}} {_MONTH}|{_MONTH} \d{{1,2}},?) {_YEAR}|{_MONTH} {_YEAR}|{_YEAR})"
_NAME = r"[A-Z][\w'.-]*(?:\s+(?:(?:of|the|de|von|van|da|del|la|le|and)\s+)?[A-Z][\w'.-]*)*"
# active past tense of a passive participle ("was written by" -> "Who wrote")
_ACTIVE = {"written": "wrote", "directed": "directed", "composed": "composed", "designed": "designed",
           "painted": "painted", "built": "built", "developed": "developed", "created": "created",
           "published": "published", "founded": "founded", "discovered": "discovered", "invented": "invented",
           "produced": "produced", "established": "established", "described": "described", "drawn": "drew",
           "sung": "sang", "performed": "performed", "introduced": "introduced", "proposed": "proposed",
           "named": "named", "formulated": "formulated", "coined": "coined", "led": "led", "owned": "owned"}
_HAVE = {"has": ("does", "have"), "had": ("did", "have"), "contains": ("does", "contain"),
         "contained": ("did", "contain"), "comprises": ("does", "comprise"), "includes": ("does", "include"),
         "included": ("did", "include"), "have": ("do", "have"), "contain": ("do", "contain")}


@dataclass(frozen=True)
class PassageQuestion:
    """An extractive question about `document`: `answer` is what a correct reply contains (a phrase of the
    passage, or "Yes"/"No"), `target` the reply trained (the answer, or a short sentence around it)."""

    question: str
    answer: str
    target: str
    kind: str
    document: str


def leading_sentences(document: str, body: str, max_words: int | None) -> list[str]:
    """The sentences of `body` that a prompt cutting `document` (its indexed text, title included) to its
    first `max_words` words still shows whole; all of them with no limit."""
    words = body.split()
    keep = len(words) if max_words is None else max_words - (len(document.split()) - len(words))
    sentences, seen = [], 0
    for sentence in SENTENCE_END.split(" ".join(words)):
        seen += len(sentence.split())
        if seen > keep:
            break
        sentences.append(sentence)
    return sentences


def passage_subject(title: str) -> str:
    """A title as a sentence names it: without a disambiguation in parentheses ("Mercury (planet)")."""
    return re.sub(r"\s*\([^)]*\)\s*$", "", title).strip()


def _names_subject(head: str, subject: str) -> bool:
    """Whether a sentence's subject phrase is the passage's subject (its name, with or without an article)
    or a pronoun standing for it."""
    head = head.strip()
    lowered = re.sub(r"^(?:the|a|an)\s+", "", head.lower())
    return lowered == re.sub(r"^(?:the|a|an)\s+", "", subject.lower()) or head.lower() in _PRONOUNS


def _clean(phrase: str, max_words: int = 14) -> str | None:
    """A phrase cut at its first clause break, without trailing punctuation; None when empty or too long."""
    phrase = re.split(r"[;:]|,\s+(?:which|who|that|where|while|and|but|although|whose)\b|\s+\(", phrase)[0]
    phrase = phrase.strip().rstrip(".,")
    words = phrase.split()
    if not words or len(words) > max_words:
        return None
    return phrase


def _inner(name: str) -> str:
    """A name as it reads inside a sentence: a leading article in lower case ("the Great Wall of China")."""
    return re.sub(r"^(The|A|An)\s", lambda m: m.group(1).lower() + " ", name.strip())


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


_CATEGORY_STOP = frozenset("in at from that which who whose with for made on by to used and or located found "
                           "consisting known where between built created written during native based".split())


def _category(words: Sequence[str]) -> str | None:
    """The head noun phrase of "a Y ...": up to the first preposition or relative word (one "of" kept)."""
    kept: list[str] = []
    seen_of = False
    for index, word in enumerate(words[:8]):
        bare = word.strip(",.;:()").lower()
        if (index > 0 and bare.endswith(("ing", "ed")) and not word.endswith("-")) or bare in _CATEGORY_STOP or (bare == "of" and seen_of) or word != word.strip(",.;:()"):
            if word != word.strip(",.;:()") and bare not in _CATEGORY_STOP and bare != "of":
                kept.append(word.strip(",.;:()"))
            break
        seen_of = seen_of or bare == "of"
        kept.append(word)
    while kept and kept[-1].lower() in ("the", "a", "an", "of"):
        kept.pop()
    return " ".join(kept) if kept else None


def _definition(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.match(r"^(.{1,80}?),?\s+(?:\([^)]*\)\s+)?(is|was|are|were)\s+((?:a|an|the|one of the)\s+[^.]+)",
                     sentence)
    if not match or not _names_subject(match.group(1), subject) or match.group(1).lower() in _PRONOUNS:
        return []
    phrase = _clean(match.group(3), 16)
    if phrase is None or len(phrase.split()) < 3:
        return []
    verb = match.group(2)
    name = _inner(match.group(1))
    question = rng.choice([f"What {verb} {name}?", f"Can you tell me what {name} {verb}?",
                           f"What kind of thing {verb} {name}?"])
    return [("definition", question, phrase, f"{_capital(name)} {verb} {phrase}.")]


def _yes_no(sentence: str, subject: str, rng: random.Random,
            other: str | None) -> list[tuple[str, str, str, str]]:
    """"Is X a Y?" over the passage's own category (yes) or another passage's (no)."""
    match = re.match(r"^(.{1,80}?),?\s+(?:\([^)]*\)\s+)?(is|was)\s+(an?)\s+([^,.;()]+)", sentence)
    if not match or not _names_subject(match.group(1), subject) or match.group(1).lower() in _PRONOUNS:
        return []
    name, verb = _inner(match.group(1)), match.group(2)
    category = _category(match.group(4).split())
    if category is None:
        return []
    truth = f"{match.group(3)} {category}"
    if other and rng.random() < 0.5 and other.lower() != truth.lower():
        question = f"{verb.capitalize()} {name} {other}?"
        return [("yes_no", question, "No", f"No, {name} {verb} {truth}.")]
    question = f"{verb.capitalize()} {name} {truth}?"
    return [("yes_no", question, "Yes", f"Yes, {name} {verb} {truth}.")]


def category_of(sentence: str) -> str | None:
    """"a Y" of a first sentence "X is a Y ...", for false yes/no questions about another passage."""
    match = re.match(r"^.{1,80}?\s+(?:is|was)\s+(an?)\s+([^,.;()]+)", sentence)
    category = _category(match.group(2).split()) if match else None
    return f"{match.group(1)} {category}" if category else None


def _by_agent(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(rf"^(.{{1,80}}?),?\s+(?:is|was|were|are|has been|had been)\s+(?:\w+ly\s+)?"
                      rf"({'|'.join(_ACTIVE)})\s+by\s+(?:the\s+)?({_NAME})", sentence)
    if not match or not _names_subject(match.group(1), subject):
        return []
    participle, agent = match.group(2), match.group(3).rstrip(".")
    if participle == "named" or re.search(r"\b[A-Z]$", agent):  # cut after an initial ("David O. Selznick")
        return []
    name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
    question = rng.choice([f"Who {_ACTIVE[participle]} {name}?", f"By whom was {name} {participle}?"])
    return [("who", question, agent, f"{agent}.")]


def _named_after(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(r"^(.{1,80}?),?\s+(?:is|was|are|were)\s+named\s+(?:after|for)\s+([^,.;(]+)", sentence)
    if not match or not _names_subject(match.group(1), subject):
        return []
    phrase = _clean(match.group(2), 10)
    if phrase is None:
        return []
    name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
    return [("who", f"Who or what is {name} named after?", phrase, f"It is named after {phrase}.")]


def _when(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    out = []
    match = re.search(rf"^(.{{1,80}}?),?\s+(was|were)\s+(?:\w+ly\s+)?(\w+ed|built|written|founded|held|"
                      rf"begun|made|drawn|sung)\s+(?:[^,.;]{{0,40}}?\s)?(?:in|on)\s+({_DATE})\b", sentence)
    if match and _names_subject(match.group(1), subject):
        name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
        verb, participle, date = match.group(2), match.group(3), match.group(4)
        question = rng.choice([f"When {verb} {name} {participle}?", f"In what year {verb} {name} {participle}?"
                               if re.fullmatch(_YEAR, date) else f"When {verb} {name} {participle}?"])
        out.append(("when", question, date, f"{date}."))
    life = re.search(rf"^({_NAME})\s+\((?:born\s+)?({_DATE})\s*[–-]\s*({_DATE})\)", sentence)
    if life and _names_subject(life.group(1), subject):
        name = life.group(1)
        if rng.random() < 0.5:
            out.append(("when", f"When was {name} born?", life.group(2), f"{life.group(2)}."))
        else:
            out.append(("when", f"When did {name} die?", life.group(3), f"{life.group(3)}."))
    born = re.search(rf"^({_NAME})\s+\(born\s+({_DATE})\)", sentence)
    if born and _names_subject(born.group(1), subject):
        out.append(("when", f"When was {born.group(1)} born?", born.group(2), f"{born.group(2)}."))
    return out


def _where(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(r"^(.{1,80}?),?\s+(is|was|are|were)\s+(?:\w+ly\s+)?(located|situated|found|born|"
                      r"native|endemic|spoken)\s+(?:to\s+|in\s+|on\s+|at\s+)(?:the\s+)?([^,.;(]+)", sentence)
    if not match or not _names_subject(match.group(1), subject):
        return []
    phrase = _clean(match.group(4), 8)
    if phrase is None or not re.search(r"[A-Z]", phrase):
        return []
    name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
    verb, how = match.group(2), match.group(3)
    question = {"native": f"Where {verb} {name} native to?", "endemic": f"Where {verb} {name} endemic to?",
                "spoken": f"Where {verb} {name} spoken?", "born": f"Where {verb} {name} born?"}.get(
        how, rng.choice([f"Where {verb} {name} {how}?", f"In which place {verb} {name} {how}?"]))
    return [("where", question, phrase, f"{phrase}.")]


def _why(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(r"^([^,;]{12,120}?),?\s+(because|due to|as a result of|owing to)\s+([^.;]+)", sentence)
    if not match:
        return []
    clause, connector, reason = match.group(1).strip(), match.group(2), _clean(match.group(3), 16)
    if reason is None or len(reason.split()) < 2 or not re.search(r"\b(?:is|was|are|were|has|have|had|\w+ed)\b",
                                                                   clause):
        return []
    head = clause.split()[0]
    if head in ("Their", "Its", "His", "Her", "This") or clause.split()[-1] in ("is", "was", "are", "were", "called",
                                                                                 "named", "known", "as"):
        return []
    if head.lower() in _PRONOUNS:
        clause = subject + clause[len(head):]
    if head in ("The", "A", "An", "These", "Many", "Some", "Most", "In", "As"):
        clause = clause[0].lower() + clause[1:]
    question = rng.choice([f"What is the reason that {clause}?", f"Why is it that {clause}?"])
    return [("why", question, reason, f"Because {reason}." if connector == "because" else f"Because of {reason}.")]


def _how(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(r"^(.{1,80}?),?\s+(is|are|was|were)\s+(?:\w+ly\s+)?(made|produced|obtained|formed|derived|"
                      r"prepared|caused|used)\s+(from|by|of|to|for)\s+([^.;]+)", sentence)
    if not match or not _names_subject(match.group(1), subject):
        return []
    phrase = _clean(match.group(5), 14)
    if phrase is None or len(phrase.split()) < 2:
        return []
    name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
    verb, participle, preposition = match.group(2), match.group(3), match.group(4)
    target = f"{_capital(name)} {verb} {participle} {preposition} {phrase}."
    if participle == "used":
        question = f"What {verb} {name} used to do?" if preposition == "to" else f"What {verb} {name} used {preposition}?"
        return [("how", question, phrase, target)]
    question = rng.choice([f"How {verb} {name} {participle}?", f"What {verb} {name} {participle} {preposition}?"])
    return [("how", question, phrase, target)]


def _number(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    out = []
    population = re.search(rf"population of (?:about |approximately |around |over |more than |nearly )?"
                           rf"({_NUMBER}(?: million| billion)?)", sentence)
    if population:
        year = re.search(rf"\b(?:in|as of|at the)\s+(?:the\s+)?({_YEAR})", sentence)
        when = f" in {year.group(1)}" if year else ""
        out.append(("number", f"What was the population of {subject}{when}?" if when else
                    f"What is the population of {subject}?", population.group(1), f"{population.group(1)}."))
    match = re.search(rf"^(.{{1,60}}?)\s+({'|'.join(_HAVE)})\s+(?:about |approximately |around |over |more than |"
                      rf"nearly |some |at least )?({_NUMBER})\s+((?:[a-z-]+\s+){{0,2}}[a-z-]+s)\b", sentence)
    if match and _names_subject(match.group(1), subject):
        name = _inner(subject if match.group(1).lower() in _PRONOUNS else match.group(1))
        auxiliary, verb = _HAVE[match.group(2)]
        if match.group(1).lower() == "they" or match.group(2) in ("have", "contain"):
            auxiliary = "do" if auxiliary == "does" else auxiliary
        out.append(("number", f"How many {match.group(4)} {auxiliary} {name} {verb}?", match.group(3),
                    f"{match.group(3)}."))
    return out


def _superlative(sentence: str, subject: str, rng: random.Random) -> list[tuple[str, str, str, str]]:
    match = re.search(r"^(.{1,80}?),?\s+(is|was)\s+(the\s+(?:\w+est|most\s+\w+|largest|oldest|first|only)\s+"
                      r"[^,.;(]+)", sentence)
    if not match or not _names_subject(match.group(1), subject):
        return []
    phrase = _clean(match.group(3), 12)
    if phrase is None or len(phrase.split()) < 3:
        return []
    verb = match.group(2)
    return [("superlative", f"What {verb} {phrase}?", subject, f"{_capital(_inner(subject))}.")]


def passage_questions(documents: Sequence[tuple[str, str, str]], *, max_words: int | None = None,
                      kinds: Sequence[str] = QUESTION_KINDS, seed: int = 0,
                      per_passage: int = 2) -> list[PassageQuestion]:
    """Templated questions over `documents` ((document as indexed, body, title) triples, as for
    `fact_cloze_records`), at most `per_passage` of them per passage, each of a different kind.

    With `max_words`, only sentences within the document's first `max_words` words are used (what a prompt
    that cuts passages to that many words still shows). "cloze" is left to `tasks.fact_cloze_records`.
    """
    unknown = set(kinds) - set(QUESTION_KINDS)
    if unknown:
        raise ValueError(f"kinds: unknown {sorted(unknown)}; choose from {list(QUESTION_KINDS)}")
    rng = random.Random(seed)
    categories = [c for c in (category_of(body.split(". ")[0]) for _, body, _ in documents) if c]
    out: list[PassageQuestion] = []
    for document, body, title in documents:
        subject = passage_subject(title)
        if not subject:
            continue
        sentences = leading_sentences(document, body, max_words)
        found: dict[str, tuple[str, str, str, str]] = {}
        for position, sentence in enumerate(sentences):
            candidates = []
            if position == 0 and "definition" in kinds:
                candidates += _definition(sentence, subject, rng)
            if position == 0 and "yes_no" in kinds:
                other = rng.choice(categories) if categories else None
                candidates += _yes_no(sentence, subject, rng, other)
            for kind, make in (("who", _by_agent), ("who", _named_after), ("when", _when), ("where", _where),
                               ("why", _why), ("how", _how), ("number", _number), ("superlative", _superlative)):
                if kind in kinds:
                    candidates += make(sentence, subject, rng)
            for candidate in candidates:
                kind, _, answer, _ = candidate
                if answer and candidate[0] not in found and (kind == "yes_no" or answer.lower() in document.lower()):
                    found[kind] = candidate
        chosen = list(found.values())
        rng.shuffle(chosen)
        chosen.sort(key=lambda candidate: candidate[0] in ("definition", "yes_no"))  # the rarer kinds first
        for kind, question, answer, target in chosen[:per_passage]:
            out.append(PassageQuestion(question, answer, target, kind, document))
    return out


def interleave_kinds(questions: Sequence[PassageQuestion]) -> list[PassageQuestion]:
    """Round-robin over kinds (in `QUESTION_KINDS` order), so any prefix of the list is balanced until the
    rarer kinds run out: the definitions and yes/no questions most passages give would otherwise dominate."""
    queues: dict[str, list[PassageQuestion]] = {}
    for question in questions:
        queues.setdefault(question.kind, []).append(question)
    out: list[PassageQuestion] = []
    while any(queues.values()):
        for kind in QUESTION_KINDS:
            if queues.get(kind):
                out.append(queues[kind].pop(0))
    return out
