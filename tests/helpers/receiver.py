"""A local webhook receiver: records every request it gets; the first `fail_first` answer 500."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A local HTTP endpoint that records every request; the first `fail_first` get a 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    failing = receiver.fail_first > 0
                    if failing:
                        receiver.fail_first -= 1
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                              "status": 500 if failing else 200})
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"nope" if failing else b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_type(self, event_type: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["headers"].get("X-Weft-Event") == event_type]

    def delivered_events(self) -> dict[str, int]:
        """Event id -> how many times it was received and answered 200."""
        counts: dict[str, int] = {}
        with self.lock:
            for r in self.requests:
                if r["status"] == 200:
                    event_id = json.loads(r["body"])["id"]
                    counts[event_id] = counts.get(event_id, 0) + 1
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
