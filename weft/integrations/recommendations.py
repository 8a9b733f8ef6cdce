"""From a RelayCore vehicle to document 000's prompt, and from a model's answer to recommendations.

The parser is deterministic: the answer's numbered items (else its bulleted items, else its paragraphs)
become the recommendations, each description taken from the model's own text. Priority comes from
keywords of an item's first line (brakes, warning lights, leaks... are high), due dates from the mileage
since the last service against the service interval.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from weft.integrations.relaycore import Priority, Recommendation, Vehicle

QUESTION = "What service recommendations would you provide?"
DEFAULT_SERVICE_INTERVAL = 5000  # miles; document 000's example oil-change interval
DEFAULT_MILES_PER_DAY = 1000 / 30  # when the service history cannot tell how much the vehicle is driven
MAX_ITEMS = 20
MAX_DESCRIPTION = 500
HIGH_WORDS = ("brake", "safety", "warning light", "check engine", "leak", "overheat", "steering", "airbag", "recall",
              "smoke", "stall", "tire tread", "bald", "grinding")
LOW_WORDS = ("optional", "cosmetic", "when convenient", "consider", "wiper", "detailing")
# days until due: a high-priority item, or a service overdue by an interval or more, is due soonest
HIGH_DAYS, OVERDUE_DAYS, DUE_DAYS, MIN_DAYS, MAX_DAYS, LOW_MIN_DAYS = 7, 7, 14, 14, 180, 30

_NUMBERED = re.compile(r"^\s{0,3}(\d{1,2})[.)]\s+(.*)$")
_BULLET = re.compile(r"^(\s*)[-*•]\s+(.*)$")
_COST = re.compile(r"\$\s?(\d{1,3}(?:,\d{3})*(?:\.\d{1,2})?|\d+(?:\.\d{1,2})?)")
_MARKUP = re.compile(r"\*\*|__|`")


def build_prompt(vehicle: Vehicle, concern: str | None = None) -> str:
    """Document 000's prompt for one vehicle (unknown service fields read `unknown`)."""
    name = " ".join(str(p) for p in (vehicle.make, vehicle.model, vehicle.year) if p)
    last_date = vehicle.last_service_date.isoformat() if vehicle.last_service_date else "unknown"
    last_miles = vehicle.last_service_mileage if vehicle.last_service_mileage is not None else "unknown"
    return (f"Vehicle: {name}\nMileage: {vehicle.mileage}\nLast Service: {last_date}\n"
            f"Last Service Mileage: {last_miles}\nCustomer Concern: {concern or 'None reported'}\n\n{QUESTION}")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub("", text)).strip(" :-")


def split_items(answer: str) -> list[tuple[str, list[str]]]:
    """The answer's items as (head, notes): numbered items with their indented or bulleted lines as notes;
    without numbers, top-level bullets; without either, paragraphs. Text before the first item and after
    a blank line that ends the last one (an introduction, a closing remark) is not an item."""
    lines = answer.replace("\r\n", "\n").split("\n")
    for pattern in (_NUMBERED, _BULLET):
        items: list[tuple[str, list[str]]] = []
        open_item = False
        for line in lines:
            match = pattern.match(line)
            top = match is not None and (pattern is _NUMBERED or match.group(1) == "")
            if top:
                items.append((match.group(2), []))
                open_item = True
            elif not line.strip():
                continue
            elif open_item and (line[:1].isspace() or _BULLET.match(line)):
                items[-1][1].append(_clean(_BULLET.sub(r"\2", line)))
            else:
                open_item = False  # an unindented line outside the list
        if items:
            return [(_clean(h), [n for n in notes if n]) for h, notes in items if _clean(h)]
    return [(_clean(p), []) for p in re.split(r"\n\s*\n", answer) if _clean(p)]


def priority_of(text: str) -> Priority:
    lowered = text.lower()
    if any(word in lowered for word in HIGH_WORDS):
        return "high"
    if any(word in lowered for word in LOW_WORDS):
        return "low"
    return "medium"


def miles_per_day(vehicle: Vehicle, today: date) -> float:
    """How much the vehicle is driven: miles since its last service over the days since, when known."""
    if vehicle.last_service_date and vehicle.last_service_mileage is not None:
        days = (today - vehicle.last_service_date).days
        miles = vehicle.mileage - vehicle.last_service_mileage
        if days > 0 and miles > 0:
            return miles / days
    return DEFAULT_MILES_PER_DAY


def due_in_days(vehicle: Vehicle, priority: Priority, interval: int, today: date) -> int:
    """High priority: within a week. Otherwise by the service interval: overdue by a whole interval more
    within a week, due or overdue within two weeks, else when the interval will be reached at the
    vehicle's pace (between two weeks and six months); low priority not before a month."""
    if priority == "high":
        return HIGH_DAYS
    since = vehicle.mileage - vehicle.last_service_mileage if vehicle.last_service_mileage is not None else None
    if since is None or since >= interval:
        days = OVERDUE_DAYS if since is not None and since >= 2 * interval else DUE_DAYS
    else:
        days = round((interval - since) / miles_per_day(vehicle, today))
        days = min(MAX_DAYS, max(MIN_DAYS, days))
    return max(days, LOW_MIN_DAYS) if priority == "low" else days


def parse_answer(answer: str, vehicle: Vehicle, *, service_interval: int = DEFAULT_SERVICE_INTERVAL,
                 now: datetime | None = None) -> list[Recommendation]:
    """The recommendations in a model's answer (empty when it has no text)."""
    now = now or datetime.now(UTC)
    today = now.date()
    since = vehicle.mileage - vehicle.last_service_mileage if vehicle.last_service_mileage is not None else None
    found = []
    for head, notes in split_items(answer)[:MAX_ITEMS]:
        priority = priority_of(head)  # not its notes: a routine check list mentions brakes and steering too
        days = due_in_days(vehicle, priority, service_interval, today)
        cost = _COST.search(" ".join([head, *notes]))
        details: dict[str, Any] = {"current_mileage": vehicle.mileage, "service_interval": service_interval,
                                   "source": "model"}
        if vehicle.last_service_mileage is not None:
            details |= {"last_service_mileage": vehicle.last_service_mileage, "miles_since_service": since}
        if notes:
            details["notes"] = notes[:10]
        found.append(Recommendation(
            description=head[:MAX_DESCRIPTION], priority=priority, details=details,
            estimated_cost=float(cost.group(1).replace(",", "")) if cost else None,
            due_date=datetime.combine(today + timedelta(days=days), time(), tzinfo=UTC)))
    return found
