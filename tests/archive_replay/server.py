"""A local HTTP server on 127.0.0.1 that replays archive answers and injects faults.

Routes map (method, path regex) to a function ``handler(request) -> Reply``.
Faults are matched before the routes, each a predicate on the request plus
what to do and how many times: sleep past the client's timeout, answer with
an HTTP error and a body, send fewer bytes than the Content-Length promised,
or drop the connection. Every request is logged, so a test can assert that a
cached result caused no request at all.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """What the client sent: method, path, query, headers, body (and the form, if any)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def form(self) -> dict[str, str]:
        ctype = self.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8"), keep_blank_values=True).items()}
        return {}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Reply:
    """An answer: status, body, headers; ``ranges=True`` honours ``Range: bytes=N-``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    ranges: bool = False


@dataclass
class Fault:
    """One injected failure, for ``times`` requests (None: every one). ``kind``:
    sleep (answer after ``seconds``), status (answer ``status`` with ``body``), truncate (send
    ``fraction`` of the body, then close), stall (send ``fraction``, wait ``seconds``, close),
    drop (close without answering)."""

    match: Callable[[Request], bool]
    kind: str
    times: int | None = 1
    seconds: float = 0.0
    status: int = 500
    body: bytes = b""
    content_type: str = "text/plain"
    fraction: float = 0.5

    def take(self) -> bool:
        if self.times is None:
            return True
        if self.times > 0:
            self.times -= 1
            return True
        return False


class ReplayServer:
    """``with ReplayServer() as srv: srv.url`` -- a threaded server on 127.0.0.1, port chosen by the OS."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Callable[[Request], Reply]]] = []
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.files: dict[str, bytes] = {}  # static files for routes that want them
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------- setup
    def route(self, method: str, pattern: str, handler: Callable[[Request], Reply]) -> None:
        self.routes.append((method.upper(), re.compile(pattern), handler))

    def fault(self, match: Callable[[Request], bool] | str, kind: str, **kwargs) -> Fault:
        if isinstance(match, str):
            regex = re.compile(match)
            f = Fault(lambda r: bool(regex.search(r.path)), kind, **kwargs)
        else:
            f = Fault(match, kind, **kwargs)
        self.faults.append(f)
        return f

    def requests(self, path_regex: str = "") -> list[Request]:
        regex = re.compile(path_regex)
        with self._lock:
            return [r for r in self.log if regex.search(r.path)]

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ReplayServer:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                import sys

                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)  # a client that gave up is no news

        self._httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---------------------------------------------------------------- serving
    def _serve(self, h: http.server.BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Request(method, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in h.headers.items()},
                      body)
        with self._lock:
            self.log.append(req)
            fault = next((f for f in self.faults if f.match(req) and f.take()), None)
        if fault is not None and fault.kind == "sleep":
            time.sleep(fault.seconds)
            fault = None  # then answer normally (too late for the client)
        if fault is not None and fault.kind == "drop":
            h.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            self._send(h, Reply(fault.status, fault.body, {"Content-Type": fault.content_type}))
            return
        reply = self._dispatch(req)
        cut = fault is not None and fault.kind in ("truncate", "stall")
        self._send(h, reply, range_header=req.headers.get("range"), if_range=req.headers.get("if-range"),
                   truncate=fault.fraction if cut else None,
                   stall=fault.seconds if cut and fault.kind == "stall" else 0.0)

    def _dispatch(self, req: Request) -> Reply:
        for method, regex, handler in self.routes:
            if method == req.method and regex.fullmatch(req.path):
                try:
                    return handler(req)
                except Exception as exc:  # a replay bug shows as a 500 with its message
                    return Reply(500, f"replay handler failed: {type(exc).__name__}: {exc}".encode(),
                                 {"Content-Type": "text/plain"})
        return Reply(404, b"<html><body><h1>404 Not Found</h1></body></html>", {"Content-Type": "text/html"})

    @staticmethod
    def _send(h, reply: Reply, *, truncate: float | None = None, range_header: str | None = None,
              if_range: str | None = None, stall: float = 0.0) -> None:
        body, status = reply.body, reply.status
        headers = dict(reply.headers)
        if reply.ranges:
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            headers["ETag"] = etag
            headers["Accept-Ranges"] = "bytes"
            m = re.match(r"bytes=(\d+)-$", range_header or "")
            if m and status == 200 and (if_range is None or if_range == etag):
                start = int(m.group(1))
                if start >= len(body):
                    h.send_response(416)
                    h.send_header("Content-Range", f"bytes */{len(body)}")
                    h.send_header("Content-Length", "0")
                    h.end_headers()
                    return
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                body, status = body[start:], 206
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if truncate is not None:
            h.wfile.write(body[: int(len(body) * truncate)])
            h.wfile.flush()
            time.sleep(stall)  # "stall": the client waits for bytes that do not come
            h.close_connection = True
            return
        h.wfile.write(body)


def gzipped(data: bytes) -> bytes:
    """gzip ``data`` deterministically (fixed mtime), as archives serve FITS and VOTables."""
    return gzip.compress(data, mtime=0)
