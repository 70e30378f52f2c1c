"""The reliability suite's tally: every test adds what it checked, and the run ends with one summary line.

The counts (kill points, records checked, fuzz examples, faults injected, and the
lost / duplicated / leaked totals, which the tests assert are 0) are printed at the
end of the run and written to reliability_counts.json in pytest's base temporary
directory, so a closing note can quote them.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

_TALLY: Counter[str] = Counter()
_KEYS = ("kill_points", "records_checked", "fuzz_examples", "faults_injected", "lost", "duplicated", "leaked")


@pytest.fixture(scope="session")
def tally() -> Counter[str]:
    """Add counts with `tally["kill_points"] += 1`; summed over the run and reported at its end."""
    return _TALLY


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    if not _TALLY:
        return
    counts = {k: int(_TALLY.get(k, 0)) for k in _KEYS} | {k: int(v) for k, v in _TALLY.items() if k not in _KEYS}
    try:
        path = config._tmp_path_factory.getbasetemp() / "reliability_counts.json"
        path.write_text(json.dumps(counts, indent=2) + "\n")
        where = f" (written to {path})"
    except Exception:  # pragma: no cover - the tally still prints
        where = ""
    terminalreporter.write_line("reliability: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items()) + where)
