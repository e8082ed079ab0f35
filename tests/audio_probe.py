"""Reading produced audio with a real decoder: ffprobe (Debian's ffmpeg), skipped visibly when
absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile

import pytest

from liroo.settings import Settings

FFPROBE = shutil.which("ffprobe")
needs_ffprobe = pytest.mark.skipif(
    FFPROBE is None, reason="ffprobe not installed (apt-get install ffmpeg; .ci/run does)"
)


def probe(data: bytes) -> dict:
    """ffprobe's reading of an audio file: {"format": ..., "codec": ..., "duration_s": ...,
    "sample_rate": ...}.

    The whole file is decoded (-count_packets) so a broken stream fails here rather than in a
    player.
    """
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        done = subprocess.run(
            [
                FFPROBE,
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "format=format_name,duration:stream=codec_name,sample_rate,channels,nb_read_packets",
                "-of",
                "json",
                f.name,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert done.stderr.strip() == "", done.stderr
    reading = json.loads(done.stdout)
    stream = reading["streams"][0]
    return {
        "format": reading["format"]["format_name"],
        "codec": stream["codec_name"],
        "duration_s": float(reading["format"]["duration"]),
        "sample_rate": int(stream["sample_rate"]),
        "channels": int(stream["channels"]),
        "packets": int(stream["nb_read_packets"]),
    }


def audio_seconds(
    data: bytes, content_type: str, bitrate_kbps: int = Settings().audio_bitrate_kbps
) -> float:
    """The length of stored speech: read by ffprobe where installed; else a WAV's frames, or an
    MP3's size at its constant bit rate once its first bytes are checked to be an MPEG audio
    frame."""
    if FFPROBE is not None:
        reading = probe(data)
        assert reading["format"] == {"audio/mpeg": "mp3", "audio/wav": "wav"}[content_type], reading
        return reading["duration_s"]
    if content_type == "audio/wav":
        import io
        import wave

        with wave.open(io.BytesIO(data)) as wav:
            return wav.getnframes() / wav.getframerate()
    assert data[0] == 0xFF and data[1] & 0xE0 == 0xE0, data[:4]
    return len(data) * 8 / (bitrate_kbps * 1000)
