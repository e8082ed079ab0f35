"""What the offline provider writes from a text: titles, captions, speech, pictures, quizzes.

``Writer`` holds one prompt's reading (offline_text: the source, the mode, the
level, the genre) and writes the pieces a schema asks for, as a teacher would
want them: titles that are whole noun phrases, sentences that stay whole with
their numbers, one sentence once, speakers who are people (a teacher and a
student, or the people the text names), bubbles that ask and answer rather
than repeat the caption, quiz distractors of the answer's kind, and a reading
level that changes length and words. offline_schema.py decides which piece a
field gets.
"""

from __future__ import annotations

import re

from .offline_art import setting_words
from .offline_text import (
    HEROES,
    NUMBER,
    WORD,
    Ask,
    Source,
    drop_appositives,
    mentions,
    numbers,
    source_text,
    split_subject,
    stable_index,
    title_case,
)

ROLES = ("Teacher", "Student")
_ROLE_LOOKS = {
    "Teacher": "A kind teacher with short grey hair, round glasses and a green cardigan",
    "Student": "A curious student of about twelve with a yellow jumper and a blue backpack",
    "Narrator": "The storyteller's voice, not drawn",
}
_PLAIN = {  # beginner words: the same meaning, more familiar
    "executed": "put to death",
    "murdered": "killed",
    "seized": "took",
    "founded": "started",
    "captures": "catches",
    "releases": "gives off",
    "structures": "parts",
    "pigment": "colour",
    "approximately": "about",
    "numerous": "many",
    "centuries": "hundreds of years",
    "evaporates": "turns into vapour",
}
_GENRE_TITLES = {
    "adventure": "{topic}: An Adventure",
    "fantasy": "{topic}: A Fantasy Tale",
    "mystery": "{topic}: A Mystery",
    "science fiction": "{topic}: A Science Fiction Story",
    "historical": "{topic}: A Historical Tale",
    "educational": "{topic}: A Story to Learn From",
}
_GENRE_TRAITS = {
    "adventure": "Brave, quick and always ready to explore.",
    "fantasy": "Dreamy, kind and open to wonders.",
    "mystery": "Curious, patient and sharp-eyed for clues.",
    "science fiction": "Inventive, bold and full of questions about the future.",
    "historical": "Thoughtful, brave and eager to understand the past.",
}
# A chapter's first line in the genre's tone, with the hero in it; the text's facts follow.
_CHAPTER_OPENERS = {
    "adventure": (
        "{hero} set out, ready for whatever the day would bring.",
        "{hero} pressed on along the path.",
        "There was no turning back now for {hero}.",
        "A new challenge was waiting for {hero}.",
        "{hero} could see the journey's end at last.",
    ),
    "mystery": (
        "Something did not add up, and {hero} meant to find out why.",
        "{hero} found the next clue.",
        "{hero} looked again at what the clues said.",
        "The pieces began to fit together for {hero}.",
        "At last {hero} saw the answer.",
    ),
    "fantasy": (
        "Magic stirred in the air as {hero} opened the old book.",
        "The enchanted pages showed {hero} more.",
        "A glowing light led {hero} onwards.",
        "{hero} felt the spell grow stronger.",
        "The magic faded, and {hero} remembered everything.",
    ),
    "science fiction": (
        "{hero}'s time machine hummed and lit up.",
        "The screens showed {hero} another moment.",
        "{hero} set the controls for the next jump.",
        "The machine shook as {hero} travelled on.",
        "{hero} came home with the records safe.",
    ),
    "historical": (
        "{hero} was there to see it happen.",
        "Time went on, and {hero} watched.",
        "{hero} heard the news from the town square.",
        "{hero} would never forget those days.",
        "Years later, {hero} told the story.",
    ),
}
_LECTURE_OPENERS = (
    "Welcome! Today we learn about {topic}.",
    "Let us go on.",
    "Here is the next part.",
    "Now listen closely.",
    "Finally, one more idea.",
)
_KEY_WORD_LINES = (
    ("Which word should I remember here?", "Remember the {kind} “{key}”."),
    ("What is the key idea in this part?", "Look for the {kind} “{key}”: it is the key."),
    ("Is there something to learn by heart?", "Yes: learn the {kind} “{key}”."),
)
_FIRST_PERSON = {"his": "my", "her": "my", "him": "me", "himself": "myself", "herself": "myself"}


class Writer:
    def __init__(self, prompt: str) -> None:
        self.ask = Ask.of(prompt)
        self.source = Source.of(source_text(prompt))
        self.topic = self.source.topic
        self.headings: set[str] = set()
        self.setting = setting_words(" ".join(self.source.sentences))
        # names capitalised inside sentences, not only first ("Paris", not "Photosynthesis")
        self.mid_capitals = {
            w for s in self.source.sentences for w in WORD.findall(s)[1:] if w[:1].isupper()
        }

    # --- who -------------------------------------------------------------------------
    def cast(self) -> list[str]:
        """The people of the piece: the hero of a story, the text's people, a teacher and a
        student."""
        people = self.source.people[:4]
        if self.ask.mode == "story":
            return [self.hero(), *[p for p in people if p != self.hero()]][:4]
        if self.ask.mode in ("comic", "text"):
            return [*ROLES, *people][:6] if self.ask.mode == "comic" else people or list(ROLES)
        return people or list(ROLES)

    def hero(self) -> str:
        if self.ask.hero:
            return self.ask.hero
        for person in self.source.people:  # a protagonist: the text comes back to them
            last = person.split()[-1]
            if sum(mentions(s, last) for s in self.source.sentences) >= 2:
                return person
        return HEROES[stable_index(self.topic, len(HEROES))]

    def look(self, person: str) -> str:
        if person in _ROLE_LOOKS:
            return _ROLE_LOOKS[person]
        about = next((s for s in self.source.sentences if mentions(s, person)), None)
        if about is None:
            return f"{person}, a young explorer with a red scarf and a green coat"
        return f"{person}, dressed as in the text's time and place, the same in every picture"

    def personality(self, person: str) -> str:
        return _GENRE_TRAITS.get((self.ask.genre or "").lower(), "Curious, kind and brave.")

    # --- sentences -----------------------------------------------------------------
    def adapt(self, sentence: str) -> str:
        """The sentence at the reader's level: a beginner's is shorter, in plainer words."""
        if self.ask.level != "beginner":
            return sentence
        lead, subject, rest = split_subject(sentence)
        if subject and lead and not any(ch.isdigit() for ch in lead):
            sentence = subject[:1].upper() + subject[1:] + " " + rest
        sentence = drop_appositives(sentence)
        sentence = re.sub(
            r"(?<![,\s]by)(?<!in)(?<!of) (?:who|which) [^,.;]+(?=[.!?]$)", "", sentence
        )
        # a closing clause without a number: "..., and the cycle begins again."
        sentence = re.sub(r",\s+(?:and|but|inside|while|so)\s[^,\d]+(?=[.!?]$)", "", sentence)
        for hard, plain in _PLAIN.items():
            sentence = re.sub(rf"\b{hard}\b", plain, sentence)
        return sentence

    def passage(self, sentences: list[str], explained: bool = False) -> str:
        """The sentences at the reader's level; ``explained`` parts add, for a confident reader,
        the subject's terms they use."""
        text = " ".join(self.adapt(s) for s in sentences)
        if explained and self.ask.level == "intermediate":
            terms = [n for n in self.source.nouns if re.search(rf"\b{n}\b", text, re.I)][:3]
            if len(terms) > 1:
                listed = ", ".join(terms[:-1]) + " and " + terms[-1]
                text += f" Key terms to know here: {listed}."
        return text

    def document_title(self, quiz: bool = False) -> str:
        topic = title_case(self.topic)
        if quiz:
            return f"Quiz: {topic}"
        if self.ask.mode == "story":
            genre = (self.ask.genre or "").lower()
            return _GENRE_TITLES.get(genre, "{topic}: A Story").format(topic=topic)
        return topic

    def heading(self, sentences: list[str]) -> str:
        """A title for one part: its subject, date or key noun, as a phrase used once per
        piece."""
        candidates = []
        for sentence in sentences:
            _, subject, _ = split_subject(sentence)
            if subject and subject.split()[0].lower() not in ("it", "they", "he", "she"):
                candidates.append(title_case(re.sub(r"^(?:the|a|an) ", "", subject, flags=re.I)))
            candidates += [n for n in self.source.names if mentions(sentence, n)]
            dates = re.findall(r"\b(?:\d{1,2} )?(?:[A-Z][a-z]+ )?\d{3,4}(?: BC| AD)?\b", sentence)
            candidates += dates
            candidates += [
                n.capitalize() for n in self.source.nouns if re.search(rf"\b{n}\b", sentence, re.I)
            ]
        for candidate in candidates + [f"More About {title_case(self.topic)}"]:
            if candidate.lower() not in self.headings and candidate.lower() != self.topic.lower():
                self.headings.add(candidate.lower())
                return candidate
        return f"Part {len(self.headings) + 1}"

    def summary(self, what: str) -> str:
        """A theme or overview: one whole sentence about the whole piece."""
        topic, genre = self.summary_topic(), (self.ask.genre or "").lower()
        if self.ask.mode == "story":
            kind = f"{'An' if genre[:1] in 'aeiou' else 'A'} {genre} story" if genre else "A story"
            if mentions(topic, self.hero()):
                return f"{kind} about {topic}, told in the order of the text."
            return (
                f"{kind} in which {self.hero()} discovers {topic}, told in the order of the text."
            )
        return (
            f"A {self.ask.mode if self.ask.mode != 'text' else what} about {topic}, step by step."
        )

    def chapter(self, sentences: list[str], index: int) -> str:
        """A story chapter: a line in the genre's tone with the hero, then the text's part."""
        openers = _CHAPTER_OPENERS.get((self.ask.genre or "").lower())
        told = self.passage(sentences)
        if not openers:
            return told
        return f"{openers[min(index, len(openers) - 1)].format(hero=self.hero())} {told}"

    def lecture_script(self, sentences: list[str], index: int) -> str:
        opener = _LECTURE_OPENERS[min(index, len(_LECTURE_OPENERS) - 1)]
        return f"{opener.format(topic=self.summary_topic())} {self.passage(sentences)}"

    def inline(self, sentence: str) -> str:
        """``sentence`` to follow other words: its first letter small unless it starts a name."""
        first = sentence.split(" ", 1)[0]
        return sentence if first in self.mid_capitals else sentence[:1].lower() + sentence[1:]

    def summary_topic(self) -> str:
        """The topic inside a sentence: "the French Revolution", "photosynthesis", "Rome"."""
        first = self.topic.split()[0]
        if first in ("The", "A", "An") or first not in self.mid_capitals:
            return self.topic[:1].lower() + self.topic[1:]
        return self.topic

    # --- speech bubbles ----------------------------------------------------------------
    def exchange(self, sentences: list[str], index: int) -> list[tuple[str, str]]:
        """A question and its answer about the panel's sentence: the student asks, the teacher
        (or the person the sentence is about, in their own words) answers."""
        sentence = self.adapt(sentences[0]) if sentences else self.topic + "."
        asker, teller = (
            ("Student", "Teacher") if self.ask.mode != "story" else ("Narrator", self.hero())
        )
        cast = self.cast()
        lead, subject, rest = split_subject(sentence)
        person = next((p for p in cast if subject and _same_person(subject, p)), None)
        if person:
            return [(asker, f"What did {person} do?"), (person, "I " + _first_person(rest))]
        date = _date_phrase(sentence)
        if date:
            told = _without(sentence, date)
            return [
                (asker, f"What happened {date[0]} {date[1]}?"),
                (teller, f"That was when {self.inline(told)}"),
            ]
        if subject and subject.split()[0].lower() not in ("it", "they", "he", "she", "this"):
            proper = any(w in self.mid_capitals for w in WORD.findall(subject))
            question = _question(subject, rest, proper)
            return [(asker, question), (teller, _pronoun(subject) + " " + rest)]
        number = next(iter(numbers(sentence)), None)
        key = number or next(
            (n for n in self.source.nouns if re.search(rf"\b{n}\b", sentence, re.I)), None
        )
        if key is None:
            return [
                (asker, "What is this part about?"),
                (teller, f"It is about {self.summary_topic()}."),
            ]
        ask, tell = _KEY_WORD_LINES[index % len(_KEY_WORD_LINES)]
        return [(asker, ask), (teller, tell.format(kind="number" if number else "word", key=key))]

    # --- pictures ------------------------------------------------------------------------
    def picture(self, sentences: list[str]) -> str:
        moment = self.passage(sentences[:1]) if sentences else self.topic
        return f"{moment} The scene shows {self.setting}."

    def alt(self, sentences: list[str]) -> str:
        key = self.heading_free(sentences)
        return f"A picture of {self.setting}, for the part about {key}."

    def heading_free(self, sentences: list[str]) -> str:
        """The part's key noun without claiming it as a heading."""
        text = " ".join(sentences)
        return next(
            (n for n in self.source.nouns if re.search(rf"\b{n}\b", text, re.I)),
            self.summary_topic(),
        )


def _same_person(subject: str, person: str) -> bool:
    """ "The old dog Biscuit" is Biscuit; "Caesar" is Julius Caesar."""
    return subject == person or subject.endswith(" " + person) or person.endswith(" " + subject)


def _first_person(rest: str) -> str:
    """``led the Reign of Terror until his fall`` -> ``led the Reign of Terror until my fall``."""
    words = rest.split(" ")
    head = {"is": "am", "has": "have", "does": "do"}.get(words[0], words[0])
    tail = [_FIRST_PERSON.get(w, w) for w in words[1:]]
    return " ".join([head, *tail])


def _date_phrase(sentence: str) -> tuple[str, str] | None:
    """("in", "1799") or ("on", "14 July 1789") for the first date of a sentence."""
    match = re.search(
        r"\b(in|on|by|until|from)\s+((?:\d{1,2}\s+)?(?:[A-Z][a-z]+\s+)?(?:\d{1,4}\s+(?:BC|AD)|\d{3,4}))\b",
        sentence,
        re.I,
    )
    if match is None:
        match = re.match(
            r"()((?:\d{1,2}\s+)?(?:[A-Z][a-z]+\s+)?(?:\d{1,4}\s+(?:BC|AD)|\d{3,4}))\b", sentence
        )
    if match is None:
        return None
    word = match.group(1).lower() or "in"
    return (
        "on"
        if re.match(r"\d{1,2}\s+[A-Z][a-z]+\s+\d", match.group(2))
        else word
        if word in ("in", "on")
        else "in"
    ), match.group(2)


def _without(sentence: str, date: tuple[str, str]) -> str:
    """The sentence without its date: what happened then."""
    pattern = rf"(?:\b(?:in|on|by|until|from)\s+)?{re.escape(date[1])},?\s*"
    told = re.sub(pattern, "", sentence, count=1, flags=re.I).strip()
    told = re.sub(r"\s+([.,!?])", r"\1", told)
    lead, subject, rest = split_subject(told)
    if lead and subject:  # "According to legend, Rome was founded" -> "Rome was founded"
        told = f"{subject} {rest}"
    return told[:1].upper() + told[1:] if told else sentence


def _pronoun(subject: str) -> str:
    last = subject.split()[-1].lower()
    plural = last.endswith("s") and not last.endswith(("ss", "is", "us"))
    return "They" if plural else "It"


def _question(subject: str, rest: str, proper: bool) -> str:
    noun = subject if proper else subject[:1].lower() + subject[1:]
    noun = re.sub(r"^(The|A|An) ", lambda m: m.group(1).lower() + " ", noun)
    verb = rest.split(" ", 1)[0].lower()
    if verb in ("is", "are", "was", "were"):
        return f"What {verb} {noun}?"
    if verb.endswith("ed") or verb in ("began", "grew", "spread", "became", "took", "made", "gave"):
        return f"What did {noun} do?"
    return f"What {'do' if _pronoun(subject) == 'They' else 'does'} {noun} do?"


def _is_proper(subject: str) -> bool:
    words = WORD.findall(subject)
    return bool(words) and all(w[0].isupper() for w in words if w.lower() not in ("the", "of"))


class Quiz:
    """A fill-in-the-blank question from one sentence; the wrong options are of the answer's kind:
    numbers for a number, names for a name, nouns of the text for a noun."""

    def __init__(self, writer: Writer, sentence: str, n_options: int, number: int) -> None:
        source = writer.source
        self.sentence = sentence
        in_sentence = {w.lower() for w in WORD.findall(sentence)}
        n = max(1, n_options)
        answer, wrong = None, []
        for candidate, pool in _candidates(source, sentence, number):
            wrong = _distinct([w for w in pool if w.lower() not in in_sentence], candidate, n - 1)
            if len(wrong) >= n - 1:
                answer = candidate
                break
        if answer is None:  # a tiny text: numbers can always be made up
            answer = (numbers(sentence) or [str(len(WORD.findall(sentence)))])[0]
            if answer not in sentence:
                sentence = f"{sentence} ({answer} words)"
            wrong = _near_numbers(answer, n - 1)
        self.answer = answer
        self.question = "Fill in the blank: " + re.sub(
            rf"\b{re.escape(answer)}\b", "_____", sentence, count=1
        )
        if answer[:1].isupper() and not _is_proper(answer):
            wrong = [w[:1].upper() + w[1:] for w in wrong]  # the capital must not give it away
        self.correct_index = stable_index(f"{number}:{sentence}", n)
        self.options = (wrong[: self.correct_index] + [answer] + wrong[self.correct_index :])[:n]


def _candidates(source: Source, sentence: str, number: int) -> list[tuple[str, list[str]]]:
    found = []
    for value in sorted(numbers(sentence), key=len, reverse=True):  # a year before a day
        alike = [v for v in source.numbers if v != value and len(v) == len(value)]
        found.append((value, alike + _near_numbers(value, 6)))
    for group in (source.people, source.places):
        for name in group:
            if mentions(sentence, name):
                found.append((name, [n for n in group if n != name]))
    for noun in source.nouns:
        match = re.search(rf"\b{noun}\b", sentence, re.I)
        if match:
            others = [n for n in source.nouns if n != noun]
            turn = (number * 3) % max(1, len(others))  # not the same distractors every time
            found.append((match.group(), others[turn:] + others[:turn]))
    return found


def _near_numbers(value: str, k: int) -> list[str]:
    digits = int(re.sub(r"\D", "", value) or 0)
    steps = (10, -10, 25, -25, 50, 100) if digits >= 100 else (1, 2, -1, 3, 5, 10)
    return [str(digits + s) for s in steps if digits + s > 0][:k]


def _distinct(pool: list[str], answer: str, k: int) -> list[str]:
    chosen: list[str] = []
    for word in pool:
        if word.lower() != answer.lower() and word.lower() not in {w.lower() for w in chosen}:
            chosen.append(word)
        if len(chosen) >= k:
            break
    return chosen


__all__ = ["NUMBER", "Quiz", "Writer"]
