"""The waitress server under the web app (WebApp.py), set up for bounded memory and bounded waits.

Owns how requests reach the Flask app: waitress keeps each request body (at most the upload
limit) in memory instead of spooling it to a temporary file, answers a larger Content-Length
with a JSON 413 before reading the body, answers 408 to a request not received in full within
``request_deadline_s`` (a client trickling its body) and closes it, closes connections idle for
``idle_timeout_s``, and holds at most ``connections`` connections (each may hold one body; more
wait in the listen backlog). Also the glibc malloc settings of a long-lived server.

Usage:
    server = make_server(app, "127.0.0.1", 8000, threads=8, max_body=20 * 2 ** 20)
    server.run()        # returns on KeyboardInterrupt (SIGINT; WebApp.serve maps SIGTERM to it)
    server.close()
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error, RequestEntityTooLarge

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"}
CONNECTIONS = 16          # open connections at once; each may hold one request body of up to the upload limit
REQUEST_DEADLINE_S = 120  # a request's headers and body must arrive within this (20 MiB: at least 1.4 Mbit/s)
IDLE_TIMEOUT_S = 30       # a connection silent this long (between requests, or mid-request) is closed
CHECK_EVERY_S = 2         # how often the deadlines are checked
TRIM_AFTER_PIXELS = 4e6   # after an image this big, freed heap is handed back (release_memory; else it stays in RSS)


def upload_too_large(content_length: int | None, limit: int) -> str:
    """The 413 message for a request body over ``limit`` bytes, naming both sizes in MiB."""
    size = f"{content_length / 2 ** 20:.1f} MiB; " if content_length and content_length > limit else ""
    return f"upload too large ({size}this server's limit is {limit / 2 ** 20:g} MiB per request)"


class JsonError(Error):
    """An error waitress answers itself (before the app runs), as the app's JSON {"error": ...}."""

    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason

    def to_response(self, ident=None):
        return (f"{self.code} {self.reason}", [("Content-Type", "application/json"), *SECURITY_HEADERS.items()],
                json.dumps({"error": self.body}).encode())


class DeadlineParser(HTTPRequestParser):
    """waitress's request parser that notes when the request began and says 413 in JSON, in MiB."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge):  # the body limit (the header limit is another class)
            self.error = JsonError(413, "Content Too Large",
                                   upload_too_large(self.content_length, self.adj.max_request_body_size - 1))
        return consumed


class DeadlineChannel(HTTPChannel):
    parser_class = DeadlineParser

    def time_out(self, deadline_s: float) -> bool:
        """Answer 408 (then close) if the request being received began over ``deadline_s`` ago; True if so."""
        with self.requests_lock:
            req = self.request
            if req is None or self.requests or req.completed or time.monotonic() - req.started < deadline_s:
                return False
            if not req.headers_finished:
                req.parse_header(b"GET / HTTP/1.0\r\n")  # as waitress does for its own early errors
            req.error = JsonError(408, "Request Timeout", f"request not received in full within {deadline_s:g} s")
            req.completed, self.request = True, None
            self.requests.append(req)
        self.server.add_task(self)
        return True


class DeadlineServer(TcpWSGIServer):
    channel_class = DeadlineChannel
    request_deadline_s = float(REQUEST_DEADLINE_S)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # closes idle connections (channel_timeout)
        for channel in list(self.active_channels.values()):
            channel.time_out(self.request_deadline_s)


def sized_input(app):
    """``app`` reading exactly Content-Length bytes of the body waitress has received in full (waitress sets it,
    chunked requests included): with waitress's wsgi.input_terminated, Werkzeug 3.1 reads to a maximum
    instead and refuses a body of exactly MAX_CONTENT_LENGTH with 413."""
    def app_with_sized_input(environ, start_response):
        environ.pop("wsgi.input_terminated", None)
        return app(environ, start_response)
    return app_with_sized_input


def make_server(app, host: str, port: int, threads: int, max_body: int, connections: int = CONNECTIONS,
                request_deadline_s: float = REQUEST_DEADLINE_S, idle_timeout_s: int = IDLE_TIMEOUT_S,
                check_every_s: int = CHECK_EVERY_S) -> MultiSocketServer:
    """A waitress server for ``app`` on host:port (port 0: any free one; see .effective_listen), not yet running.

    ``max_body`` (bytes) is the largest request body accepted, and also the size up to which a body
    stays in memory: so no body is ever written to disk."""
    adj = Adjustments(host=host, port=port, threads=threads, connection_limit=connections,
                      channel_timeout=idle_timeout_s, cleanup_interval=check_every_s,
                      max_request_body_size=max_body + 1,  # waitress refuses a body of this size or more
                      inbuf_overflow=max_body + 1, ident="colorizer")
    dispatcher, sockets = ThreadedTaskDispatcher(), {}
    dispatcher.set_thread_count(adj.threads)
    servers = [DeadlineServer(sized_input(app), sockets, adj=adj, sockinfo=info, dispatcher=dispatcher)
               for info in adj.listen]
    for s in servers:
        s.request_deadline_s = float(request_deadline_s)
    return MultiSocketServer(sockets, adj, [(s.effective_host, s.effective_port) for s in servers], dispatcher,
                             servers[0].log_info)


def _libc():
    """glibc, or None (musl, macOS, Windows: the malloc settings below are then skipped)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_malloc(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas (one per thread by default, up to 8 per core, each keeping its own freed memory)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX; the same as MALLOC_ARENA_MAX=2, for threads started after this


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim) after a big request."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
