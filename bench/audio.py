"""Stored speech, WAV against MP3, side by side in one run: bytes per second of audio and encode
time.

The audio is the offline provider's reading of a ~10-minute narration
(espeak-ng when installed, else its tones), cut into the chunks speech is
made in and fed to each encoder (liroo/audio.py) chunk by chunk, as a
narration is. WAV was the old format; MP3 (LAME via lameenc, 40 kbit/s
constant) is the default. Encode time is the CPU a minute of audio costs.

Last line: ``size_ratio=… wav_bytes_per_s=… mp3_bytes_per_s=… wav_encode_ms_per_min=…
mp3_encode_ms_per_min=…`` (size_ratio: WAV bytes over MP3 bytes for the same audio; goal >= 8,
about a tenth as the old backend served).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from liroo.audio import make_encoder  # noqa: E402
from liroo.generation.speech import split_for_speech  # noqa: E402
from liroo.providers.offline import OfflineProvider  # noqa: E402
from liroo.providers.wav import read_pcm  # noqa: E402
from liroo.settings import Settings  # noqa: E402

TEXT = " ".join(
    f"Part {i}: the river carried the small boat past the old mill and under the stone bridge, "
    "where the children waved from the bank."
    for i in range(80)
)
ROUNDS = 5


def main() -> None:
    provider = OfflineProvider()
    chunks = [
        read_pcm(provider.generate_speech(chunk, "narrator").data)
        for chunk in split_for_speech(TEXT)
    ]
    rate, channels, width = chunks[0][1]
    seconds = sum(len(pcm) for pcm, _ in chunks) / (rate * channels * width)
    bitrate = Settings().audio_bitrate_kbps
    print(
        f"{len(TEXT)} characters read by {provider.tts_model}: {seconds:.0f} s of audio at {rate} "
        "Hz, "
        f"{len(chunks)} chunks"
    )
    figures = {}
    for fmt in ("wav", "mp3"):
        best = float("inf")
        for _ in range(ROUNDS):
            started = time.process_time()
            encoder = make_encoder(fmt, rate, channels, width, bitrate)
            for pcm, _ in chunks:
                encoder.feed(pcm)
            data = encoder.finish()
            best = min(best, time.process_time() - started)
        figures[fmt] = (len(data) / seconds, best * 1000 / (seconds / 60))
        print(
            f"{fmt}: {len(data) / 1e6:.2f} MB, {figures[fmt][0] / 1000:.1f} kB per second of "
            "audio, "
            f"{figures[fmt][1]:.1f} ms of CPU per minute of audio (best of {ROUNDS})"
        )
    print(
        f"size_ratio={figures['wav'][0] / figures['mp3'][0]:.2f} "
        f"wav_bytes_per_s={figures['wav'][0]:.0f} "
        f"mp3_bytes_per_s={figures['mp3'][0]:.0f} wav_encode_ms_per_min={figures['wav'][1]:.2f} "
        f"mp3_encode_ms_per_min={figures['mp3'][1]:.2f}"
    )


if __name__ == "__main__":
    main()
