"""Stand-in servers on 127.0.0.1 that fail the way networks and proxies do: an answer cut off
mid-body, a connection closed without an answer, a proxy's HTML error page, an answer that never
comes. Standard library only: Blender's test processes import it too.

A stand-in runs `respond(handler)` for every request; the helpers below build the usual ones,
most of them forwarding to a real server and spoiling only the answers a test picks.
"""
from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class _Handler(BaseHTTPRequestHandler):
    def _respond(self):
        self.server.respond(self)

    do_GET = do_POST = do_DELETE = _respond

    def request_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, *arguments):  # keep the test output clean
        pass


@contextlib.contextmanager
def stand_in(respond):
    """A threaded HTTP server on a free loopback port answering with respond(handler); yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.respond = respond
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def forward(upstream: str, handler, body: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """The real server's (status, headers, body) for the request the handler holds (whose body
    was read already when given)."""
    address = urlparse(upstream)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    headers = {name: value for name, value in handler.headers.items() if name.lower() not in ("host", "connection")}
    body = handler.request_body() if body is None else body
    connection.request(handler.command, handler.path, body=body or None, headers=headers)
    answer = connection.getresponse()
    result = answer.status, answer.getheaders(), answer.read()
    connection.close()
    return result


def send(handler, status: int, headers, body: bytes, cut_after: int | None = None) -> None:
    """Write an answer whose headers promise the whole body; with cut_after, only that many bytes
    of it follow before the connection is closed."""
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("content-length", "connection", "date", "server", "transfer-encoding"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(body if cut_after is None else body[:cut_after])
    handler.wfile.flush()
    handler.close_connection = True
    if cut_after is not None:
        handler.connection.shutdown(socket.SHUT_RDWR)


def cutting_off(upstream: str, should_cut):
    """Forward to upstream; the answers for which should_cut(method, path) is true stop halfway."""

    def respond(handler):
        status, headers, body = forward(upstream, handler)
        cut = should_cut(handler.command, handler.path)
        send(handler, status, headers, body, cut_after=len(body) // 2 if cut else None)

    return respond


def recording(upstream: str, requests: list):
    """Forward to upstream, appending (method, path, request body) of every request to `requests`."""

    def respond(handler):
        body = handler.request_body()
        requests.append((handler.command, handler.path, body))
        send(handler, *forward(upstream, handler, body))

    return respond


def answering(status: int, body: bytes, content_type: str):
    """Every request gets this answer (a proxy's error page, another service)."""

    def respond(handler):
        handler.request_body()
        send(handler, status, [("Content-Type", content_type)], body)

    return respond


def _drop_connection(handler) -> None:
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def hanging_up(handler) -> None:
    """Reads the request, then closes the connection without a word."""
    handler.request_body()
    _drop_connection(handler)


def silent_until(released: threading.Event):
    """Takes the request and answers nothing until `released` is set (then hangs up)."""

    def respond(handler):
        handler.request_body()
        released.wait()
        _drop_connection(handler)

    return respond


PROXY_ERROR_PAGE = (b"<html><head><title>502 Bad Gateway</title></head>"
                    b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>")
