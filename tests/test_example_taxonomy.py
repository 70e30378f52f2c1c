"""The example denial taxonomy: 47 active categories in 10 groups, each usable by a reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxonomist import load_taxonomy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "denials" / "taxonomy.yaml"


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(EXAMPLE)


def test_47_active_categories_in_10_groups(taxonomy):
    assert len(taxonomy) == 47
    assert [g.code for g in taxonomy.groups] == list("ABCDEFGHIJ")
    assert {c.group for c in taxonomy.active_categories} == set("ABCDEFGHIJ")


def test_every_active_category_has_definition_rules_examples_and_codes(taxonomy):
    for cat in taxonomy.active_categories:
        assert len(cat.definition) > 40, cat.code
        assert cat.include and cat.exclude, cat.code
        assert 2 <= len(cat.examples) <= 4, cat.code
        assert cat.source_codes, cat.code
        for code in cat.source_codes:
            system, _, value = code.partition(":")
            assert system in taxonomy.source_code_systems and value, (cat.code, code)


def test_retired_categories_point_to_their_successor(taxonomy):
    retired = {c.code: c.successors for c in taxonomy.categories if not c.active}
    assert retired == {"C7": ("C2",), "H2": ("D6",)}
    assert taxonomy.resolve("C7") == "C2"
    assert taxonomy.resolve("H2") == "D6"
    assert [e.op for e in taxonomy.changelog] == ["create", "merge", "merge"]


def test_round_trips_through_yaml(taxonomy):
    from taxonomist import Taxonomy

    again = Taxonomy.from_yaml(taxonomy.to_yaml())
    assert again.version_id == taxonomy.version_id
