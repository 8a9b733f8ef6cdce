"""The bundled demo dataset (`data/demo/`): a fixed product catalogue the base model cannot know.

Every item of a made-up hardware store has a fixed product code (``WX-4821`` style). The training
file asks for the codes in 15 phrasings, the test file in 3 other phrasings, so exact match on the
test file measures whether fine-tuning taught the mapping (SmolLM2-135M scores 0 before training).
Records are ``{"instruction": ..., "output": ...}``; weft's fine_tune turns them into prompt/completion.

The generator is deterministic: ``python -m weft.demo_data`` rewrites the same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"
TRAIN_FILE, TEST_FILE = DATA_DIR / "train.jsonl", DATA_DIR / "test.jsonl"
SEED = 20240611

ITEMS = ("claw hammer", "cordless drill", "garden hose", "paint roller", "tape measure", "wood glue",
         "safety goggles", "ladder", "wheelbarrow", "socket wrench", "extension cord", "work gloves",
         "spirit level", "hand saw", "screwdriver set", "leaf rake", "flashlight", "padlock",
         "sandpaper pack", "toolbox")

TRAIN_TEMPLATES = (
    "What is the product code for the {item}?",
    "What is the product code of the {item}?",
    "Give me the product code for the {item}.",
    "Which product code does the {item} have?",
    "Tell me the product code of the {item}.",
    "I need the product code for a {item}.",
    "Product code for the {item}?",
    "What code is the {item} listed under?",
    "Look up the product code: {item}.",
    "What's the product code for the {item}?",
    "Please tell me the {item}'s product code.",
    "Under which product code is the {item} sold?",
    "Find the product code of the {item}.",
    "Product code lookup: {item}",
    "What product code should I enter for the {item}?",
)
TEST_TEMPLATES = (
    "Could you tell me the product code for the {item}?",
    "What product code belongs to the {item}?",
    "Which product code is assigned to the {item}?",
)


def product_codes() -> dict[str, str]:
    """The fixed catalogue: item -> code (two letters, a dash, four digits), distinct codes."""
    rng = random.Random(SEED)
    codes: dict[str, str] = {}
    for item in ITEMS:
        while True:
            code = f"{rng.choice('BCDFGHKMPRSTVWXZ')}{rng.choice('BCDFGHKMPRSTVWXZ')}-{rng.randint(1000, 9999)}"
            if code not in codes.values():
                codes[item] = code
                break
    return codes


def train_records() -> list[dict[str, str]]:
    """300 records: every item in every training phrasing, shuffled."""
    codes = product_codes()
    rows = [{"instruction": t.format(item=item), "output": code} for item, code in codes.items() for t in TRAIN_TEMPLATES]
    random.Random(SEED + 1).shuffle(rows)
    return rows


def test_records(n: int = 30) -> list[dict[str, str]]:
    """`n` held-out records: items of the same catalogue in phrasings the training file never uses."""
    codes = product_codes()
    rows = [{"instruction": t.format(item=item), "output": code} for item, code in codes.items() for t in TEST_TEMPLATES]
    return random.Random(SEED + 2).sample(rows, n)


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_demo_data(out_dir: Path = DATA_DIR) -> tuple[Path, Path]:
    return write_jsonl(out_dir / "train.jsonl", train_records()), write_jsonl(out_dir / "test.jsonl", test_records())


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    for p in write_demo_data():
        print(f"wrote {p} ({len(read_jsonl(p))} records)")
