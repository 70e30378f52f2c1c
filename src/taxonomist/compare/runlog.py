"""Every evaluation of a comparison as a run: its predictions, kept in memory and in the store.

One `EvalRun` is one engine's predictions on one set of records for one
experiment cell (a seed and k of the learning curve, a month of the backtest,
...). The report's figures are computed from these runs, and each run's
predictions are written to the store under its run id, so a figure can be
recomputed from the store and `results.json` alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _scores as m

__all__ = ["EvalRun", "RunLog"]


@dataclass
class EvalRun:
    run_id: str
    experiment: str
    engine: str
    model_id: str
    ids: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray
    confidence: np.ndarray
    predict_seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def correct(self) -> np.ndarray:
        return self.y_true == self.y_pred

    def metrics(self) -> dict[str, float]:
        return m.summary(self.y_true, self.y_pred, self.confidence)

    def head(self, n: int) -> EvalRun:
        """The same run restricted to its first n records (test orders are shared prefixes)."""
        return EvalRun(
            self.run_id, self.experiment, self.engine, self.model_id, self.ids[:n], self.y_true[:n], self.y_pred[:n],
            self.confidence[:n], self.predict_seconds * min(n, self.n) / max(self.n, 1), dict(self.meta),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"run_id": self.run_id, "experiment": self.experiment, "engine": self.engine, "model_id": self.model_id, "n": self.n}
        out.update(self.meta)
        out.update(self.metrics())
        out["predict_seconds"] = round(self.predict_seconds, 4)
        return out


class RunLog:
    """Collects runs; with a store, writes each run's predictions under its run id."""

    def __init__(self, store: Any | None = None) -> None:
        self.store = store
        self.runs: dict[str, EvalRun] = {}
        self._stored: dict[str, dict[str, Any]] | None = None

    def restore(self, cell: str, *, y_true: Sequence[str], ids: Sequence[str]) -> EvalRun | None:
        """The run of `cell` finished by an earlier comparison on this store, with its stored predictions; else None.

        A run cut short (killed mid-way) never finished, so its cell is computed again.
        """
        found = self._finished().get(cell)
        if found is None:
            return None
        rows = {str(x["record_id"]): x for x in self.store.predictions(run_id=found["id"])}
        ids = [str(i) for i in ids]
        if any(i not in rows for i in ids):
            return None
        params = dict(found["params"])
        meta = {k: v for k, v in params.items() if k not in ("experiment", "engine", "model_id", "cell")}
        run = EvalRun(
            run_id=found["id"], experiment=params["experiment"], engine=params["engine"], model_id=params["model_id"],
            ids=np.asarray(ids, dtype=object), y_true=np.asarray(y_true, dtype=object),
            y_pred=np.asarray([rows[i]["category"] for i in ids], dtype=object),
            confidence=np.asarray([float(rows[i]["confidence"]) for i in ids], dtype=float),
            predict_seconds=sum(float(rows[i].get("latency_ms") or 0.0) for i in ids) / 1000.0, meta=meta,
        )
        self.runs[run.run_id] = run
        return run

    def finished(self, cell: str) -> bool:
        """Whether an earlier comparison on this store finished `cell` (a cheap look, without its predictions)."""
        return cell in self._finished()

    def _finished(self) -> dict[str, dict[str, Any]]:
        if self.store is None:
            return {}
        if self._stored is None:
            self._stored = {}
            for r in self.store.runs():
                cell_id = (r.get("params") or {}).get("cell")
                if r["kind"].startswith("compare:") and r["status"] == "ok" and cell_id:
                    self._stored[str(cell_id)] = r
        return self._stored

    def record(
        self,
        *,
        experiment: str,
        engine: str,
        model_id: str,
        ids: Sequence[str],
        y_true: Sequence[str],
        y_pred: Sequence[str],
        confidence: Sequence[float],
        predict_seconds: float,
        meta: Mapping[str, Any] | None = None,
        extras: Sequence[Mapping[str, Any]] | None = None,
        cell: str | None = None,
    ) -> EvalRun:
        meta = dict(meta or {})
        run_id = self._start(experiment, engine, model_id, {**meta, "cell": cell} if cell else meta)
        run = EvalRun(
            run_id=run_id,
            experiment=experiment,
            engine=engine,
            model_id=model_id,
            ids=np.asarray(ids, dtype=object),
            y_true=np.asarray(y_true, dtype=object),
            y_pred=np.asarray(y_pred, dtype=object),
            confidence=np.asarray(confidence, dtype=float),
            predict_seconds=float(predict_seconds),
            meta=meta,
        )
        self.runs[run_id] = run
        if self.store is not None:
            self._write(run, extras)
        return run

    def __getitem__(self, run_id: str) -> EvalRun:
        return self.runs[run_id]

    def select(self, **where: Any) -> list[EvalRun]:
        out = []
        for run in self.runs.values():
            attrs = {"experiment": run.experiment, "engine": run.engine, **run.meta}
            if all(attrs.get(k) == v for k, v in where.items()):
                out.append(run)
        return out

    # ----- store ------------------------------------------------------------------------
    def _start(self, experiment: str, engine: str, model_id: str, meta: Mapping[str, Any]) -> str:
        params = {"experiment": experiment, "engine": engine, "model_id": model_id, **_jsonable(meta)}
        if self.store is None:
            return uuid.uuid4().hex
        return str(self.store.start_run(f"compare:{experiment}", params))

    def _write(self, run: EvalRun, extras: Sequence[Mapping[str, Any]] | None) -> None:
        rows = []
        for i in range(run.n):
            row = {
                "record_id": str(run.ids[i]),
                "model_id": run.model_id,
                "category": str(run.y_pred[i]),
                "confidence": float(run.confidence[i]),
                "latency_ms": run.predict_seconds * 1000.0 / max(run.n, 1),
            }
            if extras is not None:
                row.update(extras[i])
            rows.append(row)
        self.store.add_predictions(rows, run_id=run.run_id)
        self.store.finish_run(run.run_id, summary={k: round(v, 6) for k, v in run.metrics().items()})


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in meta.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = float(v)
        elif isinstance(v, (list, tuple)):
            v = [str(x) for x in v]
        elif not isinstance(v, (str, int, float, bool, type(None))):
            v = str(v)
        out[k] = v
    return out


def iter_ids(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in values]
