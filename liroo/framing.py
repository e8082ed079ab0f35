"""How a request that arrives in pieces is framed, and what the bytes still arriving may hold.

Pure logic for the worker's loop (liroo/server.py): no sockets, no gunicorn,
time passed in. ``Arrival`` finds where a request's head ends, how its body is
framed (RFC 9112 section 6) and when all of it is here; ``ArrivalBudget`` shares
the bytes that large requests still arriving may hold among the peers sending
them; ``ArrivalClock`` says when a request has taken too long, leaving out the
time the server itself kept it waiting; ``LoopArrival`` is the loop's record of one.

Hand-written: gunicorn's parser pulls from a blocking source and cannot be
resumed when bytes run out, and h11 (a resumable parser) would be a second
parser judging the same bytes differently from the one that serves them. This
only finds the framing; gunicorn's parser still judges the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The head fields that decide how the body is framed (RFC 9112 section 6).
_FRAMING_FIELD = re.compile(
    rb"\r\n(content-length|transfer-encoding|expect):[ \t]*([^\r\n]*)", re.IGNORECASE
)
_FORWARDED_FOR = re.compile(rb"\r\nx-forwarded-for:[ \t]*([^\r\n]*)", re.IGNORECASE)
_BARE_LF = re.compile(rb"(?<!\r)\n")
# A chunk-size line longer than this is refused by the parser anyway.
_MAX_CHUNK_LINE = 8192
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """The sizes a request's parts may have: gunicorn's line and head limits, the body limit."""

    line: int
    head: int
    max_body: int


class Arrival:
    """One request on its way in: its bytes so far and what its head says about its body."""

    def __init__(self, limits: Limits, data: bytes = b"") -> None:
        self.limits = limits
        self.buf = bytearray(data)
        self.head_end: int | None = None  # offset of the body, once the head is here
        self.body_length: int | None = None  # from a valid Content-Length
        self.chunks: ChunkScan | None = None
        # The declared body is over the limit: it is refused unread, the connection closed after.
        self.body_refused = False
        # The client waits for "100 Continue" before it sends the body (HTTP/1.1 only).
        self.wants_continue = False
        self._scanned = 0
        self._bare_lf = False  # a line ended by LF alone (gunicorn refuses it)

    def add(self, data: bytes) -> None:
        self.buf += data

    def complete(self) -> bool:
        """True when a thread can take the request without waiting for the client (or must answer
        it now)."""
        if self.head_end is None and not self._find_head():
            return False
        if self.chunks is not None:
            return self.chunks.complete(self.buf) or self.body_bytes() > self.limits.max_body
        return self.body_bytes() >= (self.body_length or 0)

    def body_bytes(self) -> int:
        return len(self.buf) - (self.head_end or len(self.buf))

    def size_bound(self, step: int) -> int:
        """The bytes this request will hold by its next read of up to ``step``: all of it when its
        length is known, else what came so far and one more read (up to the most it can grow to)."""
        if self.head_end is not None and self.chunks is None:
            return self.head_end + (self.body_length or 0)
        most = (self.head_end or self.limits.head) + self.limits.max_body + step
        return min(len(self.buf) + step, most)

    def forwarded_for(self, hops: int) -> str | None:
        """The client address that ``hops`` trusted proxies in front name (X-Forwarded-For, read as
        werkzeug's ProxyFix reads it), once the head is here; None without one."""
        if hops <= 0 or self.head_end is None:
            return None
        values = b",".join(_FORWARDED_FOR.findall(self.buf, 0, self.head_end))
        entries = [entry.strip() for entry in values.split(b",")]
        if len(entries) < hops or not entries[-hops]:
            return None
        return entries[-hops].decode("latin-1")

    def _find_head(self) -> bool:
        """Find the end of the head and the body's framing; True when known (or when gunicorn must
        judge now)."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        # Only the bytes that arrived since the last look: a head trickled in byte by byte must
        # not be rescanned whole on every read (this runs on the worker's loop thread).
        if not self._bare_lf:
            self._bare_lf = _BARE_LF.search(buf, max(0, self._scanned - 1)) is not None
        self._scanned = len(buf)
        if end < 0:
            first_line_over = buf.find(b"\r\n") < 0 and len(buf) > self.limits.line + 2
            # Each is refused by gunicorn from what is here: let it answer now.
            if first_line_over or len(buf) > self.limits.head or self._bare_lf:
                self.head_end = len(buf)
                return True
            return False
        self.head_end = end + 4
        self._read_framing(end)
        return True

    def _read_framing(self, end: int) -> None:
        lengths, codings, expect = [], [], False
        for name, value in _FRAMING_FIELD.findall(self.buf, 0, end + 2):
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip(b" \t"))
            elif name == b"transfer-encoding":
                codings += [c.strip(b" \t").lower() for c in value.split(b",")]
            else:
                expect = value.strip(b" \t").lower() == b"100-continue"
        if codings:
            if codings == [b"chunked"] and not lengths:
                self.chunks = ChunkScan(self.head_end)
        elif len(lengths) == 1 and lengths[0].isdigit():
            self.body_length = int(lengths[0])
            if self.body_length > self.limits.max_body:
                self.body_length = 0  # refused by its length, without being read
                self.body_refused = True
        # Anything else (another coding, several lengths...) is gunicorn's or the app's to refuse
        # from the head alone: no body is waited for.
        request_line = self.buf[: self.buf.find(b"\r\n")]
        # RFC 9110 section 10.1.1: never a 1xx to HTTP/1.0; a refused body is not asked for.
        self.wants_continue = (
            expect
            and request_line.endswith(b" HTTP/1.1")
            and (self.chunks is not None or bool(self.body_length))
        )


class ChunkScan:
    """Where a chunked body ends, found as its bytes come (RFC 9112 section 7.1).

    A malformed size line ends the scan: gunicorn then refuses the body from
    the bytes at hand.
    """

    def __init__(self, start: int) -> None:
        self.pos = start
        self.remaining = 0  # bytes of chunk data (and its CRLF) still to skip
        self.in_trailer = False

    def complete(self, buf: bytearray) -> bool:
        while True:
            if self.remaining:
                step = min(self.remaining, len(buf) - self.pos)
                self.pos += step
                self.remaining -= step
                if self.remaining:
                    return False
            if self.in_trailer:
                return (
                    buf[self.pos : self.pos + 2] == b"\r\n" or buf.find(b"\r\n\r\n", self.pos) >= 0
                )
            eol = buf.find(b"\r\n", self.pos)
            if eol < 0:
                return len(buf) - self.pos > _MAX_CHUNK_LINE
            size = buf[self.pos : eol].split(b";", 1)[0].strip(b" \t")
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                return True
            self.pos = eol + 2
            if int(size, 16) == 0:
                self.in_trailer = True
            else:
                self.remaining = int(size, 16) + 2


class ArrivalClock:
    """When a request still arriving has run out of time: ``quiet_s`` of silence, or ``total_s``
    in all. Time the server kept it waiting (``pause``/``resume``) counts for neither: the client
    may have sent everything meanwhile."""

    def __init__(self, now: float) -> None:
        self.started = self.last_byte = now
        self.paused_since: float | None = None

    def byte_came(self, now: float) -> None:
        self.last_byte = now

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.paused_since = now

    def resume(self, now: float) -> None:
        if self.paused_since is not None:
            waited = now - self.paused_since
            self.started += waited
            self.last_byte += waited
            self.paused_since = None

    def expired(self, now: float, quiet_s: float, total_s: float) -> bool:
        if self.paused_since is not None:
            return False
        return now - self.last_byte > quiet_s or now > self.started + total_s


class ArrivalBudget:
    """The bytes that large requests still arriving may hold in one worker, shared among peers.

    A request asks for the bytes it will hold; if they do not fit it waits in
    line, unread (the kernel's buffers and TCP flow control hold the rest), and
    is granted when bytes come back. No peer holds more than ``peer_share``, so
    one client's many slow uploads cannot keep the others' waiting. When every
    request holding bytes is itself waiting to grow (chunked bodies grow as
    they come), the first in line is granted over the budget: the budget
    always comes back, and nothing waits on something that waits too.
    """

    def __init__(self, total: int, peer_share: int) -> None:
        self.total = total
        self.peer_share = peer_share
        self.held = 0
        self._by_key: dict[object, tuple[object, int]] = {}  # key -> (peer, bytes held)
        self._by_peer: dict[object, int] = {}
        self._waiting: dict[object, tuple[object, int]] = {}  # key -> (peer, bytes asked), in order

    def holds(self, key) -> int:
        return self._by_key.get(key, (None, 0))[1]

    def is_waiting(self, key) -> bool:
        return key in self._waiting

    def waiting(self) -> int:
        return len(self._waiting)

    def ask(self, key, peer, size: int) -> bool:
        """Hold ``size`` bytes in all for ``key``: True if granted, else ``key`` waits in line."""
        if size <= self.holds(key):
            return True
        if self._fits(key, peer, size) or self._all_holders_wait(but=key):
            self._take(key, peer, size)
            return True
        self._waiting[key] = (peer, size)
        return False

    def give_back(self, key) -> list:
        """``key`` is done (handed over or closed): its bytes come back. Returns the waiting keys
        granted now, in order."""
        self._waiting.pop(key, None)
        peer, size = self._by_key.pop(key, (None, 0))
        if size:
            self.held -= size
            left = self._by_peer[peer] - size
            if left:
                self._by_peer[peer] = left
            else:
                del self._by_peer[peer]
        granted = [
            key for key, (peer, size) in self._waiting.items() if self._fits(key, peer, size)
        ]
        granted = [key for key in granted if self._grant_waiting(key, check=True)]
        if not granted and self._waiting and self._all_holders_wait():
            # Let one that holds bytes already finish first: it gives more back.
            first = next(
                (key for key in self._waiting if self.holds(key)), next(iter(self._waiting))
            )
            self._grant_waiting(first, check=False)
            granted.append(first)
        return granted

    def _grant_waiting(self, key, check: bool) -> bool:
        peer, size = self._waiting[key]
        if check and not self._fits(key, peer, size):
            return False  # an earlier one in line took the room
        del self._waiting[key]
        self._take(key, peer, size)
        return True

    def _fits(self, key, peer, size: int) -> bool:
        more = size - self.holds(key)
        return (
            self.held + more <= self.total and self._by_peer.get(peer, 0) + more <= self.peer_share
        )

    def _all_holders_wait(self, but=None) -> bool:
        return all(key in self._waiting for key in self._by_key if key != but)

    def _take(self, key, peer, size: int) -> None:
        more = size - self.holds(key)
        self._by_key[key] = (peer, size)
        self._by_peer[peer] = self._by_peer.get(peer, 0) + more
        self.held += more


class LoopArrival:
    """A request on its way in, as the worker's loop tracks it: its connection (any object),
    framing and clock, from ``now``."""

    __slots__ = ("conn", "framing", "clock", "watched", "continue_sent", "peer")

    def __init__(self, conn, framing: Arrival, now: float) -> None:
        self.conn = conn
        self.framing = framing
        self.clock = ArrivalClock(now)
        self.watched = False  # registered with the worker's selector
        self.continue_sent = False
        self.peer: str | None = None  # the client's address, once asked for the budget
