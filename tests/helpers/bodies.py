"""The request bodies and texts the tests send: the app's own requests
(../shared/client-contract.md) and the model answers a loopback Gemini gives back."""

APP_COMIC = {
    "text": "Photosynthesis is how plants make their food. Leaves take in sunlight. "
    "Roots drink water. Air gives carbon dioxide. Chlorophyll makes leaves green. "
    "Oxygen goes back into the air.",
    "level": "beginner",
    "image_style": "Comic Book",
    "user_token": "device-token-abc",
}

LONG_TEXT = " ".join(
    f"Sentence number {i} explains one more step of how rivers carve valleys over time."
    for i in range(40)
)  # long enough for the 8-panel cap

STUDENT_TEXT = (
    "Volcanoes form where magma rises through cracks in the Earth's crust. Lava cools into new "
    "rock. "
    "Some volcanoes stay quiet for centuries before they erupt again. Scientists watch them with "
    "seismometers and satellites. Iceland has many active volcanoes because it sits on a plate "
    "boundary."
)

# The dialogue fields the app adds to /process when a student asks about a passage.
APP_DIALOGUE = {
    "dialogue_mode": True,
    "selected_text_snippet": "plate boundary",
    "original_block_content": STUDENT_TEXT,
    "user_question": "Why does Iceland have volcanoes?",
    "conversation_history": [
        {"sender": "user", "text": "What is lava?"},
        {"sender": "ai", "text": "Hot rock."},
    ],
}


def app_story_prompt(
    text=STUDENT_TEXT, genre="fantasy", style="Studio Ghibli", level="moderate", hero="Mira"
):
    """The prompt exactly as the app builds it (../shared/client-contract.md)."""
    named = f"The main character of this story is {hero}.\n\n" if hero else ""
    return (
        f"[Level: {level}]\nPlease convert the following text into an engaging {genre} story.\n"
        f"Image Style to consider for tone and visuals: {style}.\nOriginal Text:\n{named}{text}"
    )


APP_STORY = {
    "text": app_story_prompt(),
    "level": "moderate",
    "image_style": "Studio Ghibli",
    "user_token": "device-token-abc",
    "genre": "fantasy",
}
APP_PROCESS = {
    "input_text": STUDENT_TEXT,
    "level": "moderate",
    "summarization_tier": "Detailed Explanation",
    "profile": {"studentLevel": "moderate", "topicsOfInterest": ["space", "football"]},
    "user_token": "device-token-abc",
}
APP_LECTURE = {
    "text": STUDENT_TEXT,
    "level": "beginner",
    "image_style": "Watercolor",
    "user_token": "device-token-abc",
}
APP_TTS = {
    "text": "Volcanoes form where magma rises.",
    "voice": "narrator",
    "model": "gemini-2.5-flash-preview-tts",
}


def script_with(panels):
    return {
        "comic_title": "Rivers",
        "theme": "Water shapes land.",
        "characters": [{"name": "Ria", "description": "a girl in a yellow raincoat"}],
        "panels": [
            {
                "scene": f"Scene {i}",
                "image_prompt": f"Ria at the river, moment {i}",
                "dialogue": [
                    {"speaker": "Ria", "line": f"Look {i}!"},
                    {"speaker": "Ria", "line": "Wow."},
                ],
            }
            for i in range(1, panels + 1)
        ],
    }


# A short story and the comic prompt made of it, for the providers' structured output.
STORY = (
    "Mira walked to the old lighthouse at dawn. The keeper, Tomas, was waiting by the door. "
    "He showed her a map of the hidden caves. Together they climbed down the cliff. "
    "Inside the cave they found glowing crystals. Mira laughed as the light danced on the walls."
)
PROMPT = (
    "Turn the student's text below into an educational comic.\nReading level: beginner.\n\n"
    f"Student's text:\n{STORY}"
)
