"""Settings that point the Gemini provider at a loopback Gemini (tests/fake_gemini.py)."""

from liroo.settings import Settings


def gemini_settings(fake, **overrides) -> Settings:
    values = dict(
        provider="gemini",
        genai_api_key="test-key",
        gemini_base_url=fake.url,
        gemini_rpm=0,
        gemini_timeout_s=2.0,
        gemini_retry_attempts=3,
        gemini_retry_initial_s=0.05,
        gemini_retry_max_s=0.2,
    )
    values.update(overrides)
    return Settings(**values)
