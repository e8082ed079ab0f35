"""Schemas a generation author might write, for the providers' structured output."""

from __future__ import annotations

import enum
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from liroo.providers import Pair


class DialogueLine(BaseModel):
    speaker: str
    line: str


class Panel(BaseModel):
    scene: str
    image_prompt: str
    dialogue: list[DialogueLine] = Field(default_factory=list, max_length=4)


class Comic(BaseModel):
    comic_title: str = Field(max_length=60)
    theme: str
    character_style_guide: list[Pair] = Field(min_length=1)
    panels: list[Panel] = Field(min_length=3, max_length=8)


class Option(BaseModel):
    id: str
    text: str


class Question(BaseModel):
    question: str
    options: list[Option] = Field(min_length=4, max_length=4)
    correct_answer_id: str
    explanation: str


class Quiz(BaseModel):
    title: str
    questions: list[Question] = Field(min_length=2, max_length=3)


class Level(str, enum.Enum):
    beginner = "beginner"
    moderate = "moderate"
    intermediate = "intermediate"


class Chapter(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: str
    title: str = Field(min_length=3, max_length=40)
    content: str = Field(min_length=120)
    order: int = Field(ge=1, le=20)
    image_url: Optional[str] = Field(default=None, alias="imageUrl")


class Story(BaseModel):
    title: str
    level: Level
    mood: Literal["calm", "tense"]
    score: float = Field(ge=0.1, le=0.9)
    chapters: list[Chapter] = Field(min_length=2, max_length=5)
    keywords: list[str] = Field(min_length=3, max_length=3)
    published: bool


class WithDict(BaseModel):
    title: str
    dialogue: dict[str, str]


SCHEMAS = [Comic, Quiz, Story]
