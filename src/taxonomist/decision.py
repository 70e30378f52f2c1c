"""The one place a probability becomes a decision: a category, or NONE with a reason.

`Engine.predict_batch` calls `decide` for every engine; the CLI, compare, the
API and the cascade all go through `predict_batch`, so they cannot disagree.
A decision is made in three steps:

1. The model's distribution over its own classes is read in the *current*
   taxonomy (`CodeMap`): a code merged, renamed or retired-with-successor since
   the model was trained carries its probability to its successor; a code split
   or retired without successor keeps its mass as a pending outcome that, if it
   wins, becomes NONE (`split`, `retired_code`) and goes to review.
2. An engine may force NONE for a row (the LLM answered nothing valid, or chose
   NONE itself).
3. The winner's calibrated confidence must clear the model's threshold, else
   NONE (`below_threshold`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .prediction import Alternative, Evidence, Prediction, Reason
from .taxonomy import ABSTAIN

if TYPE_CHECKING:
    from .taxonomy import Taxonomy

__all__ = ["CodeFate", "CodeMap", "decide"]


@dataclass(frozen=True)
class CodeFate:
    """What one of a model's codes means in the current taxonomy."""

    code: str  # the model's code
    target: str | None  # the active code it now answers as; None: NONE
    reason: str = ""  # "" (unchanged), Reason.MAPPED, Reason.SPLIT, Reason.RETIRED_CODE, Reason.UNKNOWN_CODE
    note: str = ""  # e.g. "merged into C1", "split: G1 → G1a/G1b"


class CodeMap:
    """How the codes of a model trained on one taxonomy version read in another (the store's current one).

    Built once per (model, taxonomy); `changed` is False when nothing needs
    mapping, so the common case costs nothing per record.
    """

    def __init__(self, classes: Sequence[str], taxonomy: Taxonomy, *, model_version: str = "") -> None:
        self.taxonomy = taxonomy
        self.model_version = model_version
        self.current_version = taxonomy.version_id
        renames, splits_kept = _changes_since(taxonomy, model_version)
        self.fates = {str(c): _fate(str(c), taxonomy, renames, splits_kept) for c in classes}
        self.changed = any(f.reason for f in self.fates.values())

    def summary(self) -> str:
        """One line for the CLI's warning, naming both versions and what changes."""
        moved = [f.note for f in self.fates.values() if f.reason]
        shown = "; ".join(moved[:6]) + (f"; and {len(moved) - 6} more" if len(moved) > 6 else "")
        return (
            f"the model was trained on taxonomy {self.model_version or '(unknown version)'}, the store's is "
            f"{self.current_version}: {shown}"
        )

    def matrix(self, classes: Sequence[str]) -> tuple[np.ndarray, list[str], list[CodeFate | None]]:
        """(M, columns, fates): `proba @ M` sums each class's mass into its column in the current taxonomy.

        Columns are active codes, then one column per pending (split/retired)
        class; `fates[j]` is None for an active column, the pending fate else.
        """
        columns: list[str] = []
        fates: list[CodeFate | None] = []
        index: dict[str, int] = {}
        m = np.zeros((len(classes), 0))
        cols: list[int] = []
        for c in classes:
            fate = self.fates[str(c)]
            key = fate.target if fate.target is not None else f"{ABSTAIN}:{fate.code}"
            if key not in index:
                index[key] = len(columns)
                columns.append(fate.target if fate.target is not None else ABSTAIN)
                fates.append(None if fate.target is not None else fate)
            cols.append(index[key])
        m = np.zeros((len(classes), len(columns)))
        m[np.arange(len(classes)), cols] = 1.0
        return m, columns, fates


def _changes_since(taxonomy: Taxonomy, version: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Renames ({old: new}) and keep-splits ({code: new parts}) recorded after `version` in the changelog.

    When `version` is not in the changelog, every recorded entry counts: a
    rename or split the model might predate is safer to apply than to ignore.
    """
    entries = list(taxonomy.changelog)
    start = 0
    for i, e in enumerate(entries):
        if e.version == version:
            start = i + 1
    renames: dict[str, str] = {}
    splits_kept: dict[str, tuple[str, ...]] = {}
    for e in entries[start:]:
        d = dict(e.details or {})
        if e.op == "rename" and d.get("new_code") and d.get("new_code") != d.get("code"):
            renames[str(d["code"])] = str(d["new_code"])
        elif e.op == "split" and d.get("keep"):
            splits_kept[str(d["code"])] = tuple(str(x) for x in d.get("into", ()))
    return renames, splits_kept


def _fate(code: str, taxonomy: Taxonomy, renames: dict[str, str], splits_kept: dict[str, tuple[str, ...]]) -> CodeFate:
    seen = [code]
    current = code
    while current in renames and current not in taxonomy:
        current = renames[current]
        seen.append(current)
    if current not in taxonomy:
        return CodeFate(code, None, Reason.UNKNOWN_CODE, f"{code} is not in taxonomy {taxonomy.version_id}")
    while True:
        cat = taxonomy[current]
        if cat.active:
            break
        if len(cat.successors) == 1 and cat.successors[0] not in seen:
            current = cat.successors[0]
            seen.append(current)
            continue
        if len(cat.successors) > 1:
            return CodeFate(code, None, Reason.SPLIT, f"split: {current} → {'/'.join(cat.successors)}")
        return CodeFate(code, None, Reason.RETIRED_CODE, f"{current} is retired with no successor")
    if current in splits_kept:
        parts = "/".join((current, *splits_kept[current]))
        return CodeFate(code, None, Reason.SPLIT, f"split: {current} → {parts}")
    if current != code:
        return CodeFate(code, current, Reason.MAPPED, f"{code} → {current}")
    return CodeFate(code, code)


def decide(
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    threshold: float | None = None,
    top_k: int = 5,
    code_map: CodeMap | None = None,
    forced: Sequence[str | None] | None = None,
    forced_confidence: Sequence[float] | None = None,
    evidence: Sequence[Sequence[Evidence]] | None = None,
    ids: Sequence[str] | None = None,
    model_id: str = "",
    taxonomy_version: str = "",
    route: str = "",
    latency_ms: float = 0.0,
    costs: Sequence[float] | None = None,
    extras: Sequence[dict[str, Any]] | None = None,
) -> list[Prediction]:
    """Decisions for the rows of `proba` (calibrated, one column per entry of `classes`).

    `forced[i]`, when set, is the reason row i is NONE whatever its scores
    (the engine's own abstention), with confidence `forced_confidence[i]` (0 by default). `latency_ms` is the batch's time, shared
    evenly. Returns one `Prediction` per row, in order.
    """
    proba = np.asarray(proba, dtype=float)
    n = len(proba)
    names = [str(c) for c in classes]
    fates: list[CodeFate | None] = [None] * len(names)
    raw_best: np.ndarray | None = None
    if code_map is not None and code_map.changed:
        raw_best = proba.argmax(axis=1) if n else np.zeros(0, dtype=int)
        raw_names = names
        m, names, fates = code_map.matrix(classes)
        proba = proba @ m
    pending = np.array([f is not None for f in fates], dtype=bool)
    k = max(1, min(top_k, len(names)))
    per_row_ms = latency_ms / n if n else 0.0
    out: list[Prediction] = []
    for i in range(n):
        row = proba[i]
        order = np.argsort(-row, kind="stable")
        best = int(order[0])
        confidence = float(row[best])
        extra = dict(extras[i]) if extras is not None else {}
        reason = ""
        if forced is not None and forced[i]:
            category, reason = ABSTAIN, str(forced[i])
            confidence = float(forced_confidence[i]) if forced_confidence is not None else 0.0
        elif pending[best]:
            fate = fates[best]
            assert fate is not None
            category, reason = ABSTAIN, fate.reason
            extra["note"] = fate.note
            extra["model_category"] = fate.code
        else:
            category = names[best]
            if raw_best is not None and raw_names[int(raw_best[i])] != category:
                reason = Reason.MAPPED
                extra["mapped_from"] = raw_names[int(raw_best[i])]
            if threshold is not None and confidence < threshold:
                extra["threshold"] = threshold
                if reason == Reason.MAPPED:
                    extra["model_category"] = category
                category, reason = ABSTAIN, Reason.BELOW_THRESHOLD
        alternatives = tuple(Alternative(names[j], float(row[j])) for j in order if not pending[j])[:k]
        out.append(Prediction(
            category=category,
            confidence=confidence,
            alternatives=alternatives,
            evidence=tuple(evidence[i]) if evidence is not None else (),
            model_id=model_id,
            latency_ms=per_row_ms,
            cost_usd=float(costs[i]) if costs is not None else 0.0,
            extra=extra,
            reason=reason,
            taxonomy_version=taxonomy_version,
            route=route,
            record_id=str(ids[i]) if ids is not None else "",
        ))
    return out
