"""Loopback networking helpers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """The first of `n` consecutive TCP ports that are free on `host` right now."""
    while True:
        first = free_port(host)
        try:
            for port in range(first + 1, first + n):
                with socket.socket() as s:
                    s.bind((host, port))
            return first
        except OSError:
            continue
