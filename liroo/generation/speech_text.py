"""Where long text is cut for speech: chunks a model reads in one go, cut at natural pauses."""

from __future__ import annotations

import re

# Characters per model call: about a minute and a half of speech. Well inside what a
# TTS model reads in one go, and a chunk that fails is cheap to redo; chunks of one
# clip are made concurrently, so a long text also reads faster.
MAX_CHUNK_CHARS = 1500

# The end of a sentence (or clause) and its closing quotes or brackets, before a space; or a blank
# line.
_PAUSE = re.compile(r"[.!?…;:][\"'”’)\]]*(?=\s)|\n\s*\n")


def split_for_speech(text: str, limit: int = MAX_CHUNK_CHARS) -> list[str]:
    """``text`` in chunks of at most ``limit`` characters, cut at sentence ends where possible.

    A regular expression rather than a sentence tokenizer (nltk, spaCy): the cut
    only has to fall at a natural pause, and a wrong guess costs a slightly odd
    pause, not a wrong answer.
    """
    chunks: list[str] = []
    current = ""
    for sentence in _sentences(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        for piece in _fit(sentence, limit):
            if current and len(current) + 1 + len(piece) > limit:
                chunks.append(current)
                current = piece
            else:
                current = f"{current} {piece}" if current else piece
    if current:
        chunks.append(current)
    return chunks


def _sentences(text: str):
    start = 0
    for pause in _PAUSE.finditer(text):
        yield text[start : pause.end()]
        start = pause.end()
    yield text[start:]


def _fit(sentence: str, limit: int) -> list[str]:
    """A sentence longer than ``limit`` cut at spaces (a single longer word is cut anywhere)."""
    pieces = []
    while len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        pieces.append(sentence)
    return pieces
