"""An HTTP proxy on 127.0.0.1 that injects faults between an S3 client and an S3 server.

Point boto3 (or awscli) at the proxy's URL with ``endpoint_url``; it forwards every request
to the upstream server (moto, see ``s3_server.py``) over keep-alive connections, except that
with probability ``rate`` a request meets one of these faults (drawn from ``faults`` with a
seeded RNG):

- ``500``  an S3 ``InternalError`` response, the request never reaches the server
- ``503``  an S3 ``SlowDown`` response, the request never reaches the server
- ``drop`` the connection is closed before any response (the request is not forwarded)
- ``cut``  the request is forwarded; the response's headers are sent with the full
  Content-Length, then half of its body, then the connection is closed (a response without
  a body is not sent at all: the server did the work, the client never hears of it)

and, only when named in ``faults`` (it is not in ``FAULTS``):

- ``etag`` the request is forwarded and answered whole, with its ``ETag`` header replaced
  by another (an upload whose answer does not show that the body arrived as sent)

``latency_ms`` delays every request by that much before it is handled (a distant endpoint,
for benchmarks). ``scope="objects"`` limits faults to requests that name a key (listings and
bucket calls pass untouched). ``counts`` counts requests by method, ``keyed`` those that name
a key (path-style ``/bucket/key``) by method, ``injected`` faults by kind, ``keyed_faults``
the faults met by requests that name a key, ``ranged`` the requests that carried a Range
header, ``started_after`` the listings that started after a given key (``start-after``).

Standard library only. In-process (``FaultProxy(...).start()``, an asyncio loop on a
daemon thread) for tests, or its own process for benchmarks::

    python tests/fault_proxy.py http://127.0.0.1:PORT --latency-ms 25   # prints its port
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
from collections import Counter
from urllib.parse import urlsplit

FAULTS = ("500", "503", "drop", "cut")
CHUNK = 256 * 1024
_ERRORS = {
    "500": ("500 Internal Server Error", "InternalError",
            "We encountered an internal error. Please try again."),
    "503": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
}


class _Closed(Exception):
    """The client or the upstream connection went away."""


def _parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = raw.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return lines[0], headers


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _head_bytes(first: str, headers: list[tuple[str, str]]) -> bytes:
    text = first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return text.encode("latin-1")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, framing included (forwarded as it came)."""
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        out += line
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, then the empty line
                trailer = await reader.readuntil(b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


class FaultProxy:
    """See the module docstring. Settings may be changed while it runs (``configure``)."""

    def __init__(self, upstream: str, *, rate: float = 0.0, faults=FAULTS,
                 latency_ms: float = 0.0, seed: int = 0, scope: str = "all"):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.counts: Counter[str] = Counter()
        self.keyed: Counter[str] = Counter()  # requests that name a key, by method
        self.injected: Counter[str] = Counter()
        self.keyed_faults = 0
        self.ranged = 0
        self.started_after = 0
        self.url = ""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.rate, self.faults, self.latency_ms, self.scope = rate, tuple(faults), latency_ms, scope

    # ------------------------------------------------------------------ control

    def configure(self, *, rate: float | None = None, faults=None, latency_ms: float | None = None,
                  seed: int | None = None, scope: str | None = None) -> FaultProxy:
        with self._lock:
            if rate is not None:
                self.rate = rate
            if faults is not None:
                self.faults = tuple(faults)
            if latency_ms is not None:
                self.latency_ms = latency_ms
            if seed is not None:
                self._rng.seed(seed)
            if scope is not None:
                self.scope = scope
        return self

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.keyed.clear()
            self.injected.clear()
            self.keyed_faults = 0
            self.ranged = 0
            self.started_after = 0

    def start(self) -> str:
        """Serve on a daemon thread; the proxy's URL."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(
                self._serve, "127.0.0.1", 0, limit=1 << 20, backlog=512))
            self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.url

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ serving

    def _decide(self, method: str, target: str, headers) -> str | None:
        """Count the request; the fault it meets, if any."""
        with self._lock:
            self.counts[method] += 1
            if _header(headers, "Range"):
                self.ranged += 1
            if "start-after=" in (urlsplit(target).query or ""):
                self.started_after += 1
            keyed = "/" in urlsplit(target).path.strip("/")  # /bucket/key, path-style
            if keyed:
                self.keyed[method] += 1
            if self.scope == "objects" and not keyed:
                return None
            if not self.faults or self._rng.random() >= self.rate:
                return None
            fault = self._rng.choice(self.faults)
            self.injected[fault] += 1
            self.keyed_faults += keyed
            return fault

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: list = []  # [reader, writer] of this client's upstream connection
        try:
            while await self._one(reader, writer, upstream):
                pass
        except (_Closed, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError, asyncio.CancelledError):
            pass  # a dropped connection ends this client's session, nothing more
        finally:
            for w in (writer, *upstream[1:]):
                w.close()

    async def _one(self, reader, writer, upstream: list) -> bool:
        """Handle one request; False when the client connection is to be closed."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed a kept-alive connection
        first, headers = _parse_head(raw)
        method, target, _ = first.split(" ", 2)
        if (_header(headers, "Expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        body = await self._request_body(reader, headers)
        fault = self._decide(method, target, headers)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if fault in _ERRORS:
            await self._error(writer, fault, method)
            return True
        if fault == "drop":
            return False
        raw = await self._forward(_head_bytes(first, headers) + body, upstream)
        keep = await self._relay(raw, writer, method, cut=fault == "cut", upstream=upstream,
                                 etag=fault == "etag")
        client_close = (_header(headers, "Connection") or "").lower() == "close"
        return keep and not client_close

    async def _forward(self, request: bytes, upstream: list) -> bytes:
        """Send the request upstream; the response's head. A kept-alive upstream connection
        the server has closed meanwhile is replaced once (that is no fault of ours to inject)."""
        for reused in (bool(upstream), False):
            if not reused:
                await self._connect(upstream)
            up_reader, up_writer = upstream
            try:
                up_writer.write(request)
                await up_writer.drain()
                return await up_reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                if not reused:
                    raise
        raise _Closed()  # pragma: no cover - the loop returns or raises

    async def _connect(self, upstream: list) -> None:
        for w in upstream[1:]:
            w.close()
        upstream[:] = await asyncio.open_connection(*self.upstream, limit=1 << 20)

    @staticmethod
    async def _request_body(reader, headers) -> bytes:
        if (_header(headers, "Transfer-Encoding") or "").lower() == "chunked":
            return await _read_chunked(reader)
        length = int(_header(headers, "Content-Length") or 0)
        return await reader.readexactly(length) if length else b""

    @staticmethod
    async def _error(writer, fault: str, method: str) -> None:
        status, code, message = _ERRORS[fault]
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
                ).encode()
        if method == "HEAD":
            body = b""
        writer.write(_head_bytes(f"HTTP/1.1 {status}", [
            ("Content-Type", "application/xml"), ("Content-Length", str(len(body))),
            ("x-amz-request-id", "fault-proxy")]) + body)
        await writer.drain()

    async def _relay(self, raw: bytes, writer, method: str, *, cut: bool, upstream: list,
                     etag: bool = False) -> bool:
        """Copy one response (its head ``raw`` already read) from upstream to the client, or
        half of it for ``cut``; True when the client connection may be kept."""
        up_reader = upstream[0]
        first, headers = _parse_head(raw)
        status = int(first.split(" ", 2)[1])
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        chunked = (_header(headers, "Transfer-Encoding") or "").lower() == "chunked"
        length = _header(headers, "Content-Length")
        up_keep = (_header(headers, "Connection") or "").lower() != "close"
        # "Connection" is hop-by-hop: the client keeps its connection to us whatever the
        # server (moto's closes every connection) says; we reconnect upstream as needed
        headers = [(k, v) for k, v in headers if k.lower() != "connection"]
        if etag:
            headers = [(k, '"0123456789abcdef0123456789abcdef"' if k.lower() == "etag" else v)
                       for k, v in headers]
        raw = _head_bytes(first, headers)
        if cut:
            await self._cut(up_reader, writer, raw, None if no_body or chunked else length)
            return False  # both connections are closed: the rest of the body is never read
        writer.write(raw)
        if no_body:
            pass
        elif chunked:
            writer.write(await _read_chunked(up_reader))
        elif length is not None:
            left = int(length)
            while left:
                block = await up_reader.read(min(CHUNK, left))
                if not block:
                    raise _Closed()
                writer.write(block)
                left -= len(block)
                await writer.drain()
        else:  # the body runs until upstream closes, and so must ours
            while block := await up_reader.read(CHUNK):
                writer.write(block)
            await writer.drain()
            return False
        await writer.drain()
        if not up_keep:
            upstream[1].close()
            upstream.clear()
        return True

    @staticmethod
    async def _cut(up_reader, writer, raw: bytes, length: str | None) -> None:
        """Headers and half the body, or nothing when there is no body to cut."""
        size = int(length) if length else 0
        if size < 2:
            return
        half = await up_reader.readexactly(size // 2)
        writer.write(raw + half)
        await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="http://127.0.0.1:PORT of the S3 server")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scope", choices=("all", "objects"), default="all")
    args = parser.parse_args()
    proxy = FaultProxy(args.upstream, rate=args.rate, faults=args.faults.split(","),
                       latency_ms=args.latency_ms, seed=args.seed, scope=args.scope)
    print(proxy.start().rsplit(":", 1)[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    proxy.stop()
    print(dict(proxy.counts), dict(proxy.injected), file=sys.stderr)


if __name__ == "__main__":
    main()
