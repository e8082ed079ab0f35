"""Speech audio encoding: 16-bit PCM in, one stored file out (MP3 by default, or WAV).

Encoders take PCM a piece at a time (``feed``), so a long narration is encoded
as its chunks arrive and is never joined into one big buffer first: the only
whole copy alive is the encoded file. MP3 comes from LAME through ``lameenc``,
whose wheel ships the encoder (no system library, no subprocess); constant bit
rate, so players and ``ffprobe`` read the duration from the size. WAV is the
standard library's ``wave`` writing into memory, patching the header's sizes as
frames arrive.

Sizes: 24 kHz 16-bit mono speech is 48 kB a second as WAV; MP3 at 40 kbit/s is
5 kB a second (``encoded_bytes_per_s``), which is what reservations are sized by.
"""

from __future__ import annotations

import io
import wave
from typing import Protocol

import lameenc

# format -> (file extension, Content-Type)
AUDIO_FORMATS = {"mp3": ("mp3", "audio/mpeg"), "wav": ("wav", "audio/wav")}
# LAME's quality knob (0 best .. 9 fastest): 5 is within ~0.1 dB of 2 for speech at 2x the speed.
MP3_QUALITY = 5
SAMPLE_WIDTH = 2  # bytes per sample: both encoders take 16-bit PCM
# LAME is fed this much PCM per call. Fed a whole 3.6 MB chunk at once, lameenc
# allocates its output and work buffers for all of it: +14 MB at the peak. In
# 256 KB slices the peak is ~1.7 MB, the output is byte for byte the same and
# the CPU too (bench/speech_peaks.py). lameenc takes bytes only (no memoryview),
# so each slice is a copy of its 256 KB.
FEED_SLICE_BYTES = 256 * 1024


class UnsupportedAudio(ValueError):
    """PCM the encoder cannot take (not 16-bit, or more than two channels)."""


class AudioEncoder(Protocol):
    extension: str
    content_type: str

    def feed(self, pcm: bytes) -> None:
        """Encode the next piece of little-endian PCM."""

    @property
    def encoded_bytes(self) -> int:
        """Bytes of output so far."""

    def finish(self) -> bytes:
        """The whole file; the encoder is done."""


class Mp3Encoder:
    extension, content_type = AUDIO_FORMATS["mp3"]

    def __init__(self, rate: int, channels: int, bitrate_kbps: int) -> None:
        self._lame = lameenc.Encoder()
        self._lame.set_bit_rate(bitrate_kbps)
        self._lame.set_in_sample_rate(rate)
        self._lame.set_channels(channels)
        self._lame.set_quality(MP3_QUALITY)
        self._out = bytearray()

    def feed(self, pcm: bytes) -> None:
        for start in range(0, len(pcm), FEED_SLICE_BYTES):
            self._out += self._lame.encode(pcm[start : start + FEED_SLICE_BYTES])

    @property
    def encoded_bytes(self) -> int:
        return len(self._out)

    def finish(self) -> bytes:
        self._out += self._lame.flush()
        data, self._out = bytes(self._out), bytearray()
        return data


class WavEncoder:
    extension, content_type = AUDIO_FORMATS["wav"]

    def __init__(self, rate: int, channels: int) -> None:
        self._buffer = io.BytesIO()
        self._wav = wave.open(self._buffer, "wb")
        self._wav.setnchannels(channels)
        self._wav.setsampwidth(SAMPLE_WIDTH)
        self._wav.setframerate(rate)

    def feed(self, pcm: bytes) -> None:
        self._wav.writeframesraw(pcm)  # sizes are patched once, in finish()

    @property
    def encoded_bytes(self) -> int:
        return self._buffer.tell()

    def finish(self) -> bytes:
        self._wav.close()  # writes the true sizes into the header
        data = self._buffer.getvalue()
        self._buffer = io.BytesIO()
        return data


def make_encoder(
    fmt: str, rate: int, channels: int, sample_width: int, bitrate_kbps: int
) -> AudioEncoder:
    """An encoder for PCM of this shape in ``fmt`` ("mp3" or "wav"); UnsupportedAudio for other
    PCM."""
    if sample_width != SAMPLE_WIDTH or channels not in (1, 2):
        raise UnsupportedAudio(
            f"speech must be 16-bit mono or stereo PCM, got {8 * sample_width}-bit, "
            f"{channels} channels"
        )
    if fmt == "mp3":
        return Mp3Encoder(rate, channels, bitrate_kbps)
    if fmt == "wav":
        return WavEncoder(rate, channels)
    raise ValueError(f"unknown audio format {fmt!r}")


def encoded_bytes_per_s(fmt: str, rate: int, channels: int, bitrate_kbps: int) -> float:
    """What one second of audio takes in ``fmt`` (constant bit rate for MP3)."""
    if fmt == "mp3":
        return bitrate_kbps * 1000 / 8
    return rate * channels * SAMPLE_WIDTH


def audio_extension(fmt: str) -> str:
    return AUDIO_FORMATS[fmt][0]
