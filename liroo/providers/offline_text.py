"""English-text heuristics for the offline provider: what a prompt is about, read from its text.

The source text is what the prompt wraps in ``<source>...</source>``; without
tags, what follows the last line that mentions "text" and ends in ``:`` (such as
``Student's text:`` or ``Original Text:``); else the whole prompt. From it:
its sentences, the people and places it names (capitalised words), its content
words (no stopwords) by frequency, and fill-in-the-blank questions
(``Quiz``). Deterministic: the same text always gives the same facts.

The JSON-schema walker that writes answers from these is offline_schema.py.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

_SOURCE_TAG = re.compile(r"<source>(.*?)</source>", re.S | re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)]*\s+|\n+")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")
_STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have he her here him "
    "his how i if in into is it its just let may me more most my no not now of on one or our out "
    "over she so some such than that the their them then there these they this those through to "
    "too under up upon us very was we were what when where which while who whom why will with "
    "would you your also about after again all any because before being both "
    "each few only other own same should until once every".split()
)
FALLBACK_SENTENCE = "A quiet page waits for its story."
FALLBACK_NAMES = ("Narrator", "Reader", "Guide", "Friend")
FALLBACK_WORDS = ("river", "mountain", "library", "lantern", "garden", "journey")


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


def sentences(text: str) -> list[str]:
    found = []
    for piece in _SENTENCE_END.split(text):
        piece = re.sub(r"\s+", " ", piece).strip().lstrip("-*#>• ").strip()
        if len(WORD.findall(piece)) >= 2:
            found.append(piece)
    return found


@dataclass(frozen=True)
class Source:
    """What a text offers to write from: sentences, names, and content words (first seen, and most
    frequent)."""

    sentences: list[str]
    names: list[str]
    vocabulary: list[str]  # content words in the order first seen, once each
    keywords: list[str]  # the same, most frequent (then longest) first

    @classmethod
    def of(cls, text: str) -> "Source":
        found = sentences(text) or [FALLBACK_SENTENCE]
        counts = Counter(w.lower() for s in found for w in content_words(s))
        seen: set[str] = set()
        vocabulary = [
            w
            for s in found
            for w in content_words(s)
            if not (w.lower() in seen or seen.add(w.lower()))
        ]
        return cls(
            found,
            names(found) or list(FALLBACK_NAMES),
            vocabulary,
            sorted(vocabulary, key=lambda w: (-counts[w.lower()], -len(w))),
        )


class Quiz:
    """A fill-in-the-blank question from one sentence, with other words of the text as wrong
    answers."""

    def __init__(self, sentence: str, vocabulary: list[str], n_options: int, number: int) -> None:
        candidates = content_words(sentence) or WORD.findall(sentence) or ["story"]
        self.answer = max(candidates, key=len)
        self.sentence = sentence
        self.question = "Fill in the blank: " + re.sub(
            rf"\b{re.escape(self.answer)}\b", "_____", sentence, count=1
        )
        in_sentence = {w.lower() for w in WORD.findall(sentence)}
        pool = [w for w in vocabulary if w.lower() not in in_sentence] + list(FALLBACK_WORDS)
        start = (number * 3) % max(1, len(pool) - len(FALLBACK_WORDS))
        wrong: list[str] = []
        for word in pool[start:] + pool[:start]:
            if word.lower() != self.answer.lower() and word.lower() not in {
                w.lower() for w in wrong
            }:
                wrong.append(word)
            if len(wrong) >= n_options - 1:
                break
        n = max(1, n_options)
        self.correct_index = _stable_index(f"{number}:{sentence}", n)
        self.options = (wrong[: self.correct_index] + [self.answer] + wrong[self.correct_index :])[
            :n
        ]


def title(sentence: str, max_words: int = 6) -> str:
    words = WORD.findall(sentence)[:max_words] or ["Untitled"]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def content_words(sentence: str) -> list[str]:
    return [w for w in WORD.findall(sentence) if len(w) >= 4 and w.lower() not in _STOPWORDS]


def names(all_sentences: list[str]) -> list[str]:
    """The text's people and places: capitalised words seen mid-sentence, or capitalised every time
    and twice."""
    capitalised: Counter[str] = Counter()
    mid_sentence: set[str] = set()
    lower: set[str] = set()
    order: list[str] = []
    for sentence in all_sentences:
        for position, word in enumerate(WORD.findall(sentence)):
            if word[0].isupper() and word.lower() not in _STOPWORDS and len(word) > 1:
                capitalised[word] += 1
                if position:
                    mid_sentence.add(word)
                if word not in order:
                    order.append(word)
            else:
                lower.add(word.lower())
    return [
        w for w in order if w.lower() not in lower and (w in mid_sentence or capitalised[w] >= 2)
    ]


def mentions(sentence: str, name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", sentence) is not None


def _stable_index(key: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % n if n else 0
