"""What each step of one speech chunk holds at its peak: what speech reservations are fitted to.

One ~1,500-character chunk (MAX_CHUNK_CHARS) is read aloud by the real
google-genai SDK against the loopback Gemini (run in its own process, so its
buffers are not counted), then encoded to MP3 whole and in slices, then
finished. Each step's peak is the process's RSS high-water mark (reset
through /proc/self/clear_refs before the step) over its RSS before it, the
best (lowest) of a few rounds after a warm-up round; Linux only.

Last line: ``call_peak_x_wav=… encode_whole_peak_mb=… encode_sliced_peak_mb=…
finish_peak_x_mp3=… mp3_identical=…`` (call: the model call and read_pcm, as a multiple of
the WAV it returns; the encode peaks in MB; finish: finish() as a multiple of the MP3).
"""

from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from liroo.audio import make_encoder  # noqa: E402
from liroo.generation.speech import MAX_CHUNK_CHARS, split_for_speech  # noqa: E402
from liroo.providers.gemini import GeminiProvider  # noqa: E402
from liroo.providers.wav import read_pcm  # noqa: E402
from liroo.settings import Settings  # noqa: E402

MB = 1024 * 1024
ROUNDS = 4
TEXT = " ".join(
    f"Sentence {n}: the river carried the small boat past the old mill and under the stone bridge."
    for n in range(40)
)
_trim = ctypes.CDLL("libc.so.6").malloc_trim


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def peak_mb(step) -> tuple[float, object]:
    """``step()``'s result and the most RSS it added at any moment (MB), best of ROUNDS."""
    best, result = float("inf"), None
    for _ in range(ROUNDS + 1):
        result = None
        gc.collect()
        _trim(0)
        before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        result = step()
        best = min(best, (_status_kb("VmHWM") - before) / 1024)
    return best, result


def encode(pcm: bytes, shape, whole: bool) -> bytes:
    """The chunk's MP3: fed to LAME in one call (``whole``, as before) or by Mp3Encoder.feed."""
    rate, channels, width = shape
    encoder = make_encoder("mp3", rate, channels, width, Settings().audio_bitrate_kbps)
    if whole:
        encoder._out += encoder._lame.encode(pcm)
    else:
        encoder.feed(pcm)
    return encoder.finish()


def main() -> None:
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_gemini", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        url = fake.stdout.readline().strip().split("=", 1)[1]
        os.environ.update(GENAI_API_KEY="peaks", LIROO_GEMINI_BASE_URL=url, LIROO_GEMINI_RPM="0")
        provider = GeminiProvider(Settings.from_env())
        chunk = split_for_speech(TEXT)[0]
        assert len(chunk) > MAX_CHUNK_CHARS * 0.9, len(chunk)

        def call():
            return read_pcm(provider.generate_speech(chunk, "narrator").data)

        call_mb, (pcm, shape) = peak_mb(call)
        model_mb, wav = peak_mb(lambda: provider.generate_speech(chunk, "narrator").data)
        read_mb, _ = peak_mb(lambda: read_pcm(wav))
        wav_mb = len(wav) / MB
    finally:
        fake.terminate()
        fake.wait()
    whole_mb, whole = peak_mb(lambda: encode(pcm, shape, True))
    sliced_mb, sliced = peak_mb(lambda: encode(pcm, shape, False))
    cpu = {True: float("inf"), False: float("inf")}  # best of 2 x ROUNDS, the two alternating
    for _ in range(2 * ROUNDS):
        for whole_chunk in cpu:
            started = time.process_time()
            encode(pcm, shape, whole_chunk)
            cpu[whole_chunk] = min(cpu[whole_chunk], (time.process_time() - started) * 1000)
    rate, channels, width = shape
    encoder = make_encoder("mp3", rate, channels, width, Settings().audio_bitrate_kbps)
    encoder.feed(pcm)
    finish_mb, data = peak_mb(lambda: bytes(encoder._out))  # what finish() copies
    mp3_mb = len(sliced) / MB
    print(
        f"chunk of {len(chunk)} characters: {wav_mb:.2f} MB of WAV, {mp3_mb:.3f} MB of MP3; "
        f"call + read_pcm peak {call_mb:.2f} MB (the call {model_mb:.2f}, read_pcm {read_mb:.2f}), "
        f"encode whole {whole_mb:.2f} MB, "
        f"in slices {sliced_mb:.2f} MB, finish {finish_mb:.3f} MB; encode CPU whole "
        f"{cpu[True]:.0f} ms, in slices {cpu[False]:.0f} ms"
    )
    print(
        f"call_peak_x_wav={call_mb / wav_mb:.2f} encode_whole_peak_mb={whole_mb:.2f} "
        f"encode_sliced_peak_mb={sliced_mb:.2f} finish_peak_x_mp3={finish_mb / mp3_mb:.2f} "
        f"mp3_identical={whole == sliced} "
        f"encode_cpu_ratio={cpu[False] / cpu[True]:.2f}"
    )


if __name__ == "__main__":
    main()
