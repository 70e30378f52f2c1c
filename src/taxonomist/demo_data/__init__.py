"""Realistic, deterministic denial records for the flagship demo (no real PHI): `generate(out_dir, seed=...)`.

The generator writes what a billing team would hold: 80,000 labelled denial lines
over 24 months from a dozen payers, the taxonomy they were labelled with (47
categories, 48 from the month the audio-only telehealth category G7 is split out of
G1), a second network's history with its own codes and a crosswalk, and a data card.
It is hard in the ways real data is hard: long-tailed classes, codes that do not
decide the category, generic codes, vague remarks, typos, near-duplicates, ~3% label
noise (flagged in the hidden `label_is_noise` column) and wording drift over time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import TaxonomistError
from ..taxonomy import Taxonomy
from ._generator import COLUMNS, Events, Knobs, draw_records, month_start, render_text
from ._network_b import AMBIGUOUS, network_b_crosswalk, network_b_taxonomy, their_label
from ._payers import NETWORK_B_PAYERS, PAYERS

__all__ = [
    "COLUMNS",
    "NETWORK_B_COLUMNS",
    "DemoData",
    "Events",
    "Knobs",
    "base_taxonomy",
    "demo_taxonomy",
    "generate",
    "generate_records",
    "render_text",
]

#: network_b columns: `label` is their code; `label_ours` is what our team would call it (hidden).
NETWORK_B_COLUMNS = (*COLUMNS, "label_ours")

G7_DEFINITION = dict(
    name="Telehealth audio-only (FQ modifier)",
    definition=(
        "An audio-only (telephone) telehealth service denied or returned because modifier FQ is "
        "missing or wrong (95/GT billed instead), or the audio-only place of service is not accepted. "
        "Split out of G1 so audio-only volume can be tracked since payers started requiring FQ."
    ),
    include=["audio-only visit billed with 95 or GT instead of FQ", "telephone-only session without FQ"],
    exclude=["video telehealth missing modifier 95/GT (G1)", "place of service wrong for video visits (G2)"],
    examples=[
        "CO-4 Audio-only service billed without modifier FQ.",
        "Telephone only visit requires FQ modifier, 95 not valid for audio-only.",
    ],
    source_codes=["CARC:4", "CARC:182"],
)


def base_taxonomy() -> Taxonomy:
    """The 47-category example taxonomy (a packaged copy of examples/denials/taxonomy.yaml)."""
    text = resources.files(__package__).joinpath("taxonomy.yaml").read_text(encoding="utf-8")
    return Taxonomy.from_yaml(text, source="taxonomist/demo_data/taxonomy.yaml")


def demo_taxonomy(events: Events = Events()) -> Taxonomy:
    """The taxonomy after the event: G7 split out of G1 (kept), dated the first day of that month."""
    base = base_taxonomy()
    date = month_start(events.new_category_month).isoformat()
    change = base.split(
        events.new_category_parent, {events.new_category: G7_DEFINITION["name"]},
        author="billing-team", keep=True, date=date,
    )
    # split() gives the new category a stub definition; write the real one and re-stamp the entry.
    cats = [
        dataclasses.replace(
            c, definition=G7_DEFINITION["definition"], include=tuple(G7_DEFINITION["include"]),
            exclude=tuple(G7_DEFINITION["exclude"]), examples=tuple(G7_DEFINITION["examples"]),
            source_codes=tuple(G7_DEFINITION["source_codes"]),
        ) if c.code == events.new_category else c
        for c in change.taxonomy.categories
    ]
    draft = Taxonomy(
        name=base.name, description=base.description, source_code_systems=base.source_code_systems,
        groups=base.groups, categories=cats, changelog=base.changelog,
    )
    entry = dataclasses.replace(change.entry, version=draft.version_id)
    return Taxonomy(
        name=base.name, description=base.description, source_code_systems=base.source_code_systems,
        groups=base.groups, categories=cats, changelog=(*base.changelog, entry),
    )


@dataclass(frozen=True)
class DemoData:
    """What `generate` wrote."""

    out_dir: Path
    files: tuple[Path, ...]
    records: int
    network_b_records: int
    seed: int


def generate_records(
    *, records: int = 80_000, seed: int = 7, months: int = 24, events: Events = Events(), knobs: Knobs = Knobs(),
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, list]:
    """Our network's records as column lists (see COLUMNS), without writing anything."""
    _check_args(records, months, events)
    out = draw_records(
        n=records, seed=seed, months=months, payers=PAYERS, events=events, knobs=knobs, on_progress=on_progress
    )
    out.pop("concept")
    return out


def _check_args(records: int, months: int, events: Events) -> None:
    if records < 1:
        raise TaxonomistError(f"--records must be at least 1 (got {records})")
    if months < events.new_category_month:
        raise TaxonomistError(
            f"--months must be at least {events.new_category_month} so the 48th category "
            f"({events.new_category}) appears (got {months})"
        )


def generate(
    out_dir: str | Path,
    *,
    seed: int = 7,
    records: int = 80_000,
    months: int = 24,
    network_b_records: int | None = None,
    x12_records: int = 0,
    events: Events = Events(),
    knobs: Knobs = Knobs(),
    on_progress: Callable[[int], None] | None = None,
) -> DemoData:
    """Write the demo data set to `out_dir` (created if missing). Same seed, same bytes."""
    from ._card import data_card

    _check_args(records, months, events)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    nb = network_b_records if network_b_records is not None else max(1, round(records / 8))

    ours = draw_records(
        n=records, seed=seed, months=months, payers=PAYERS, events=events, knobs=knobs, on_progress=on_progress
    )
    concept = ours.pop("concept")
    theirs = draw_records(
        n=nb, seed=seed, months=months, payers=NETWORK_B_PAYERS, events=events, knobs=knobs,
        network="B", id_prefix="NB", stream=1,
    )
    theirs.pop("concept")
    theirs["label_ours"] = list(theirs["label"])
    theirs["label"] = [
        their_label(lab, cpt, (k * 0.618034) % 1.0)
        for k, (lab, cpt) in enumerate(zip(theirs["label_ours"], theirs["cpt"]))
    ]

    taxonomy = demo_taxonomy(events)
    files = []
    files += _write_table(ours, COLUMNS, out / "denials")
    files += _write_table(theirs, NETWORK_B_COLUMNS, out / "network_b")
    taxonomy.save(out / "taxonomy.yaml")
    network_b_taxonomy(month_start(1).isoformat()).save(out / "network_b_taxonomy.yaml")
    files += [out / "taxonomy.yaml", out / "network_b_taxonomy.yaml"]
    _write_crosswalk(out / "crosswalk_network_b.yaml")
    files.append(out / "crosswalk_network_b.yaml")
    if x12_records:
        from ..x12 import write_835

        path = out / "denials.835"
        write_835(
            _rows(ours, min(x12_records, records)), path, control_seed=seed,
            claim_level_payers=[p.name for p in PAYERS if p.claim_level],
        )
        files.append(path)
    card = data_card(
        ours=ours, concept=concept, theirs=theirs, taxonomy=taxonomy, seed=seed, months=months,
        events=events, knobs=knobs, x12_records=min(x12_records, records),
    )
    (out / "DATACARD.md").write_text(card, encoding="utf-8")
    files.append(out / "DATACARD.md")
    return DemoData(out_dir=out, files=tuple(files), records=records, network_b_records=nb, seed=seed)


def _rows(cols: dict[str, list], n: int) -> list[dict]:
    keys = list(cols)
    return [{k: cols[k][i] for k in keys} for i in range(n)]


def _write_table(cols: dict[str, list], columns: tuple[str, ...], stem: Path) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {
        "month": pa.int16(), "line": pa.int16(), "billed_amount": pa.float64(), "paid_amount": pa.float64(),
        "adjustment_amount": pa.float64(), "label_is_noise": pa.bool_(), "text_determines": pa.bool_(),
    }
    table = pa.table({c: pa.array(cols[c], type=types.get(c, pa.string())) for c in columns})
    pq.write_table(table, stem.with_suffix(".parquet"), compression="zstd", write_statistics=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for i in range(len(cols[columns[0]])):
        w.writerow([_csv_value(cols[c][i]) for c in columns])
    stem.with_suffix(".csv").write_text(buf.getvalue(), encoding="utf-8")
    return [stem.with_suffix(".parquet"), stem.with_suffix(".csv")]


def _csv_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.2f}"
    return v


def _write_crosswalk(path: Path) -> None:
    import yaml

    cw = network_b_crosswalk()
    doc = {
        "source": cw.source,
        "note": (
            "Their code -> our code (many-to-one). Codes listed under 'ambiguous' cover more than one of "
            "ours; they map to the dominant one and the imported labels of the others need review."
        ),
        "mapping": dict(cw.mapping),
        "ambiguous": {k: list(v) for k, v in AMBIGUOUS.items()},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
