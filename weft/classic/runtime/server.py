"""The prediction server of a classic model, run inside the model's own environment (standard library,
numpy and the framework only: this must not import weft).

    python server.py --model PATH --framework {sklearn,pytorch,keras} --host H --port P
                     --timeout SECONDS --workers N [--unsafe-keras]

The model loads (and answers a zero probe) before the port is bound, so a server that answers is ready.

- `GET /health` → 200 `{"status": "ok", "max_batch": N, **describe()}` (N: the worker threads).
- `POST /predict` `{"data": example | [examples]}` → `{"prediction", "probabilities"?}` for one example,
  `{"predictions", "probabilities"?, "batch_size"}` for a batch; 400 INVALID_INPUT for bad JSON or shape;
  500 PREDICTION_ERROR with `details.reason` exception (the server goes on), timeout (the process then
  exits 71: a stuck thread cannot be stopped) or memory (exits 70: the parent's RLIMIT_DATA was hit).
- Anything else → a JSON error (404, 405, 501). HTTP/1.1 keep-alive; access is not logged, errors are (stderr).
- SIGTERM: stop accepting, give running predictions a few seconds, exit 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loader  # noqa: E402  (the sibling module, found through the path set just above)

EXIT_MEMORY = 70  # a prediction ran out of memory (the parent's RLIMIT_DATA)
EXIT_TIMEOUT = 71  # a prediction overran --timeout: its thread cannot be stopped
MAX_BODY_BYTES = 64 << 20
IDLE_SECONDS = 120  # an idle keep-alive connection frees its thread after this
STOP_GRACE_SECONDS = 5.0
HANDLER_STACK_BYTES = 1 << 20  # see main()
EXIT_DELAY_SECONDS = 0.1  # after a fatal reply, before the process goes: the kernel sends the reply
ERROR_CODES = {400: "INVALID_INPUT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_INPUT",
               501: "NOT_IMPLEMENTED", 503: "SERVICE_UNAVAILABLE"}


class Stopped(BaseException):
    """SIGTERM: unwinds the main thread (a BaseException, so that no `except Exception` swallows it)."""


class PredictionTimeout(Exception):
    pass


class BodyTooLarge(loader.InvalidInput):
    pass


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} weft-classic: {message}\n")
    sys.stderr.flush()


class Predictor:
    """The model behind `workers` threads; each prediction may run `timeout` seconds."""

    def __init__(self, served: loader.Served, workers: int, timeout: float) -> None:
        self.served, self.workers, self.timeout = served, workers, timeout
        self.info = served.describe()  # torch and Keras models answer a zero probe here
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="predict")
        self.start_workers()

    def start_workers(self) -> None:
        """Start every worker thread now (the pool starts them on demand): they keep the default stack,
        which model code may need, while the connection threads started later get small ones."""
        ready = threading.Barrier(self.workers + 1)
        for _ in range(self.workers):
            self.pool.submit(ready.wait, 60)
        ready.wait(60)

    def predict(self, rows: list) -> dict[str, Any]:
        """The model's answer; PredictionTimeout when it runs longer than the timeout. Time spent queued
        behind busy workers does not count: a stuck worker times out its own request first."""
        started = threading.Event()

        def job() -> dict[str, Any]:
            started.set()
            return self.served.predict(rows)

        future = self.pool.submit(job)
        while not started.wait(1.0) and not future.done():
            pass
        wait_for([future], timeout=self.timeout)
        if not future.done():
            raise PredictionTimeout(f"the prediction did not finish within {self.timeout:g} s")
        return future.result()


class Server(ThreadingHTTPServer):
    """A thread per connection; tracks the requests in flight so that a stop can let them finish."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], predictor: Predictor) -> None:
        self.predictor, self.stopping, self.in_flight = predictor, False, 0
        self.idle = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host's FQDN up, which can hang in a sandbox without DNS
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that went away is no error
            super().handle_error(request, client_address)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Counts a request in flight while it lasts."""
        with self.idle:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.idle:
                self.in_flight -= 1
                self.idle.notify_all()

    def stop(self, grace: float) -> None:
        """No new connections or requests; up to `grace` seconds for those in flight."""
        self.stopping = True
        self.server_close()
        deadline = time.monotonic() + grace
        with self.idle:
            while self.in_flight and (left := deadline - time.monotonic()) > 0:
                self.idle.wait(left)
        self.predictor.pool.shutdown(wait=False, cancel_futures=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every reply has a Content-Length
    server_version = "weft-classic"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    timeout = IDLE_SECONDS
    server: Server

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self.reply(200, {"status": "ok", "max_batch": self.server.predictor.workers, **self.server.predictor.info})
        elif path == "/predict":
            self.fail(405, "METHOD_NOT_ALLOWED", "use POST /predict", {"method": "GET"})
        else:
            self.fail(404, "NOT_FOUND", f"no route GET {path}", {"path": path})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/predict":
            with self.server.busy():
                self.predict()
        else:
            self.drain_body()
            if path == "/health":
                self.fail(405, "METHOD_NOT_ALLOWED", "use GET /health", {"method": "POST"})
            else:
                self.fail(404, "NOT_FOUND", f"no route POST {path}", {"path": path})

    def predict(self) -> None:
        predictor = self.server.predictor
        if self.server.stopping:
            self.fail(503, "SERVICE_UNAVAILABLE", "the server is stopping", {}, close=True)
            return
        try:
            rows, single = loader.check_input(self.read_data(), predictor.info["input_shape"])
            result = predictor.predict(rows)
        except loader.InvalidInput as exc:
            self.fail(413 if isinstance(exc, BodyTooLarge) else 400, "INVALID_INPUT", f"invalid {exc.field}: "
                      f"{exc.reason}", {"field": exc.field, "reason": exc.reason})
        except PredictionTimeout as exc:
            self.fatal(EXIT_TIMEOUT, f"{exc}: its thread cannot be stopped, so this server exits and a fresh one "
                       "replaces it", {"reason": "timeout", "timeout_seconds": predictor.timeout})
        except Exception as exc:
            if loader.is_out_of_memory(exc):
                self.fatal(EXIT_MEMORY, f"the prediction ran out of memory ({loader.error_text(exc)[:500]}): this "
                           "server exits and a fresh one replaces it", {"reason": "memory"})
            else:
                log(f"prediction failed: {loader.error_text(exc)}")
                self.fail(500, "PREDICTION_ERROR", loader.error_text(exc), {"reason": "exception"})
        else:
            self.reply(200, shaped(result, single))

    def read_data(self) -> Any:
        """The request's `data`; InvalidInput for a missing, oversized or unparsable body."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise loader.InvalidInput("body", "a JSON body with a Content-Length is required") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # its body stays unread
            raise BodyTooLarge("body", f"the body has {length} bytes: at most {MAX_BODY_BYTES} are accepted")
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, RecursionError) as exc:
            raise loader.InvalidInput("body", f"invalid JSON: {exc}") from None
        if not isinstance(body, dict) or "data" not in body:
            raise loader.InvalidInput("data", 'required: send {"data": one example or a list of examples}')
        return body["data"]

    def drain_body(self) -> None:
        """Read a body this server does not use, so that the connection can serve the next request."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def reply(self, status: int, body: dict[str, Any], close: bool = False) -> None:
        payload = dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if close or self.close_connection or self.server.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def fail(self, status: int, code: str, message: str, details: dict[str, Any], close: bool = False) -> None:
        self.reply(status, {"error": {"code": code, "message": message, "details": details}}, close)

    def fatal(self, exit_code: int, message: str, details: dict[str, Any]) -> None:
        """Answer 500, then end the process: the model is stuck or out of memory, and only a fresh process
        can serve again."""
        log(f"exiting with {exit_code}: {message}")
        try:
            self.fail(500, "PREDICTION_ERROR", message, details, close=True)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            time.sleep(EXIT_DELAY_SECONDS)
            os._exit(exit_code)

    def version_string(self) -> str:
        return self.server_version

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # the stdlib answers malformed requests and unknown methods with an HTML page: this server speaks JSON
        short = self.responses.get(code, ("error",))[0]
        self.fail(code, ERROR_CODES.get(code, "HTTP_ERROR"), message or short, {}, close=True)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # no access log

    def log_message(self, format: str, *args: Any) -> None:
        if not format.startswith("Request timed out"):  # an idle keep-alive connection closing is normal
            log(f"{self.address_string()}: {format % args}")


def shaped(result: dict[str, Any], single: bool) -> dict[str, Any]:
    """The reply for one example (`prediction`) or a batch (`predictions`, `batch_size`); `probabilities`
    only where the model gives them."""
    predictions, probabilities = result["predictions"], result.get("probabilities")
    if single:
        body = {"prediction": predictions[0]}
        if probabilities is not None:
            body["probabilities"] = probabilities[0]
        return body
    body = {"predictions": predictions}
    if probabilities is not None:
        body["probabilities"] = probabilities
    body["batch_size"] = len(predictions)
    return body


def dumps(body: dict[str, Any]) -> bytes:
    """Strict JSON: a NaN or infinite output becomes null."""
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        return json.dumps(finite(body), separators=(",", ":"), allow_nan=False).encode()


def finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a classic model over HTTP (GET /health, POST /predict).")
    parser.add_argument("--model", required=True, help="the model file")
    parser.add_argument("--framework", required=True, help="sklearn, pytorch or keras")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one prediction may run")
    parser.add_argument("--workers", type=int, default=4, help="predictions run at once")
    parser.add_argument("--unsafe-keras", action="store_true", help="let Keras load Lambda layers (Python code)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0:
        parser.error("--workers must be at least 1 and --timeout positive")
    return args


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        served = loader.load(args.model, args.framework, unsafe_keras=args.unsafe_keras)
        predictor = Predictor(served, args.workers, args.timeout)
    except Exception as exc:
        traceback.print_exc()
        log(f"cannot serve {args.model}: {loader.error_text(exc)}")
        return EXIT_MEMORY if loader.is_out_of_memory(exc) else 1
    try:
        server = Server((args.host, args.port), predictor)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    # RLIMIT_DATA, the parent's memory limit, counts every thread's stack (8 MiB by default), and each open
    # keep-alive connection holds a thread: theirs only parse JSON and check shapes
    threading.stack_size(HANDLER_STACK_BYTES)
    info = predictor.info
    log(f"serving {info['framework']} {info['model_type']} (input {info['input_shape']}, output "
        f"{info['output_shape']}) on {args.host}:{args.port} with {args.workers} workers")
    try:
        server.serve_forever(poll_interval=0.5)
    except (Stopped, KeyboardInterrupt):
        log("stopping")
    finally:
        server.stop(STOP_GRACE_SECONDS)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except (Stopped, KeyboardInterrupt):
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # not sys.exit: interpreter shutdown would wait for a stuck prediction thread
