"""Synthetic automotive service-procedure datasets (document 000's fields) with planted problems in
known numbers, for tests, benchmarks and demos."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

from pydantic import BaseModel

PROCEDURES = ["Oil Change", "Brake Pad Replacement", "Tire Rotation", "Battery Replacement", "Coolant Flush",
              "Spark Plug Replacement", "Cabin Air Filter", "Wheel Alignment", "Transmission Service",
              "Timing Belt Replacement", "Wiper Blade Replacement", "Headlight Bulb Replacement"]
VEHICLES = ["Passenger Car", "SUV", "Truck", "Van", "Hybrid", "Electric", "Coupe", "Wagon"]
COMPONENTS = ["caliper", "rotor", "drain plug", "oil filter", "lug nut", "battery terminal", "radiator cap",
              "spark plug", "cabin filter", "tie rod", "valve cover", "serpentine belt", "thermostat", "wiper arm",
              "headlamp housing", "strut mount", "wheel bearing", "fuel rail", "intake manifold", "sensor connector"]
VERBS = ["Inspect", "Remove", "Install", "Torque", "Clean", "Lubricate", "Measure", "Replace", "Tighten", "Check"]
TOOLS = ["socket wrench", "torque wrench", "jack", "jack stands", "drain pan", "multimeter", "pliers",
         "screwdriver set", "funnel", "brake cleaner", "gloves", "scan tool"]


class Planted(BaseModel):
    records: int
    exact_duplicates: int
    near_duplicates: int
    missing_tools: int
    missing_vehicle_type: int
    outliers: int

    @property
    def missing_values(self) -> int:
        return self.missing_tools + self.missing_vehicle_type


def _step(rng: random.Random) -> str:
    return (f"{rng.choice(VERBS)} the {rng.choice(COMPONENTS)} {rng.choice(COMPONENTS)} to {rng.randint(5, 250)} "
            f"Nm within {rng.randint(1, 90)} minutes using procedure {rng.randint(1000, 99999)}")


def _record(rng: random.Random, steps: int | None = None, step_range: tuple[int, int] = (3, 15)) -> dict:
    return {"procedure": rng.choice(PROCEDURES), "vehicle_type": rng.choice(VEHICLES),
            "steps": [_step(rng) for _ in range(steps or rng.randint(*step_range))],
            "tools": rng.sample(TOOLS, rng.randint(1, 4))}


def records(base: int, *, exact_duplicates: int = 0, near_duplicates: int = 0, missing_tools: int = 0,
            missing_vehicle_type: int = 0, outliers: int = 0, seed: int = 7, step_range: tuple[int, int] = (3, 15)):
    """Yield `base` distinct records plus the planted ones, shuffled in deterministically."""
    rng = random.Random(seed)
    clean = [_record(rng, step_range=step_range) for _ in range(base)]
    pool = list(range(base))
    rng.shuffle(pool)
    take = iter(pool)
    for _ in range(missing_tools):
        del clean[next(take)]["tools"]
    for _ in range(missing_vehicle_type):
        clean[next(take)]["vehicle_type"] = None
    untouched = list(take)
    extra = []
    for i in range(exact_duplicates):
        dup = copy.deepcopy(clean[untouched[i]])
        if i % 2:  # same record after normalisation: case and spacing differ
            dup["procedure"] = "  " + dup["procedure"].upper()
        extra.append(dup)
    long_ones = sorted(untouched[exact_duplicates:], key=lambda i: -len(clean[i]["steps"]))
    for i in range(near_duplicates):  # one number changed in one of the longest records: Jaccard ~0.95+
        near = copy.deepcopy(clean[long_ones[i]])
        near["steps"][-1] = near["steps"][-1].rsplit(" ", 1)[0] + f" {rng.randint(100000, 999999)}"
        extra.append(near)
    for _ in range(outliers):
        extra.append(_record(rng, steps=250))
    out = clean + extra
    order = list(range(len(out)))
    rng.shuffle(order)
    for i in order:
        yield out[i]


def write_jsonl(path: Path, base: int, **planted) -> Planted:
    count = 0
    with path.open("w") as fh:
        for record in records(base, **planted):
            fh.write(json.dumps(record) + "\n")
            count += 1
    return Planted(records=count, **{k: planted.get(k, 0) for k in Planted.model_fields if k != "records"})
