"""A RelayCore stand-in: a small real HTTP server (in a thread) with RelayCore's two routes under
`/api/v1`, so weft's real client is tested against real HTTP.

- `GET /api/v1/vehicles?limit&offset`: its vehicles, paged, as `{data, meta{total, limit, offset}}`.
- `POST /api/v1/recommendations`: checks the body, records it, answers a receipt (201); a VIN in
  `refuse_vins` is refused (422) like an unknown vehicle.
Every request needs `Authorization: Bearer <api_key>`; another key is a 401 with a message.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/api/v1"

VEHICLES: list[dict[str, Any]] = [
    {"id": "veh_123456789", "vin": "1HGCM82633A123456", "make": "Toyota", "model": "Camry", "year": 2022,
     "trim": "XLE", "mileage": 35000, "last_service_date": "2025-01-15", "last_service_mileage": 30000,
     "customer_id": "cust_123456789"},
    {"id": "veh_987654321", "vin": "5FNRL6H72NB123456", "make": "Honda", "model": "Accord", "year": 2023,
     "trim": "Sport", "mileage": 15000, "last_service_date": "2025-03-01", "last_service_mileage": 10000,
     "customer_id": "cust_987654321"},
    {"id": "veh_555000111", "vin": "1FTFW1E50JFA00001", "make": "Ford", "model": "F-150", "year": 2018,
     "trim": "XLT", "mileage": 88000, "last_service_date": "2024-06-20", "last_service_mileage": 76000,
     "customer_id": "cust_555000111"},
]
PRIORITIES = {"low", "medium", "high"}


class RelayCoreStandIn:
    """`with RelayCoreStandIn(api_key) as relaycore:` serves at `relaycore.base_url` until the block ends;
    `received` holds every accepted recommendations body, `requests` every request's method, path and
    Authorization header."""

    def __init__(self, api_key: str, vehicles: list[dict[str, Any]] | None = None,
                 refuse_vins: set[str] | None = None) -> None:
        self.api_key = api_key
        self.vehicles = list(VEHICLES if vehicles is None else vehicles)
        self.refuse_vins = set(refuse_vins or ())
        self.received: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}{PREFIX}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="relaycore-standin", daemon=True)

    def __enter__(self) -> RelayCoreStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _error(self, status: int, code: str, message: str) -> None:
                self._answer(status, {"error": {"code": code, "message": message}})

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization")
                with standin.lock:
                    standin.requests.append({"method": self.command, "path": self.path, "authorization": auth})
                if auth != f"Bearer {standin.api_key}":
                    self._error(401, "UNAUTHORIZED", "invalid API key")
                    return False
                return True

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if not self._authorised():
                    return
                if url.path != f"{PREFIX}/vehicles":
                    return self._error(404, "NOT_FOUND", f"no route {url.path}")
                query = parse_qs(url.query)
                try:
                    limit, offset = int(query.get("limit", ["20"])[0]), int(query.get("offset", ["0"])[0])
                except ValueError:
                    return self._error(400, "INVALID_INPUT", "limit and offset are integers")
                if not 1 <= limit <= 100 or offset < 0:
                    return self._error(400, "INVALID_INPUT", "limit must be 1-100 and offset >= 0")
                self._answer(200, {"data": standin.vehicles[offset:offset + limit],
                                   "meta": {"total": len(standin.vehicles), "limit": limit, "offset": offset}})

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._authorised():
                    return
                if url.path != f"{PREFIX}/recommendations":
                    return self._error(404, "NOT_FOUND", f"no route {url.path}")
                try:
                    body = json.loads(raw)
                    vin, recs = body["vin"], body["recommendations"]
                    valid = isinstance(recs, list) and recs and all(
                        isinstance(r.get("description"), str) and r.get("priority") in PRIORITIES
                        and isinstance(r.get("due_date"), str) for r in recs)
                except (ValueError, KeyError, TypeError, AttributeError):
                    valid = False
                if not valid:
                    return self._error(400, "INVALID_INPUT", "expected {vin, recommendations: [{description, "
                                                             "priority, due_date, ...}]}")
                if vin in standin.refuse_vins or vin not in {v["vin"] for v in standin.vehicles}:
                    return self._error(422, "UNKNOWN_VEHICLE", f"no vehicle with VIN {vin}")
                with standin.lock:
                    standin.received.append(body)
                self._answer(201, {"id": f"rec_{uuid.uuid4().hex[:9]}", "vin": vin,
                                   "recommendations_count": len(recs), "status": "sent",
                                   "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
