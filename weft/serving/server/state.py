"""What the routes share, kept in `app.state.server`: the engine, the names it answers to, request counters."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from weft.serving.server.engine import Engine
from weft.serving.server.errors import OpenAIError


@dataclass
class Stats:
    """Requests in flight and requests served successfully (reported by /health)."""

    active: int = 0
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        with self.lock:
            self.active += 1

    def end(self, ok: bool) -> None:
        with self.lock:
            self.active -= 1
            self.served += int(ok)

    @contextmanager
    def track(self) -> Iterator[None]:
        """Counts the block as one request, served when it does not raise."""
        self.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.end(ok)


@dataclass
class ServerState:
    """What the routes share: the engine, the names it answers to and the request counters."""

    engine: Engine
    served_name: str
    model_dir: Path
    adapters: dict[str, Path]
    default_adapter: str | None
    created: int = field(default_factory=lambda: int(time.time()))
    stats: Stats = field(default_factory=Stats)

    def resolve(self, model: str) -> str | None:
        """The adapter for `model` (None = base); 404 for unknown names."""
        if model == self.served_name:
            return self.default_adapter
        if model in self.adapters:
            return model
        raise OpenAIError(404, f"The model `{model}` does not exist. Available: "
                               f"{', '.join([self.served_name, *self.adapters])}", code="model_not_found",
                          param="model")


def _server(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(_server)]
