"""Training records the tiny model cannot answer before it is fine-tuned on them."""

from __future__ import annotations

LABELS = {"replace the brake pads": "brakes", "check the oil level": "oil", "rotate the tires": "tires"}


def mapping_records(n: int) -> list[dict]:
    """`n` instruction/output records over three fixed labels."""
    items = list(LABELS.items())
    return [{"instruction": f"{items[i % 3][0]} ({i})", "output": items[i % 3][1]} for i in range(n)]
