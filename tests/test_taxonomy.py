"""The taxonomy document: loading, validation, version ids and the operations that change it."""

from __future__ import annotations

import textwrap

import pytest

from taxonomist import ABSTAIN, Crosswalk, Taxonomy, TaxonomyError, load_crosswalk, load_taxonomy

DOC = textwrap.dedent(
    """
    name: Mini denials
    groups:
      - code: A
        name: Eligibility
        categories:
          - code: A1
            name: Coverage terminated
            definition: Coverage was not in force on the date of service.
            include: [termed policy]
            exclude: [member not found (A2)]
            examples: ["CO-27 expenses incurred after coverage terminated"]
            source_codes: ["CARC:27", "CARC:26"]
          - code: A2
            name: Member not found
            source_codes: ["CARC:31"]
      - code: G
        name: Coding
        categories:
          - code: G1
            name: Modifier missing or invalid
          - code: G2
            name: Place of service
    """
)


@pytest.fixture
def tax() -> Taxonomy:
    return Taxonomy.from_yaml(DOC, source="mini.yaml")


def test_load_counts_and_order(tax):
    assert tax.codes == ("A1", "A2", "G1", "G2")
    assert len(tax) == 4 and len(tax.groups) == 2
    assert tax["A1"].examples == ("CO-27 expenses incurred after coverage terminated",)
    assert "Typical codes: CARC:27, CARC:26" in tax["A1"].describe()


def test_version_id_is_content_hash_ignoring_changelog(tax):
    same = Taxonomy.from_yaml(DOC)
    assert same.version_id == tax.version_id and tax.version_id.startswith("v")
    changed = tax.rename("A2", new_name="Member unknown", author="ana").taxonomy
    assert changed.version_id != tax.version_id
    # Round trip through YAML keeps the version and the changelog.
    again = Taxonomy.from_yaml(changed.to_yaml())
    assert again.version_id == changed.version_id
    assert [e.op for e in again.changelog] == ["rename"]
    assert again.changelog[-1].version == changed.version_id


def test_duplicate_code_is_named():
    bad = DOC.replace("code: A2", "code: A1")
    with pytest.raises(TaxonomyError, match=r"category 'A1' appears twice"):
        Taxonomy.from_yaml(bad, source="dup.yaml")


def test_unknown_successor_is_named():
    bad = DOC.replace("name: Member not found", "name: Member not found\n        status: retired\n        successor: Z9")
    with pytest.raises(TaxonomyError, match=r"'A2' names successor 'Z9'"):
        Taxonomy.from_yaml(bad)


@pytest.mark.parametrize(
    "replacement, message",
    [("code: NONE", "'NONE' is reserved for abstention"), ("code: 'bad code'", "code 'bad code' is invalid")],
)
def test_invalid_codes(replacement, message):
    with pytest.raises(TaxonomyError, match=message):
        Taxonomy.from_yaml(DOC.replace("code: G2", replacement))


def test_unknown_field_and_bad_yaml():
    with pytest.raises(TaxonomyError, match="unknown field.*colour"):
        Taxonomy.from_yaml(DOC.replace("name: Place of service", "name: Place of service\n        colour: red"))
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        Taxonomy.from_yaml("groups: [")


def test_lookup_error_names_version_and_fix(tax):
    with pytest.raises(TaxonomyError, match=r"'Z9' is not in taxonomy v[0-9a-f]+ .*taxonomist taxonomy add"):
        tax["Z9"]


def test_add(tax):
    change = tax.add("G7", "Audio-only telehealth", group="G", author="ana", examples=["FQ modifier missing"] * 2)
    new = change.taxonomy
    assert new.codes == ("A1", "A2", "G1", "G2", "G7")
    assert change.relabel == {} and change.review == ()
    assert new.changelog[-1].op == "add" and new.changelog[-1].author == "ana"
    with pytest.raises(TaxonomyError, match="already exists"):
        new.add("G7", "again", group="G", author="ana")
    with pytest.raises(TaxonomyError, match="group 'Q'"):
        tax.add("Q1", "x", group="Q", author="ana")
    with pytest.raises(TaxonomyError, match="author"):
        tax.add("G8", "x", group="G", author="")


def test_merge_into_new_category(tax):
    change = tax.merge(["G1", "G2"], "G9", name="Coding of telehealth", author="ana")
    new = change.taxonomy
    assert change.relabel == {"G1": "G9", "G2": "G9"}
    assert new.codes == ("A1", "A2", "G9")
    assert new["G1"].status == "retired" and new["G1"].successors == ("G9",)
    assert new.resolve("G1") == "G9"
    # The retired categories stay in the document, so old labels remain interpretable.
    assert "G1" in new and len(new.categories) == 5


def test_merge_into_existing_and_unknown_target(tax):
    change = tax.merge(["A2"], "A1", author="ana")
    assert change.relabel == {"A2": "A1"}
    assert change.taxonomy.codes == ("A1", "G1", "G2")
    with pytest.raises(TaxonomyError, match="target 'ZZ' is not in the taxonomy"):
        tax.merge(["A1", "A2"], "ZZ", author="ana")


def test_rename_code_relabels_and_updates_successors(tax):
    merged = tax.merge(["G1", "G2"], "G9", name="Coding", author="ana").taxonomy
    change = merged.rename("G9", new_code="G10", author="ana")
    assert change.relabel == {"G9": "G10"}
    assert change.taxonomy["G1"].successors == ("G10",)
    assert change.taxonomy.resolve("G2") == "G10"
    name_only = tax.rename("A1", new_name="Coverage not in force", author="ana")
    assert name_only.relabel == {} and name_only.taxonomy["A1"].name == "Coverage not in force"


def test_split_flags_history_for_review(tax):
    change = tax.split("G1", {"G1a": "Telehealth modifier", "G1b": "Provider-type modifier"}, author="ana")
    assert change.review == ("G1",) and change.relabel == {}
    assert change.taxonomy["G1"].successors == ("G1a", "G1b")
    with pytest.raises(TaxonomyError, match="no single successor"):
        change.taxonomy.resolve("G1")


def test_split_out_keeps_parent(tax):
    change = tax.split("G1", {"G7": "Audio-only telehealth (FQ)"}, keep=True, author="ana")
    assert change.review == () and change.taxonomy.codes == ("A1", "A2", "G1", "G7", "G2")


def test_retire(tax):
    with_succ = tax.retire("A2", successor="A1", author="ana")
    assert with_succ.relabel == {"A2": "A1"} and with_succ.taxonomy.codes == ("A1", "G1", "G2")
    without = tax.retire("G2", author="ana")
    assert without.review == ("G2",)
    with pytest.raises(TaxonomyError, match="retired"):
        without.taxonomy.retire("G2", author="ana")


def test_operations_do_not_mutate(tax):
    before = tax.to_yaml()
    tax.merge(["G1", "G2"], "G9", name="x", author="ana")
    tax.retire("A1", author="ana")
    assert tax.to_yaml() == before


def test_crosswalk_many_to_one(tax, tmp_path):
    cw = Crosswalk(source="NetB", mapping={"ELIG-TERM": "A1", "ELIG-NOTFOUND": "A2", "ELIG-OTHER": "A1", "MOD": "G1"})
    change = tax.with_crosswalk(cw, author="ana")
    assert change.relabel["ELIG-OTHER"] == "A1"
    assert cw.merges == {"A1": ["ELIG-TERM", "ELIG-OTHER"]}
    assert change.taxonomy.version_id == tax.version_id  # a crosswalk does not change our categories
    assert change.taxonomy.changelog[-1].op == "crosswalk"
    with pytest.raises(TaxonomyError, match="their code 'X' maps to 'Z9'"):
        tax.with_crosswalk(Crosswalk(source="NetB", mapping={"X": "Z9"}), author="ana")
    csv_path = tmp_path / "cw.csv"
    csv_path.write_text("their_code,our_code\nT1,A1\nT2,A1\nT1,G1\n")
    with pytest.raises(TaxonomyError, match="line 4: their code 'T1' is mapped twice"):
        load_crosswalk(csv_path)


def test_from_labels_and_abstain_reserved():
    flat = Taxonomy.from_labels(["card_arrival", "top_up", "card_arrival"])
    assert flat.codes == ("card_arrival", "top_up")
    assert ABSTAIN == "NONE"


def test_save_and_load(tax, tmp_path):
    path = tmp_path / "t.yaml"
    version = tax.merge(["G1", "G2"], "G9", name="Coding", author="ana").taxonomy.save(path)
    loaded = load_taxonomy(path)
    assert loaded.version_id == version
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_taxonomy(tmp_path / "missing.yaml")


def test_diff(tax):
    new = tax.merge(["G1", "G2"], "G9", name="Coding", author="ana").taxonomy
    lines = tax.diff(new)
    assert "+ G9 Coding [active]" in lines
    assert any(line.startswith("~ G1.status") for line in lines)


# ----- bounded YAML loading (issue 11) ------------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast_with_one_line(tmp_path):
    # 9 levels of 9 aliases expand to 9**10 (3.5 billion) strings; plain safe_load then
    # lets from_dict walk them all (69 s and 3.1 GB before the fix).
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    with pytest.raises(TaxonomyError, match=r"bomb\.yaml: YAML aliases .* expand to more than 200,000 nodes") as err:
        load_taxonomy(path)
    assert "\n" not in str(err.value)
    with pytest.raises(TaxonomyError, match="expand to more than"):
        load_crosswalk(path)


def test_small_aliases_still_load():
    doc = DOC.replace("source_codes: [\"CARC:31\"]", "source_codes: &codes [\"CARC:31\"]").replace(
        "name: Place of service", "name: Place of service\n        source_codes: *codes"
    )
    assert Taxonomy.from_yaml(doc)["G2"].source_codes == ("CARC:31",)


def test_duplicate_keys_name_the_key_and_both_lines(tmp_path):
    doc = DOC.replace("name: Member not found", "name: Member not found\n        name: Member unknown")
    with pytest.raises(TaxonomyError, match=r"dup\.yaml: key 'name' appears twice in one mapping \(lines 15 and 16\)"):
        Taxonomy.from_yaml(doc, source="dup.yaml")
    cw = tmp_path / "cw.yaml"
    cw.write_text("source: NetB\nmapping:\n  T1: A1\n  T2: A2\n  T1: G1\n")
    with pytest.raises(TaxonomyError, match=r"key 'T1' appears twice in one mapping \(lines 3 and 5\)"):
        load_crosswalk(cw)


def test_oversized_yaml_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(DOC + "# " + "x" * (5 * 1024 * 1024) + "\n")
    with pytest.raises(TaxonomyError, match=r"huge\.yaml' is [0-9,]+ bytes; the limit is 5,242,880"):
        load_taxonomy(path)
    with pytest.raises(TaxonomyError, match="the limit is 5,242,880"):
        Taxonomy.from_yaml(path.read_text(), source="huge")


def test_python_tags_are_refused():
    doc = "name: x\ngroups: !!python/object/apply:os.system ['echo pwned']\n"
    with pytest.raises(TaxonomyError, match="only plain YAML"):
        Taxonomy.from_yaml(doc)


def test_price_tables_use_the_bounded_loader(tmp_path):
    from taxonomist.errors import BackendError
    from taxonomist.llm.accounting import load_price_table

    path = tmp_path / "prices.yaml"
    path.write_text(_alias_bomb())
    with pytest.raises(BackendError, match="expand to more than"):
        load_price_table(path)


def test_comparison_price_table_uses_the_bounded_loader(tmp_path):
    from taxonomist.compare.costs import load_prices
    from taxonomist.errors import ExperimentError

    path = tmp_path / "prices.yaml"
    path.write_text("serve_cpu_per_hour: 1\nserve_cpu_per_hour: 2\n")
    with pytest.raises(ExperimentError, match=r"key 'serve_cpu_per_hour' appears twice .*lines 1 and 2"):
        load_prices(path)
