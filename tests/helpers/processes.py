"""Process trees from /proc: which processes descend from a worker, and killing them all at once."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process now."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first-found order, not including `pid`)."""
    tree, found, todo = children_map(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sigkill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and everything below it (flow-run processes start their own sessions, so a
    process-group kill would miss them); returns the pids killed."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims
