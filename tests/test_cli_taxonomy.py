"""`taxonomist taxonomy ...` end to end, through the real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from taxonomist import load_taxonomy

from .test_taxonomy import DOC

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "denials" / "taxonomy.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taxonomist", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def mini(tmp_path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(DOC)
    return path


def test_validate_example_denial_taxonomy():
    result = run("taxonomy", "validate", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "47 categories in 10 groups" in result.stdout


def test_validate_duplicate_code_fails_with_one_line(tmp_path):
    bad = tmp_path / "dup.yaml"
    bad.write_text(DOC.replace("code: A2", "code: A1"))
    result = run("taxonomy", "validate", str(bad))
    assert result.returncode == 1
    assert "category 'A1' appears twice" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_validate_merge_into_unknown_code_fails(mini):
    # A hand-edited file that records a merge into a code that does not exist.
    text = mini.read_text() + (
        "changelog:\n- op: merge\n  date: '2026-01-02'\n  author: ana\n  summary: merged G1+G2 into G9\n"
        "  details: {sources: [G1, G2], into: G9}\n"
    )
    mini.write_text(text)
    result = run("taxonomy", "validate", str(mini))
    assert result.returncode == 1
    assert "unknown category 'G9'" in result.stderr
    # And the same mistake in the category list itself (successor points nowhere).
    mini.write_text(DOC.replace("name: Place of service", "name: Place of service\n        status: retired\n        successor: G9"))
    result = run("taxonomy", "validate", str(mini))
    assert result.returncode == 1 and "successor 'G9'" in result.stderr


def test_operations_edit_the_file_and_keep_a_changelog(mini, tmp_path):
    assert run("taxonomy", "add", str(mini), "--code", "G7", "--name", "Audio-only", "--group", "G", "--author", "ana").returncode == 0
    result = run("taxonomy", "merge", str(mini), "A1", "A2", "--into", "A9", "--name", "Eligibility lapse", "--author", "ana")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "next.yaml"
    result = run("taxonomy", "split", str(mini), "G1", "--into", "G1a=Telehealth", "--into", "G1b=Other", "--author", "ana", "--out", str(out))
    assert result.returncode == 0, result.stderr
    tax = load_taxonomy(out)
    assert [e.op for e in tax.changelog] == ["add", "merge", "split"]
    assert tax.codes == ("A9", "G1a", "G1b", "G2", "G7")
    assert run("taxonomy", "rename", str(out), "G2", "--new-name", "POS", "--author", "ana").returncode == 0
    assert run("taxonomy", "retire", str(out), "G7", "--successor", "G1a", "--author", "ana").returncode == 0
    assert load_taxonomy(out).resolve("G7") == "G1a"
    diff = run("taxonomy", "diff", str(mini), str(out))
    assert diff.returncode == 0 and "+ G1a Telehealth [active]" in diff.stdout
    show = run("taxonomy", "show", str(out), "--code", "A9")
    assert show.returncode == 0 and "Eligibility lapse" in show.stdout


def test_bad_split_argument_and_missing_file(mini, tmp_path):
    result = run("taxonomy", "split", str(mini), "G1", "--into", "G1a", "--author", "ana")
    assert result.returncode == 1 and "CODE=Name" in result.stderr
    result = run("taxonomy", "show", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_crosswalk_command(mini, tmp_path):
    cw = tmp_path / "cw.csv"
    cw.write_text("their_code,our_code\nE1,A1\nE2,A1\nM1,G1\n")
    result = run("taxonomy", "crosswalk", str(mini), str(cw), "--source", "NetB", "--author", "ana")
    assert result.returncode == 0, result.stderr
    assert "3 of their codes onto 2 of ours" in result.stdout
    assert load_taxonomy(mini).changelog[-1].op == "crosswalk"
    cw.write_text("their_code,our_code\nE1,Z9\n")
    result = run("taxonomy", "crosswalk", str(mini), str(cw), "--author", "ana")
    assert result.returncode == 1 and "'Z9'" in result.stderr
