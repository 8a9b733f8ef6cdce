"""A stand-in for GPU clouds' APIs (RunPod's REST `GET /v1/pods`, Lambda's `GET /api/v1/instance-types`) on a
local port: weft's real client code connects to it. Only `api_key` is accepted; any other key gets the
cloud's kind of 401 answer."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUNPOD_REFUSAL = "Unauthorized: the API key is invalid or has been revoked"
LAMBDA_REFUSAL = "API key was invalid, expired, or deleted."


class GpuCloudStandIn:
    """`with GpuCloudStandIn("key") as cloud:` serves until the block ends; `cloud.url(platform)` is the base
    URL to configure for runpod or lambda, `cloud.requests` the (path, key) of every request."""

    def __init__(self, api_key: str, port: int = 0) -> None:
        self.api_key = api_key
        self.requests: list[tuple[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                stand_in.requests.append((self.path, key))
                if self.path == "/v1/pods":
                    ok, refusal = [], {"error": RUNPOD_REFUSAL}
                elif self.path == "/api/v1/instance-types":
                    ok = {"data": {"gpu_1x_a10": {"instance_type": {"name": "gpu_1x_a10",
                                                                    "price_cents_per_hour": 75}}}}
                    refusal = {"error": {"code": "global/invalid-api-key", "message": LAMBDA_REFUSAL}}
                else:
                    return self.answer(404, {"error": "not found"})
                self.answer(200, ok) if key == stand_in.api_key else self.answer(401, refusal)

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, platform: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}" + {"runpod": "/v1", "lambda": "/api/v1"}[platform]

    def __enter__(self) -> GpuCloudStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
