"""WAV files from raw PCM, with the standard library's ``wave`` module."""

from __future__ import annotations

import io
import wave


def pcm_to_wav(pcm: bytes, rate: int, *, channels: int = 1, sample_width: int = 2) -> bytes:
    """Wrap little-endian PCM samples in a WAV header (what AVFoundation plays)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(sample_width)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()


def read_pcm(data: bytes) -> tuple[bytes, tuple[int, int, int]]:
    """A WAV's samples and (rate, channels, sample width); wave.Error or EOFError if it is not
    one."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.readframes(wav.getnframes()), (
            wav.getframerate(),
            wav.getnchannels(),
            wav.getsampwidth(),
        )


def wav_duration_s(data: bytes) -> float:
    """Length of a WAV file in seconds (wave.Error if it is not one)."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.getnframes() / wav.getframerate()
