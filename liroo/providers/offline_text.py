"""English-text heuristics for the offline provider: what a prompt is about, read from its text.

The source text is what the prompt wraps in ``<source>...</source>``; without
tags, what follows the last line that mentions "text" and ends in ``:`` (such as
``Student's text:`` or ``Original Text:``); else the whole prompt. From it: its
sentences (numbers and dates kept), the people it names (told from places and
things by the words around them), its nouns, its numbers, and its topic (the
first sentence's subject). The rest of the prompt says what is asked for: the
mode (comic, story...), the reading level, the genre, a named hero.

Hand-written on purpose: no NLP library is among the pins, and a tagger and its
model would cost more memory and start-up than this provider is worth. Being
heuristics, they prefer leaving something out (a name not recognised as a
person) to writing it wrong (a country that speaks). Deterministic.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

_SOURCE_TAG = re.compile(r"<source>(.*?)</source>", re.S | re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+(?=[\"'“‘(]*[A-Z0-9])|\n+")
WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*[A-Za-z0-9]|[A-Za-z0-9]")
NUMBER = re.compile(r"^\d[\d,.]*$")
_STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her here him "
    "his how i if in into is it its just let may me more most my no not now of on one or our out "
    "over she so some such than that the their them then there these they this those through to "
    "too under up upon us very was we were what when where which while who whom why will with "
    "would you your also about after again all any because before being both each few only other "
    "own same should until once every inside outside mainly almost around across against along "
    "among within without toward towards behind beyond near during since per via".split()
)
# Words that describe or count rather than name: never a quiz term or a heading.
_NOT_NOUNS = frozenset(
    "tiny small big large great green red blue yellow old new young high low heavy light-weight "
    "many much most several whole bright dark clever careful first second third last next early "
    "late long short main own various different important special certain known called named "
    "using used made often always never again back away together really".split()
)
_DETERMINERS = frozenset(
    "a an the their its his her our my your this these those some many all each every any "
    "of in on at from into with by for to about under over through around across".split()
)
_LOCATIVE = frozenset(
    "in at to from across into near on around over through toward towards".split()
)
_TITLES = frozenset(
    "king queen emperor empress prince princess mr mrs ms miss dr doctor captain sir lady lord "
    "president general pope saint professor uncle aunt grandma grandpa".split()
)
_MONTHS = frozenset(
    "january february march april may june july august september october november december "
    "monday tuesday wednesday thursday friday saturday sunday".split()
)
# Verbs that only people (and characters in stories) do, after a name: they tell a person from a
# place ("Rusty crept", "Augustus became") where capital letters cannot.
PERSON_VERBS = frozenset(
    "said says asked told walked ran laughed smiled cried shouted whispered replied thought knew "
    "wanted decided led ruled crossed wrote painted discovered invented met married fought became "
    "saw looked watched seized killed loved helped taught lived died jumped hid found showed "
    "climbed crept barked forgot learned learnt gave went came sang played tried felt heard "
    "believed explored sailed conquered defeated won escaped visited studied worked waited hoped "
    "wondered noticed remembered followed carried grabbed argued dreamed dreamt built".split()
)
_AUXILIARIES = frozenset(
    "is are was were has have had can could will would may might must does do did began begins "
    "becomes became takes took makes made gives gave turns turned forms formed spread grew rose "
    "fell brought kept held left put set sent ran".split()
)
_ERAS = frozenset("bc ad bce ce am pm".split())
_ARTICLES = frozenset("the a an their its his her our my your this these those".split())
_PRONOUNS = frozenset("it they he she we i you this that these those".split())
_PLACE_WORDS = frozenset(
    "sea ocean river lake mountain mountains city empire kingdom republic revolution war church "
    "street island islands desert forest valley bay gulf state states union age".split()
)
LEVELS = ("beginner", "moderate", "intermediate")
MODES = (
    ("comic", "comic"),
    ("lecture", "lecture"),
    ("flashcard", "flashcards"),
    ("slideshow", "slides"),
    ("study page", "study"),
    ("story", "story"),
)
FALLBACK_SENTENCE = "A quiet page waits for its story."
HEROES = ("Maya", "Leo", "Nora", "Sam", "Iris", "Theo")


def source_text(prompt: str) -> str:
    """The part of a prompt the content should be built from."""
    tagged = _SOURCE_TAG.findall(prompt)
    if tagged:
        return "\n".join(tagged)
    lines = prompt.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip().lower()
        if line.endswith(":") and "text" in line:
            rest = "\n".join(lines[i + 1 :]).strip()
            if rest:
                return rest
    return prompt


@dataclass(frozen=True)
class Ask:
    """What the prompt asks for, besides the text: mode, level, genre, the hero's name."""

    mode: str = "text"
    level: str = "moderate"
    genre: str | None = None
    hero: str | None = None
    count: int | None = None  # how many panels, chapters or sections the prompt asks for

    @classmethod
    def of(cls, prompt: str) -> "Ask":
        first = prompt.strip().split("\n", 1)[0].lower()
        mode = next((name for key, name in MODES if key in first), "text")
        level = re.search(r"reading level:\s*(\w+)", prompt, re.I)
        genre = re.search(r"^genre:\s*([^.\n]+)", prompt, re.I | re.M)
        hero = re.search(r"main character is named ([^:\n]+?):", prompt, re.I)
        count = re.search(r"\bexactly (\d+) (?:panels|chapters|sections)\b", prompt, re.I)
        level_name = level.group(1).lower() if level else "moderate"
        genre_name = genre.group(1).strip() if genre else None
        return cls(
            mode=mode,
            level=level_name if level_name in LEVELS else "moderate",
            genre=None if not genre_name or genre_name.lower().startswith("any ") else genre_name,
            hero=hero.group(1).strip() if hero else None,
            count=int(count.group(1)) if count else None,
        )


def sentences(text: str) -> list[str]:
    found = []
    for piece in _SENTENCE_END.split(text):
        piece = re.sub(r"\s+", " ", piece).strip().lstrip("-*#>• ").strip()
        if len(WORD.findall(piece)) >= 2:
            found.append(piece if piece[-1] in ".!?…\"'”’)" else piece + ".")
    return found


def content_words(sentence: str) -> list[str]:
    return [
        w
        for w in WORD.findall(sentence)
        if len(w) >= 4 and w.lower() not in _STOPWORDS and not NUMBER.match(w)
    ]


def numbers(sentence: str) -> list[str]:
    return [w for w in WORD.findall(sentence) if NUMBER.match(w)]


@dataclass(frozen=True)
class Source:
    """What a text offers to write from."""

    sentences: list[str]
    people: list[str]  # persons and characters, full names, in order of appearance
    places: list[str]  # other proper names: places, events, institutions
    nouns: list[str]  # common nouns, most frequent first
    numbers: list[str]
    topic: str  # the text's subject as a noun phrase ("The French Revolution")
    vocabulary: list[str] = field(default_factory=list)  # content words, first seen, once each

    @property
    def names(self) -> list[str]:
        return self.people + self.places

    @classmethod
    def of(cls, text: str) -> "Source":
        found = sentences(text) or [FALLBACK_SENTENCE]
        people, places = proper_names(found)
        seen: set[str] = set()
        vocabulary = [
            w
            for s in found
            for w in content_words(s)
            if not (w.lower() in seen or seen.add(w.lower()))
        ]
        nouns = common_nouns(found, {w.lower() for n in people + places for w in n.split()})
        return cls(
            found,
            people,
            places,
            nouns,
            [n for s in found for n in numbers(s)],
            topic_of(found, nouns),
            vocabulary,
        )


def _tokens(sentence: str) -> list[str]:
    return WORD.findall(sentence)


def _capitalised_runs(sentence: str) -> list[tuple[int, list[str]]]:
    """(start index, words) of each run of capitalised words; a sentence's first word only when it
    is no ordinary word."""
    tokens, runs, run, start = _tokens(sentence), [], [], 0
    for i, word in enumerate(tokens + ["."]):
        capital = word[:1].isupper() and word.lower() not in _STOPWORDS | _MONTHS | _ERAS
        ordinary = word.lower() in _NOT_NOUNS or (
            word.endswith(("ing", "ly")) and word.lower() not in _TITLES
        )
        if capital and not (i == 0 and ordinary):
            if not run:
                start = i
            run.append(word)
        elif run:
            runs.append((start, run))
            run = []
    return runs


def proper_names(all_sentences: list[str]) -> tuple[list[str], list[str]]:
    """(people, other names): a name is a person when a title comes before it, a person's verb
    after it, ``named`` before it or ``He``/``She`` opens the next sentence; never when an article
    or a place's preposition comes before it."""
    votes: Counter[str] = Counter()
    order: list[str] = []
    lower = {w.lower() for s in all_sentences for w in _tokens(s) if w[:1].islower()}
    for index, sentence in enumerate(all_sentences):
        tokens = _tokens(sentence)
        follow = all_sentences[index + 1].split(" ", 1)[0] if index + 1 < len(all_sentences) else ""
        for start, run in _capitalised_runs(sentence):
            name = " ".join(run)
            if name.lower() in lower:
                continue
            if name not in order:
                order.append(name)
            votes[name] += _person_vote(tokens, start, run, follow)
    people = _merge([n for n in order if votes[n] > 0])
    taken = {w for p in people for w in p.split()}
    places = [n for n in order if votes[n] <= 0 and not set(n.split()) <= taken]
    return people, places


def _person_vote(tokens: list[str], start: int, run: list[str], follow: str) -> int:
    """How much one mention of the name ``run`` (at ``start`` in ``tokens``) says it is a person:
    positive for a person, very negative for a place or a thing."""
    before = tokens[start - 1].lower() if start else ""
    end = start + len(run)
    after = tokens[end].lower() if end < len(tokens) else ""
    if before in ("the", "a", "an") or before in _LOCATIVE or run[-1].lower() in _PLACE_WORDS:
        return -10
    if run[0].lower() in _TITLES or before in ("named", "called") or after in PERSON_VERBS:
        return 2
    if follow in ("He", "She") or len(run) > 1:
        return 1
    return 0


def _merge(names: list[str]) -> list[str]:
    """One entry per person: "Caesar" is "Julius Caesar" once the full name is known."""
    kept: list[str] = []
    for name in sorted(names, key=lambda n: -len(n)):
        if not any(re.search(rf"\b{re.escape(name)}\b", other) for other in kept):
            kept.append(name)
    return [n for n in names if n in kept]


def common_nouns(all_sentences: list[str], proper: set[str]) -> list[str]:
    """Words that head a noun phrase: after a determiner or preposition (maybe one describing word
    between), before punctuation, a small word (not an article: "heats the water") or the end."""
    counts: Counter[str] = Counter()
    for sentence in all_sentences:
        tokens = _tokens(sentence)
        lowered = [t.lower() for t in tokens]
        for i, word in enumerate(lowered):
            if _may_be_noun(word, proper) and _heads_phrase(sentence, tokens, lowered, i):
                counts[word] += 1
    return sorted(counts, key=lambda w: (-counts[w], list(counts).index(w)))


def _may_be_noun(word: str, proper: set[str]) -> bool:
    return not (
        len(word) < 3
        or word in _STOPWORDS
        or word in _NOT_NOUNS
        or word in proper
        or word in _MONTHS
        or NUMBER.match(word)
        or word.endswith(("ly", "ing", "ed"))
        or word in PERSON_VERBS
        or word in _AUXILIARIES
    )


def _heads_phrase(sentence: str, tokens: list[str], lowered: list[str], i: int) -> bool:
    opens = (i > 0 and lowered[i - 1] in _DETERMINERS) or (
        i > 1 and lowered[i - 2] in _DETERMINERS and _describes(lowered[i - 1])
    )
    after = lowered[i + 1] if i + 1 < len(tokens) else ""
    closes = not after or (after in _STOPWORDS and after not in _ARTICLES)
    return opens and (closes or _ends_clause(sentence, tokens, i))


def _describes(word: str) -> bool:
    """A word that may stand between an article and its noun: "the green pigment"."""
    return word in _NOT_NOUNS or word.endswith(("al", "ful", "ous", "ic", "ive", "ed", "'s", "en"))


def _ends_clause(sentence: str, tokens: list[str], i: int) -> bool:
    match = re.search(rf"\b{re.escape(tokens[i])}\b\s*([,;:.!?])", sentence)
    return match is not None


def split_subject(sentence: str) -> tuple[str, str, str]:
    """(what comes before the subject, the subject, the rest from its verb) or ("", "", sentence)
    when no verb is found near the start. A leading phrase ending in a comma ("In 1799,") is
    skipped."""
    lead = ""
    body = sentence
    opener = re.match(r"^([^,]{1,40}),\s+", sentence)
    if opener and _is_opener(_tokens(opener.group(1))):
        lead, body = opener.group(1), sentence[opener.end() :]
    body = drop_appositives(body)
    words = list(WORD.finditer(body))
    plural = _plural_subject_verb(words)
    if plural is not None:
        return lead, body[:plural].strip(), body[plural:]
    for i, match in enumerate(words[1:8], 1):
        word = match.group().lower()
        verb = (
            word in _AUXILIARIES
            or word in PERSON_VERBS
            or (
                word.endswith("s")
                and not word.endswith(("ss", "us", "is"))
                and word not in _STOPWORDS
                and words[i - 1].group().lower() not in _DETERMINERS
                and not words[i - 1].group()[0].isdigit()
            )
        )
        if verb and "," not in body[: match.start()]:
            subject = body[: match.start()].strip()
            if subject.split(" ", 1)[0].lower() not in _STOPWORDS - {
                "the",
                "a",
                "an",
                "it",
                "they",
            }:
                return lead, subject, body[match.start() :]
            break
    return "", "", sentence


def _plural_subject_verb(words: list[re.Match]) -> int | None:
    """Where the verb starts in "Volcanoes form where...", "The plants make food...": a plural
    noun (after an article at most) and then a bare present-tense verb, which the verb test below
    cannot tell from a noun. None when the sentence does not start so."""
    head = 1 if words and words[0].group().lower() in _ARTICLES else 0
    if len(words) < head + 2:
        return None
    noun, verb = words[head].group(), words[head + 1].group()
    is_plural = noun.endswith("s") and not noun.lower().endswith(("ss", "us", "is", "ics"))
    is_bare_verb = (
        verb.isalpha()
        and verb.islower()
        and verb not in _STOPWORDS
        and verb not in _DETERMINERS
        and not verb.endswith(("s", "ed", "ing", "ly"))
    )
    return words[head + 1].start() if is_plural and is_bare_verb else None


def _is_opener(words: list[str]) -> bool:
    """A leading phrase such as "In 1799", "According to legend" or "Using the energy of light"."""
    first = words[0].lower() if words else ""
    return (
        len(words) <= 6
        and first not in _ARTICLES
        and (first in _STOPWORDS or first.endswith("ing") or any(w[0].isdigit() for w in words))
        and not any(w.lower() in _AUXILIARIES or w.lower() in PERSON_VERBS for w in words)
    )


def drop_appositives(sentence: str) -> str:
    """``Chlorophyll, the green pigment, captures...`` -> ``Chlorophyll captures...``; a closing
    ``, an old prison.`` too."""
    shorter = re.sub(r",\s+(?:the|a|an|its|their|his|her)\s[^,]{1,40},\s+", " ", sentence, count=1)
    shorter = re.sub(r",\s+(?:the|a|an)\s[^,]{1,40}(?=[.!?]$)", "", shorter)
    return shorter if len(_tokens(shorter)) >= 3 else sentence


def topic_of(all_sentences: list[str], nouns: list[str]) -> str:
    """The first sentence's subject when it is a short noun phrase, else the text's commonest
    nouns."""
    _, subject, _ = split_subject(all_sentences[0])
    words = _tokens(subject)
    relative = {"that", "which", "who", "whom", "whose", "where", "when"}
    whole = not any(word.lower() in relative for word in words)  # not "The water that"
    if 1 <= len(words) <= 6 and words[0].lower() not in _PRONOUNS and whole:
        return subject[:1].upper() + subject[1:]
    if nouns:
        return " and ".join(n.capitalize() for n in nouns[:2])
    return "Our Text"


def title_case(phrase: str) -> str:
    small = {"a", "an", "the", "and", "of", "in", "on", "to", "for", "by", "at", "or"}
    out = []
    for i, word in enumerate(phrase.split()):
        keep = word[:1].isupper() or word[:1].isdigit()
        out.append(word if keep or (i and word in small) else word[:1].upper() + word[1:])
    return " ".join(out)


def mentions(sentence: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", sentence) is not None


def stable_index(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % n if n else 0
