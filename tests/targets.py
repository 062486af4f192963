"""A real HTTP target for resend tests: records every request exactly as it arrived."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Target:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    status: int = 200
    reply_headers: list[tuple[str, str]] = field(default_factory=lambda: [("X-Target", "yes")])
    reply_body: bytes = b"thanks"
    delay: float = 0.0  # seconds to wait before answering (the request is recorded first)

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_port}"

    def header(self, name: str) -> str:
        return next(v for n, v in self.received[-1].headers if n.lower() == name)


def start_target(tls: ssl.SSLContext | None = None) -> Target:
    """A target on 127.0.0.1; with `tls`, it speaks HTTPS with that context's certificate."""
    target: Target

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one_request(self) -> None:
            # Any method, unknown verbs too.
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target.received.append(
                Received(self.command, self.path, list(self.headers.items()), body)
            )
            if target.delay:
                time.sleep(target.delay)
            self.send_response(target.status)
            for name, value in target.reply_headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(target.reply_body)))
            self.end_headers()
            self.wfile.write(target.reply_body)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    target = Target(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return target
