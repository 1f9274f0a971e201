"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for tests and offline notebooks.

In-process use:

    with FakeJudgeServer(replies=["分数: 8", ("status", 429), ("sleep", 2.0), ("raw", b"not json")]) as srv:
        ...  # point the judge at srv.base_url; srv.requests records what arrived

Each POST /v1/chat/completions pops the next behaviour (the last one repeats):
    "text"                      -> 200, a chat completion whose content is "text"
    ("status", code[, headers]) -> that HTTP status with a JSON error body (and optional headers)
    ("sleep", seconds[, text])  -> wait, then answer text (default: the echo score below)
    ("raw", bytes)              -> 200 with exactly these bytes as the body
With replies=None every request gets "分数: N", N = len(last user message) % 11 (deterministic).

Subprocess use (runs the echo server until killed, writing its base_url to PATH):

    python tests/fake_openai_server.py --port-file PATH
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeJudgeServer", "echo_reply", "main"]


def echo_reply(body: dict) -> str:
    """The default deterministic verdict: "分数: N" with N = len(last user message) % 11."""
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"分数: {len(users[-1]) % 11 if users else 0}"


def _completion(model: str, text: str) -> bytes:
    reply = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return json.dumps(reply, ensure_ascii=False).encode("utf-8")


class FakeJudgeServer:
    """Loopback chat-completions server with a queue of scripted behaviours; a context manager."""

    def __init__(self, replies=None, *, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None):
        self._replies = list(replies) if replies is not None else None
        self._lock = threading.Lock()
        self.api_key = api_key  # when set, requests without "Bearer <api_key>" get HTTP 401
        self.requests: list[dict] = []
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give a client, e.g. http://127.0.0.1:PORT/v1."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> "FakeJudgeServer":
        """Serve in a background daemon thread."""
        # A short poll interval makes stop() return in ~50 ms instead of the default 0.5 s.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "FakeJudgeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_behaviour(self):
        with self._lock:
            if self._replies is None:
                return None
            return self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]

    def _record(self, path: str, headers: dict, body) -> None:
        with self._lock:
            self.requests.append({"path": path, "headers": headers, "json": body})

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                server._handle(self)

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw.decode("utf-8"))
        except ValueError:
            body = None
        self._record(h.path, dict(h.headers), body)
        if h.path.rstrip("/") != "/v1/chat/completions":
            return _send(h, 404, b'{"error": {"message": "not found"}}')
        if self.api_key is not None and h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _send(h, 401, b'{"error": {"message": "invalid api key"}}')
        if not isinstance(body, dict):
            return _send(h, 400, b'{"error": {"message": "body is not JSON"}}')
        self._respond(h, self._next_behaviour(), body)

    def _respond(self, h, behaviour, body: dict) -> None:
        model = body.get("model", "fake")
        if behaviour is None or isinstance(behaviour, str):
            return _send(h, 200, _completion(model, behaviour or echo_reply(body)))
        kind, arg, *rest = behaviour
        if kind == "status":
            error = json.dumps({"error": {"message": f"scripted status {arg}"}}).encode()
            return _send(h, int(arg), error, rest[0] if rest else None)
        if kind == "sleep":
            time.sleep(float(arg))
            return _send(h, 200, _completion(model, rest[0] if rest else echo_reply(body)))
        if kind == "raw":
            return _send(h, 200, arg if isinstance(arg, bytes) else str(arg).encode("utf-8"))
        raise ValueError(f"unknown fake-server behaviour {behaviour!r}")


def _send(h: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict | None = None) -> None:
    try:
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            h.send_header(name, str(value))
        h.end_headers()
        h.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (e.g. its timeout fired during a scripted sleep)


def _write_atomically(path: str, text: str) -> None:
    # A polling parent must never read a half-written URL.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _interrupt(signum, frame):
    # SIGTERM -> KeyboardInterrupt so the finally block in main() closes the socket cleanly.
    raise KeyboardInterrupt


def main(argv=None) -> None:
    """CLI: serve the echo judge until SIGTERM/SIGINT, writing base_url to --port-file."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible judge server (echo mode).")
    parser.add_argument("--port-file", required=True, help="file to write the server's base_url into")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free port)")
    args = parser.parse_args(argv)
    server = FakeJudgeServer(replies=None, port=args.port)
    signal.signal(signal.SIGTERM, _interrupt)
    _write_atomically(args.port_file, server.base_url)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main()
