"""Model providers: Gemini (google-genai) in production, an offline one by default.

``make_provider(settings)`` picks one: Gemini when ``settings.provider_name``
is ``"gemini"`` (LIROO_PROVIDER=gemini, or GENAI_API_KEY set), else offline.
Structured-output schemas follow ``liroo.providers.schema`` (no dict fields).
"""

from __future__ import annotations

from ..settings import Settings
from .base import (
    ASPECT_RATIOS,
    VOICE_ROLES,
    BadOutput,
    ContentBlocked,
    ImageResult,
    Provider,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    SpeechResult,
)
from .schema import Pair, UnsupportedSchema, dict_to_pairs, pairs_to_dict

__all__ = [
    "make_provider",
    "Provider",
    "ImageResult",
    "SpeechResult",
    "ProviderError",
    "RateLimited",
    "ContentBlocked",
    "ProviderUnavailable",
    "BadOutput",
    "ASPECT_RATIOS",
    "VOICE_ROLES",
    "Pair",
    "pairs_to_dict",
    "dict_to_pairs",
    "UnsupportedSchema",
]


def make_provider(settings: Settings) -> Provider:
    if settings.provider_name == "gemini":
        from .gemini import GeminiProvider  # the SDK is imported only where it is used

        return GeminiProvider(settings)
    from .offline import OfflineProvider

    return OfflineProvider(image_delay_s=settings.offline_image_delay_s)
