"""Reading a run's logs page by page while new lines arrive."""
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

from weft.jobs import LOG_PAGE, read_logs


class ArrivingLogs:
    """A Prefect client whose run gains a new newest line after every page it serves."""

    def __init__(self, count: int) -> None:
        self.start = datetime(2026, 1, 1, tzinfo=UTC)
        self.logs = [self.line(i) for i in range(count)]

    def line(self, i: int) -> SimpleNamespace:
        return SimpleNamespace(id=uuid4(), timestamp=self.start + timedelta(seconds=i), level=20, message=f"line {i}",
                               name="test")

    def read_logs(self, log_filter, limit, offset, sort):  # noqa: ANN001 - Prefect's signature
        newest = sorted(self.logs, key=lambda log: log.timestamp, reverse=True)
        page = newest[offset:offset + limit]
        self.logs.append(self.line(len(self.logs)))
        return page


def test_lines_arriving_between_pages_are_read_once():
    client = ArrivingLogs(LOG_PAGE * 2 + 50)
    lines = read_logs(str(uuid4()), offset=0, limit=LOG_PAGE * 3, newest_first=True, client=client)
    messages = [line.message for line in lines]
    assert len(messages) == len(set(messages))
    numbers = [int(m.split()[1]) for m in messages]
    assert numbers == sorted(numbers, reverse=True) and numbers[-1] == 0
