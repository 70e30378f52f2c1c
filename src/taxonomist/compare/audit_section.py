"""The compare report's section "How clean is your history?": a cheap label audit of the training records.

`audit_history(cmp)` audits the comparison's training pool (a seeded sample of at
most `max_records`) with tfidf out-of-fold probabilities only, so it adds seconds
to `compare` (and to `make demo`), not minutes; `taxonomist audit` is the full
tool. `audit_section(audit)` renders what it found: the estimated share of wrong
labels, the share flagged, the noise rate per category and the most frequent
given -> suggested pairs ("about 40 records labelled C3 look like C2"), and the
cleaning effect when one was measured (`cleaning` in the dict: compare itself does
not measure it, because its test labels carry the same noise; benchmarks/audit.py
measures it on generated data whose wrong labels are known).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import ExperimentError

__all__ = ["audit_history", "audit_section", "TITLE"]

TITLE = "How clean is your history?"


def _name(taxonomy: Any, code: str) -> str:
    if taxonomy is None or code not in taxonomy:
        return code
    name = getattr(taxonomy[code], "name", "") or ""
    return f"{code} {name}" if name and name != code else code


def audit_history(cmp: Any, *, max_records: int = 3000, folds: int = 5, top: int = 8) -> dict[str, Any] | None:
    """Audit the labels of `cmp.pool` (the records the comparison trains on); None when there is too little to audit.

    `cmp` is a `compare.experiments.Comparison`. Reads ids, texts and labels only.
    """
    from ..audit import audit, noise_estimate

    started = time.perf_counter()
    pool = np.asarray(cmp.pool, dtype=int)
    sampled = len(pool) > max_records
    if sampled:
        pool = np.sort(np.random.default_rng([cmp.settings.split_seed, 4099]).choice(pool, max_records, replace=False))
    ids = [str(i) for i in cmp.data.ids[pool].tolist()]
    texts = [str(t) for t in cmp.data.texts[pool].tolist()]
    labels = [str(y) for y in cmp.data.labels[pool].tolist()]
    try:
        result = audit(ids, texts, labels, engines=("tfidf",), folds=folds, seed=cmp.settings.split_seed,
                       skip_small=True, neighbours=0)
    except ExperimentError as exc:  # e.g. one category left after skipping the tiny ones
        cmp.skipped.append({"experiment": "audit", "engine": "tfidf", "cell": "", "reason": str(exc)})
        return None
    est = noise_estimate(result, top_pairs=top)
    tax = cmp.taxonomy
    out = {
        "records": est.records,
        "pool": int(len(cmp.pool)),
        "sampled": sampled,
        "skipped_categories": result.skipped,
        "engine": "tfidf",
        "folds": folds,
        "estimated_wrong": est.estimated_wrong,
        "noise_rate": est.noise_rate,
        "flagged": est.flagged,
        "share_flagged": round(est.flagged / est.records, 4) if est.records else 0.0,
        "categories": [{"category": c.category, "name": _name(tax, c.category), "records": c.records,
                        "estimated_wrong": c.estimated_wrong, "noise_rate": c.noise_rate, "flagged": c.flagged}
                       for c in est.categories[:top] if c.estimated_wrong > 0],
        "pairs": [{"given": p.given, "suggested": p.suggested, "given_name": _name(tax, p.given),
                   "suggested_name": _name(tax, p.suggested), "estimated": p.estimated, "flagged": p.flagged,
                   "sentence": p.sentence()} for p in est.pairs],
        "suspect_ids": [s.id for s in result.suspects[:top]],
        "cleaning": None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    cmp.timings["audit"] = out["seconds"]
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def audit_section(audit: dict[str, Any]) -> tuple[str, list[str], list[tuple[str, str]]]:
    """(title, charts, [(html table, markdown table)]) as `report._sections` lists them."""
    from .report import _table

    sample = (f"a random {audit['records']:,} of the {audit['pool']:,} training records" if audit["sampled"]
              else f"the {audit['records']:,} training records")
    rows = [
        ["records audited", f"{sample} ({audit['engine']}, {audit['folds']}-fold out-of-fold probabilities, confident learning)"],
        ["labels estimated wrong", f"about {round(audit['estimated_wrong']):,} ({_pct(audit['noise_rate'])})"],
        ["flagged for review", f"{audit['flagged']:,} ({_pct(audit['share_flagged'])}); first ids: {', '.join(audit['suspect_ids']) or '-'}"],
    ]
    clean = audit.get("cleaning")
    if clean:
        rows.append(["cleaning effect", f"trained on cleaned labels {_pct(clean['cleaned'])} vs raw {_pct(clean['raw'])} "
                                        f"on {clean['n']:,} records ({clean.get('scored_on', 'test labels')})"])
    else:
        rows.append(["cleaning effect", "not measured here (the test labels carry the same noise); "
                                        "`taxonomist audit --db ... --to-review` sends the suspects to review"])
    tables = [_table(["figure", "value"], rows)]
    if audit["categories"]:
        tables.append(_table(["category", "records", "estimated wrong", "noise rate", "flagged"],
                             [[c["name"], f"{c['records']:,}", f"{c['estimated_wrong']:.0f}", _pct(c["noise_rate"]), c["flagged"]]
                              for c in audit["categories"]]))
    if audit["pairs"]:
        tables.append(_table(["labelled", "looks like", "estimated", "flagged", "in words"],
                             [[p["given_name"], p["suggested_name"], f"{p['estimated']:.0f}", p["flagged"], p["sentence"]]
                              for p in audit["pairs"]]))
    return TITLE, [], tables
