"""A loopback Gemini: the REST API google-genai speaks, on 127.0.0.1, with faults on demand.

The SDK, given ``HttpOptions(base_url=...)``, posts to
``/v1/models/<model>:generateContent`` (``v1`` is its default API version;
any ``v1*`` is accepted here) with the key in ``x-goog-api-key``. The fake
answers the three kinds of call the providers make, told apart by
``generationConfig.responseModalities``:

- text: JSON that satisfies the request's ``responseSchema`` (or
  ``responseJsonSchema``), written from the prompt by the offline provider's
  schema filler; or the next answer a test queued with ``answer()``;
- image (``IMAGE``): a PNG as ``inlineData`` whose colours follow the prompt
  (size and mode configurable, optionally incompressible noise for memory tests);
- speech (``AUDIO``): 16-bit PCM as ``inlineData`` (``audio/L16;codec=pcm;rate=24000``),
  50 ms per character of the prompt.

Per test, thread-safe: latency per operation or model, a queue of faults
(``fail(kind, ...)``, kinds in FAULT_KINDS), and a record of every request
(headers, model, parsed body) for assertions.

In pytest use the ``fake_gemini`` fixture; for benchmarks run it alone:
``python -m tests.fake_gemini --port 8765 --image-latency 1.0 --text-latency 0.5``
(it prints ``FAKE_GEMINI_URL=http://127.0.0.1:<port>`` once it listens).
"""
from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import io
import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image, ImageDraw

from liroo.providers.offline_schema import fill_schema

OPERATIONS = ("text", "image", "speech")
FAULT_KINDS = (
    "http",  # an HTTP error: status (429, 500, 503, 400...), optional retry_after seconds
    "hang",  # no answer until the client gives up (or the fake stops)
    "malformed_body",  # 200 with a body that is not JSON
    "truncated_json",  # 200, finishReason STOP, but the JSON text is cut in half
    "max_tokens",  # 200, the JSON text cut and finishReason MAX_TOKENS
    "blocked",  # a candidate with no content and finishReason `reason` (SAFETY...)
    "prompt_blocked",  # no candidates, promptFeedback.blockReason `reason`
    "no_candidates",  # 200 with no candidates at all
    "empty_parts",  # a candidate whose content has no parts
    "text_instead_of_image",  # words where a picture was asked for
)
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_PATH = re.compile(r"^/(v1[a-z0-9]*)/models/([^/:?]+):generateContent(?:\?.*)?$")
PCM_RATE = 24_000
SPEECH_S_PER_CHAR = 0.05


@dataclass
class Fault:
    kind: str
    status: int = 500
    retry_after: float | None = None
    reason: str = "SAFETY"
    operation: str | None = None  # only requests of this operation; None: the next request of any

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")


@dataclass
class Hold:
    let_through: int  # requests still answered before the gate holds the rest
    gate: threading.Event = field(default_factory=threading.Event)
    passes: Callable[["RecordedRequest"], bool] | None = None  # answered whatever let_through says


@dataclass
class RecordedRequest:
    path: str
    api_version: str
    model: str
    operation: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)

    @property
    def prompt(self) -> str:
        return "\n".join(
            part.get("text", "")
            for content in self.body.get("contents", [])
            for part in content.get("parts", [])
        )

    @property
    def config(self) -> dict[str, Any]:
        return self.body.get("generationConfig") or self.body.get("generation_config") or {}

    def config_value(self, *path: str) -> Any:
        """A generationConfig value, whichever spelling the SDK used (it sends some keys in
        snake_case)."""
        node: Any = self.config
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key, node.get(_snake(key)))
        return node


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


class _Server(ThreadingHTTPServer):
    # The real API takes a burst's connections at once; socketserver's backlog of 5 made a
    # burst of 120 calls wait seconds for SYN retries or fail to connect.
    request_queue_size = 256
    daemon_threads = True


class FakeGemini:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        image_size: tuple[int, int] = (1024, 1024),
        image_mode: str = "RGB",
        image_noise: bool = False,
        latency: dict[str, float | tuple[float, float]] | None = None,
        hang_s: float = 30.0,
    ) -> None:
        self.api_key = api_key  # when set, any other key gets Google's 400 API_KEY_INVALID
        self.image_size = image_size
        self.image_mode = image_mode
        self.image_noise = image_noise
        self.hang_s = hang_s
        self._latency: dict[str, float | tuple[float, float]] = dict(latency or {})
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._answers: list[str] = []
        self._requests: list[RecordedRequest] = []
        self._holds: dict[str, Hold] = {}
        self._in_flight = 0
        self.max_in_flight = 0
        self._stopping = threading.Event()
        self._server = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # --- life ------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeGemini":
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-gemini",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases hanging and sleeping handlers
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeGemini":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- what tests set --------------------------------------------------------
    def set_latency(
        self,
        seconds: float | tuple[float, float],
        *,
        operation: str | None = None,
        model: str | None = None,
    ) -> None:
        """Delay answers: for one model, one operation, or (neither given) every request.

        A (low, high) pair draws each delay uniformly between the two."""
        with self._lock:
            self._latency[model or operation or "*"] = seconds

    def hold(
        self,
        operation: str,
        let_through: int = 0,
        passes: Callable[[RecordedRequest], bool] | None = None,
    ) -> None:
        """Answer the next ``let_through`` requests of ``operation`` and any that ``passes``
        accepts, then keep the others waiting until ``release``: a "while it runs" window that
        cannot close before the test has looked."""
        with self._lock:
            self._holds[operation] = Hold(let_through, passes=passes)

    def release(self, operation: str | None = None) -> None:
        """Let held requests of ``operation`` (every operation if None) answer."""
        with self._lock:
            names = list(self._holds) if operation is None else [operation]
            holds = [self._holds.pop(name) for name in names if name in self._holds]
        for hold in holds:
            hold.gate.set()

    def fail(self, kind: str, times: int = 1, **options: Any) -> None:
        """Queue ``times`` faults of ``kind`` (see FAULT_KINDS) for the next matching requests."""
        with self._lock:
            self._faults.extend(Fault(kind, **options) for _ in range(times))

    def answer(self, text: str | dict | list) -> None:
        """Queue the exact text of the next text answer (a dict or list is sent as JSON)."""
        with self._lock:
            self._answers.append(text if isinstance(text, str) else json.dumps(text))

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._answers.clear()
            self._requests.clear()
            self._latency.clear()
            self.max_in_flight = 0
        self.release()

    def requests(
        self, operation: str | None = None, model: str | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._requests
                if (operation is None or r.operation == operation)
                and (model is None or r.model == model)
            ]

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    # --- serving ------------------------------------------------------------------
    def _admit(
        self, request: RecordedRequest
    ) -> tuple[threading.Event | None, float, Fault | None, str | None]:
        with self._lock:
            hold = self._holds.get(request.operation)
            gate = None
            if hold is not None and hold.passes is not None and hold.passes(request):
                pass
            elif hold is not None and hold.let_through > 0:
                hold.let_through -= 1
            elif hold is not None:
                gate = hold.gate
            self._requests.append(request)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            latency = self._latency.get(
                request.model, self._latency.get(request.operation, self._latency.get("*", 0.0))
            )
            if isinstance(latency, tuple):
                latency = random.uniform(*latency)
            fault = next(
                (f for f in self._faults if f.operation in (None, request.operation)), None
            )
            if fault is not None:
                self._faults.remove(fault)
            answer = (
                self._answers.pop(0)
                if request.operation == "text" and fault is None and self._answers
                else None
            )
        return gate, latency, fault, answer

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def respond(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers, body) for one request, or None to hang up without answering."""
        gate, latency, fault, answer = self._admit(request)
        try:
            if gate is not None:
                gate.wait(self.hang_s)
            if latency:
                self._stopping.wait(latency)
            if self.api_key is not None and request.headers.get("x-goog-api-key") != self.api_key:
                return _error(
                    400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
                )
            if fault is not None and fault.kind == "hang":
                self._stopping.wait(self.hang_s)
                return None
            if fault is not None and fault.kind == "http":
                return _error(
                    fault.status, f"fake fault {fault.status}", retry_after=fault.retry_after
                )
            if fault is not None and fault.kind == "malformed_body":
                return (
                    200,
                    {"Content-Type": "application/json"},
                    b'{"candidates": [{"content": {"parts": [{"te',
                )
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps(self._body(request, fault, answer)).encode(),
            )
        finally:
            self._done()

    def _body(
        self, request: RecordedRequest, fault: Fault | None, answer: str | None
    ) -> dict[str, Any]:
        kind = fault.kind if fault else None
        if kind == "prompt_blocked":
            return {
                "promptFeedback": {"blockReason": fault.reason},
                "usageMetadata": _usage(request, 0),
            }
        if kind == "no_candidates":
            return {"usageMetadata": _usage(request, 0), "modelVersion": request.model}
        if kind == "blocked":
            return _answer(
                request,
                None,
                fault.reason,
                safetyRatings=[
                    {
                        "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                        "probability": "HIGH",
                        "blocked": True,
                    }
                ],
            )
        if kind == "empty_parts":
            return _answer(request, [], "STOP")
        if kind == "text_instead_of_image":
            return _answer(
                request,
                [{"text": "I can describe this scene in words, but I will not draw it."}],
                "STOP",
            )
        if request.operation == "text":
            text = answer if answer is not None else self._text(request)
            finish = "STOP"
            if kind in ("truncated_json", "max_tokens"):
                text = text[: max(1, len(text) // 2)]
                finish = "MAX_TOKENS" if kind == "max_tokens" else "STOP"
            return _answer(request, [{"text": text}], finish)
        if request.operation == "image":
            data = self._image(request.prompt)
            return _answer(
                request, [{"inlineData": {"mimeType": "image/png", "data": data}}], "STOP"
            )
        pcm = _speech_pcm(request.prompt)
        return _answer(
            request,
            [
                {
                    "inlineData": {
                        "mimeType": f"audio/L16;codec=pcm;rate={PCM_RATE}",
                        "data": base64.b64encode(pcm).decode(),
                    }
                }
            ],
            "STOP",
        )

    @staticmethod
    def _text(request: RecordedRequest) -> str:
        schema = request.config_value("responseJsonSchema") or request.config_value(
            "responseSchema"
        )
        if schema:
            return json.dumps(fill_schema(schema, request.prompt))
        return f"You said: {request.prompt[:200]}"

    def _image(self, prompt: str) -> str:
        if self.image_noise:
            return _noise_png(self.image_size, self.image_mode)
        return _prompt_png(prompt, self.image_size, self.image_mode)


def gemini_env(fake: "FakeGemini", **extra: Any) -> dict[str, str]:
    """Settings that point the app at ``fake`` through the real SDK: quick retries, no pacing, no
    image cache."""
    env = {
        "GENAI_API_KEY": "test-key",
        "LIROO_GEMINI_BASE_URL": fake.url,
        "LIROO_GEMINI_RPM": "0",
        "LIROO_GEMINI_RETRY_ATTEMPTS": "2",
        "LIROO_GEMINI_RETRY_INITIAL_S": "0.05",
        "LIROO_GEMINI_TIMEOUT_S": "10",
        "LIROO_IMAGE_CACHE": "off",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --- answers --------------------------------------------------------------------


def _answer(
    request: RecordedRequest, parts: list | None, finish: str, **candidate: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"finishReason": finish, "index": 0, **candidate}
    if parts is not None:
        entry["content"] = {"parts": parts, "role": "model"}
    return {
        "candidates": [entry],
        "usageMetadata": _usage(request, 64),
        "modelVersion": request.model,
        "responseId": hashlib.sha1(f"{time.monotonic_ns()}".encode()).hexdigest()[:16],
    }


def _usage(request: RecordedRequest, out_tokens: int) -> dict[str, int]:
    prompt_tokens = max(1, len(request.prompt) // 4)
    return {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": out_tokens,
        "totalTokenCount": prompt_tokens + out_tokens,
    }


def _error(
    status: int, message: str, *, retry_after: float | None = None, reason: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    headers = {"Content-Type": "application/json"}
    details = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
            }
        )
    if retry_after is not None:
        headers["Retry-After"] = str(math.ceil(retry_after))
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"}
        )
    if details:
        error["details"] = details
    return status, headers, json.dumps({"error": error}).encode()


@functools.lru_cache(maxsize=64)
def _prompt_png(prompt: str, size: tuple[int, int], mode: str) -> str:
    """Base64 PNG: a background and a few blocks whose colours and places come from the prompt's
    hash."""
    digest = hashlib.sha256(prompt.encode()).digest()
    image = Image.new(mode, size, tuple(digest[:3]) + ((255,) if mode == "RGBA" else ()))
    draw = ImageDraw.Draw(image)
    w, h = size
    for i in range(4):
        b = digest[3 + i * 7 : 10 + i * 7]
        x, y = b[0] * w // 256, b[1] * h // 256
        colour = tuple(b[2:5]) + ((255,) if mode == "RGBA" else ())
        draw.rectangle((x, y, x + w // 4, y + h // 4), fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()


@functools.lru_cache(maxsize=4)
def _noise_png(size: tuple[int, int], mode: str) -> str:
    """Base64 PNG of random pixels: as large on the wire as it is in memory, made once per size."""
    channels = len(mode)
    image = Image.frombytes(mode, size, os.urandom(size[0] * size[1] * channels))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()


@functools.lru_cache(maxsize=1)
def _tone_period() -> bytes:
    # 200 Hz at 24 kHz
    samples = array("h", (int(8000 * math.sin(math.tau * i / 120)) for i in range(120)))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _speech_pcm(text: str) -> bytes:
    periods = max(1, int(max(0.3, len(text) * SPEECH_S_PER_CHAR) * PCM_RATE / 120))
    return _tone_period() * periods


# --- HTTP plumbing --------------------------------------------------------------


def _handler_for(fake: FakeGemini) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            match = _PATH.match(self.path)
            if not match:
                self._send(*_error(404, f"no such method {self.path}"))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send(*_error(400, "request body is not JSON"))
                return
            config = body.get("generationConfig") or {}
            modalities = [
                str(m).upper()
                for m in config.get("responseModalities") or config.get("response_modalities") or []
            ]
            operation = (
                "image" if "IMAGE" in modalities else "speech" if "AUDIO" in modalities else "text"
            )
            request = RecordedRequest(
                path=self.path,
                api_version=match.group(1),
                model=match.group(2),
                operation=operation,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            result = fake.respond(request)
            if result is None:
                self.close_connection = True
                return
            self._send(*result)

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (its timeout) before we answered

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A loopback Gemini for benchmarks and manual runs."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--text-latency", type=float, default=0.0)
    parser.add_argument("--image-latency", type=float, default=0.0)
    parser.add_argument("--tts-latency", type=float, default=0.0)
    parser.add_argument("--image-size", default="1024x1024", help="WIDTHxHEIGHT of every picture")
    parser.add_argument("--image-mode", default="RGB", choices=["RGB", "RGBA"])
    parser.add_argument(
        "--image-noise", action="store_true", help="incompressible pictures (memory tests)"
    )
    parser.add_argument("--api-key", default=None, help="accept only this x-goog-api-key")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    fake = FakeGemini(
        args.host,
        args.port,
        api_key=args.api_key,
        image_size=(width, height),
        image_mode=args.image_mode,
        image_noise=args.image_noise,
        latency={
            "text": args.text_latency,
            "image": args.image_latency,
            "speech": args.tts_latency,
        },
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=fake.stop).start())
    print(f"FAKE_GEMINI_URL={fake.url}", flush=True)
    try:
        fake._server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
