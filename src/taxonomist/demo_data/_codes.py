"""The vendored CARC/RARC subset (X12 text, about 2012) the generator quotes; see SOURCE.txt."""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

__all__ = ["code_table", "carc_text", "rarc_text"]


@lru_cache(maxsize=1)
def code_table() -> dict[tuple[str, str], str]:
    """(code_type, code) -> description; empty for codes added after the 2012 snapshot."""
    text = resources.files(__package__).joinpath("carc_rarc.csv").read_text(encoding="utf-8")
    return {(row["code_type"], row["code"]): row["description"] for row in csv.DictReader(text.splitlines())}


@lru_cache(maxsize=None)
def carc_text(code: str) -> str:
    """First sentence of a CARC's description (payers quote that part), or '' when not vendored."""
    full = code_table().get(("CARC", code), "")
    first = full.split(". ")[0].strip()
    return first if first.endswith(".") else (first + "." if first else "")


def rarc_text(code: str) -> str:
    return code_table().get(("RARC", code), "")
