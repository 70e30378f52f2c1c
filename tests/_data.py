"""The vendored datasets under tests/data, read the same way by every engine test."""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).parent / "data"


def read_csv(name: str) -> tuple[list[str], list[str]]:
    """Texts and labels of a vendored `text,label` CSV."""
    with open(DATA / name, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]
