"""The four experiments of a comparison, run for every engine on the same splits.

1. `learning_curve`: k labelled examples per category, several seeds.
2. `backtest`: train on the first months, test month by month after, with
   retraining policies (never, monthly, when label-free drift crosses a threshold).
3. `taxonomy_events`: a new category introduced with k examples, a merge of two
   categories, a second network imported through a crosswalk.
4. `cost_speed`: latency, throughput and the monthly cost model with break-even volumes.

Engines see the same records in the same order: every test set is a fixed
permutation and an engine with a smaller evaluation cap (a slow one) is scored
on a prefix of it, so any two engines can be compared on their common prefix.
Every evaluation is a run in the `RunLog` (and the store).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.base import Engine, create_engine
from ..errors import ExperimentError, TaxonomyError
from ..taxonomy import ABSTAIN, Crosswalk, Taxonomy
from .costs import CostModel, PriceTable, break_even_volume
from .dataset import Dataset
from .runlog import EvalRun, RunLog

__all__ = [
    "EngineSpec",
    "Settings",
    "Comparison",
    "ALL",
]

ALL = "all"
#: Engine families that answer from retrieved examples (and a prompt) rather than trained weights.
RETRIEVAL_FAMILIES = frozenset({"retrieval", "prompted"})
POLICIES = ("never", "monthly", "drift")


@dataclass(frozen=True)
class EngineSpec:
    """One engine in a comparison, with the caps that keep a slow engine inside the time budget.

    `max_train` caps training examples (a stratified subsample), `max_test` caps
    evaluated records per evaluation (a prefix of the shared test order);
    `seeds`, `ks`, `policies` and `event_ks` restrict which cells run.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""
    max_train: int | None = None
    max_test: int | None = None
    seeds: int | None = None
    ks: tuple[Any, ...] | None = None
    policies: tuple[str, ...] = POLICIES
    event_ks: tuple[int, ...] | None = None
    batch_size: int = 512
    gpu: bool = False
    skip: tuple[str, ...] = ()
    event_test: int | None = None
    month_test: int | None = None

    @property
    def engine_class(self) -> type[Engine] | None:
        """The registered engine class of `name` (None for a name no engine has: `create_engine` says so)."""
        from ..engines.base import engine_classes

        return engine_classes().get(self.name)

    @property
    def family(self) -> str:
        cls = self.engine_class
        return "retrieval" if cls is not None and cls.family in RETRIEVAL_FAMILIES else "trained"

    @property
    def display(self) -> str:
        return self.label or self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.display, "family": self.family, "params": dict(self.params),
            "max_train": self.max_train, "max_test": self.max_test, "seeds": self.seeds,
            "ks": list(self.ks) if self.ks else None, "policies": list(self.policies),
            "event_ks": list(self.event_ks) if self.event_ks else None, "gpu": self.gpu,
            "skip": list(self.skip), "event_test": self.event_test, "month_test": self.month_test,
        }


@dataclass(frozen=True)
class Settings:
    """Sizes and thresholds of a comparison; the defaults are what `compare` runs."""

    ks: tuple[Any, ...] = (1, 3, 5, 10, 25, 50, 100, ALL)
    seeds: int = 3
    test_fraction: float = 0.2
    max_test: int = 2000
    train_end_month: int = 12
    backtest_per_month: int = 300
    drift_threshold: float = 0.05
    new_category_ks: tuple[int, ...] = (1, 5, 10, 25)
    new_category_eval: int = 300
    general_eval: int = 500
    network_eval: int = 500
    network_history: int = 3000
    latency_items: int = 50
    throughput_items: int = 1000
    cascade_targets: tuple[float, ...] = (0.90, 0.93, 0.95, 0.97, 0.99)
    split_seed: int = 0
    #: The category the new-category replay introduces (default: the one first seen after training with most records).
    new_category: str | None = None
    #: Items a month the first screen prices each approach at.
    volume: int = 20000
    #: The accuracy on answered records the review share is quoted at.
    review_target: float = 0.95
    #: Put record text next to the record ids of the most confused pairs (off: the report may travel; text is PHI).
    show_text: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


Progress = Callable[[str, int], Callable[[int], None]]


def _no_progress(description: str, total: int) -> Callable[[int], None]:
    return lambda n=1: None


def _quiet_fit_warnings() -> None:
    # k=1 per category trips sklearn's "looks like regression" heuristic; it is not.
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _key(idx: np.ndarray, *extra: Any) -> str:
    h = hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes())
    for e in extra:
        h.update(repr(e).encode())
    return h.hexdigest()[:16]


class _Fitted:
    """An engine fitted on demand: a comparison resumed from its store skips fits whose runs are all stored.

    `model_id` and `train_seconds` come from the fit, or, before it, from a stored run of the same cell.
    `prefetch` starts the fit on a worker thread (`Comparison.parallel`); `engine` then waits for it.
    """

    def __init__(self, spec: EngineSpec, n_train: int, capped: bool, key: str, fit: Callable[[], tuple[Engine, float]],
                 *, ahead: bool = True) -> None:
        self.spec, self.n_train, self.capped, self.key = spec, n_train, capped, key
        self._do_fit = fit
        self.ahead = ahead
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._future: Future | None = None
        self._model_id: str | None = None
        self._train_seconds: float | None = None

    @property
    def fitted(self) -> bool:
        return self._engine is not None

    def prefetch(self, executor: Executor) -> None:
        with self._lock:
            if self.ahead and self._engine is None and self._future is None:
                self._future = executor.submit(self._do_fit)

    @property
    def engine(self) -> Engine:
        with self._lock:  # one fit, whichever thread asks first
            if self._engine is None:
                if self._future is not None:
                    self._engine, self._train_seconds = self._future.result()
                else:
                    with warnings.catch_warnings():
                        _quiet_fit_warnings()
                        self._engine, self._train_seconds = self._do_fit()
                self._model_id = _model_id(self._engine, self.spec)
            return self._engine

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            self.engine
        return str(self._model_id)

    @property
    def train_seconds(self) -> float:
        if self._train_seconds is None:
            self.engine
        return float(self._train_seconds or 0.0)

    def restored(self, model_id: str, train_seconds: float) -> None:
        if self._engine is None and self._model_id is None:
            self._model_id, self._train_seconds = model_id, float(train_seconds)


class _Workers:
    """`jobs` daemon threads running submitted fits in the order given.

    Daemon threads, unlike `ThreadPoolExecutor`'s, do not hold an interrupted comparison until the fits
    under way finish: Ctrl-C exits at once, and the rerun resumes from the stored cells.
    """

    def __init__(self, jobs: int) -> None:
        import queue

        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs = jobs
        for i in range(jobs):
            threading.Thread(target=self._work, name=f"taxonomist-fit-{i}", daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        self._queue.put((future, fn))
        return future

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the thread that waits for this fit
                future.set_exception(exc)

    def close(self) -> None:
        """Cancel the fits not started and let the threads end (a fit under way finishes on its own)."""
        import queue

        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(self._jobs):
            self._queue.put(None)


class Comparison:
    """Runs the experiments on one dataset for a list of engines; results are plain dicts.

    `jobs` > 1 (inside `parallel()`, as `run_compare` does): fits run ahead on `jobs` worker threads, each
    with single-threaded BLAS, in the order the experiments need them, while this thread evaluates.
    """

    def __init__(
        self,
        data: Dataset,
        taxonomy: Taxonomy | None,
        engines: Sequence[EngineSpec],
        *,
        settings: Settings | None = None,
        log: RunLog | None = None,
        workdir: str | Path,
        progress: Progress | None = None,
        second_network: tuple[Dataset, Crosswalk] | None = None,
        jobs: int = 1,
    ) -> None:
        if not engines:
            raise ExperimentError("a comparison needs at least one engine (e.g. --engines tfidf,knn)")
        if len(set(data.labels.tolist())) < 2:
            raise ExperimentError(f"dataset '{data.name}' has fewer than 2 categories; nothing to compare")
        self.data = data
        self.notes: list[str] = []
        if taxonomy is None:
            try:
                taxonomy = Taxonomy.from_labels(data.labels.tolist(), name=data.name)
            except TaxonomyError as exc:
                # Labels that are not valid category codes (spaces, quotes, commas) still compare fine.
                self.notes.append(f"No taxonomy document: labels are used as they are ({exc}).")
        self.taxonomy: Taxonomy | None = taxonomy
        self.specs = list(engines)
        self.settings = settings or Settings()
        self.log = log or RunLog()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = progress or _no_progress
        self.second_network = second_network
        self.skipped: list[dict[str, str]] = []
        self.timings: dict[str, float] = {}
        self._fits: dict[tuple[str, str], _Fitted] = {}
        self.resumed = 0  # cells taken from the store instead of recomputed
        self._evals: dict[tuple[int, str], EvalRun] = {}
        self._tax_paths: dict[str, str] = {}
        self._priorities: dict[int, np.ndarray] = {}
        self.jobs = max(1, int(jobs))
        self._workers: _Workers | None = None
        self._splits()

    @contextmanager
    def parallel(self) -> Iterator[None]:
        """Within this block, fits run ahead on `jobs` worker threads (nothing changes with jobs=1).

        BLAS runs single-threaded meanwhile: two fits on two cores beat one fit on two BLAS threads, and
        OpenBLAS threads that wait for a busy core spin (measured on a loaded 2-core machine: a logistic
        head's fit took 139 s with two BLAS threads, 26 s with one). Results do not depend on `jobs`.
        """
        if self.jobs <= 1:
            yield
            return
        from threadpoolctl import threadpool_limits

        workers = _Workers(self.jobs)
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            _quiet_fit_warnings()
            self._workers = workers
            try:
                yield
            finally:
                self._workers = None
                workers.close()

    def _ahead(self, fitted: _Fitted, idx: np.ndarray, experiment: str, *, ids: np.ndarray | None = None, **meta: Any) -> None:
        """Start `fitted`'s fit on a worker now, unless its evaluation (`idx`, `experiment`, `meta`) is stored already."""
        if self._workers is None or fitted.fitted or self._eval_key(fitted, idx) in self._evals:
            return  # fitted, or its evaluation already made (the same model on the same records, e.g. k=all)
        ids = self.data.ids[idx] if ids is None else ids
        if not self.log.finished(self._cell(fitted, idx, experiment, ids, meta)):
            fitted.prefetch(self._workers)

    def _ahead_in_turn(self, plans: Sequence[Sequence[tuple[_Fitted, np.ndarray, Mapping[str, Any]]]], experiment: str) -> None:
        """`_ahead` for each engine's fits (fitted, records, cell), taking the engines in turn, one fit each.

        A fit that warm-starts from the one before it in its list is then taken by a worker after that one
        started, usually after it ended, while the other worker fits another engine's model.
        """
        for row in itertools.zip_longest(*plans):
            for fitted, idx, meta in (item for item in row if item is not None):
                self._ahead(fitted, idx, experiment, **meta)

    def precompute(self) -> None:
        """Let each engine trained on all records compute once what its fits share (`Engine.precompute`).

        MiniLM embeddings (cached on disk) and tfidf's n-gram counts (in memory): computed for every record
        once, up front and with progress, so the fits running side by side do not compute them again, each
        for its records. Engines with a training cap skip it (they see only their sample).
        """
        texts = self.data.texts.tolist()
        step = 1000
        with self._timed("precompute"):
            for spec in (s for s in self.specs if s.max_train is None):
                engine = self._make(spec, None)
                if type(engine).precompute is Engine.precompute:
                    continue
                # One stage per engine: a second engine on the same embedder finds everything cached.
                advance = self.progress(f"{spec.display}: computing once what its fits share", len(texts))
                for i in range(0, len(texts), step):
                    engine.precompute(texts[i : i + step])
                    advance(min(step, len(texts) - i))

    # ----- splits -----------------------------------------------------------------------
    def _splits(self) -> None:
        s, d = self.settings, self.data
        rng = np.random.default_rng(s.split_seed)
        n = len(d)
        if d.dated:
            in_period = np.flatnonzero(d.months <= s.train_end_month)
            if len(in_period) == 0 or len(in_period) == n:
                # All records in one period: the time experiments have nothing to test on.
                in_period = np.arange(n)
        else:
            in_period = np.arange(n)
        # Stratified holdout: test_fraction of each category (at least one kept for training).
        test, pool = [], []
        labels = d.labels[in_period]
        for c in sorted(set(labels.tolist())):
            members = in_period[labels == c]
            members = members[rng.permutation(len(members))]
            n_test = int(round(len(members) * s.test_fraction)) if len(members) > 1 else 0
            test.extend(members[:n_test].tolist())
            pool.extend(members[n_test:].tolist())
        test = np.array(test, dtype=int)
        test = test[rng.permutation(len(test))][: s.max_test]
        self.pool = np.array(sorted(pool), dtype=int)
        self.test = test
        # Categories that appear only after the training period are events, not part of the base taxonomy.
        self.new_codes: list[str] = []
        if d.dated:
            first = {}
            for c, mth in zip(d.labels.tolist(), d.months.tolist()):
                first[c] = min(first.get(c, mth), mth)
            start = int(d.months.min())
            self.new_codes = sorted(c for c, mth in first.items() if mth > s.train_end_month and mth > start)
        if self.taxonomy is None:
            self.base_taxonomy: Taxonomy | None = None
            return
        base_cats = [c for c in self.taxonomy.categories if c.code not in self.new_codes]
        self.base_taxonomy = (
            Taxonomy(
                name=self.taxonomy.name, description=self.taxonomy.description, groups=self.taxonomy.groups,
                categories=base_cats, changelog=self.taxonomy.changelog, source_code_systems=self.taxonomy.source_code_systems,
            )
            if self.new_codes
            else self.taxonomy
        )

    def splits_summary(self) -> dict[str, Any]:
        d = self.data
        out = {"pool": int(len(self.pool)), "test": int(len(self.test)), "new_categories": self.new_codes}
        if d.dated:
            out["train_months"] = [int(d.months.min()), self.settings.train_end_month]
            out["later_months"] = sorted({int(m) for m in d.months.tolist() if m > self.settings.train_end_month})
        return out

    # ----- helpers ----------------------------------------------------------------------
    def _taxonomy_path(self, taxonomy: Taxonomy) -> str:
        vid = taxonomy.version_id
        if vid not in self._tax_paths:
            path = self.workdir / f"taxonomy-{vid}.yaml"
            taxonomy.save(path)
            self._tax_paths[vid] = str(path)
        return self._tax_paths[vid]

    def _make(self, spec: EngineSpec, taxonomy: Taxonomy | None) -> Engine:
        engine = create_engine(spec.name, **dict(spec.params))
        if taxonomy is not None and "taxonomy" in engine.get_params(deep=False) and "taxonomy" not in spec.params:
            engine.set_params(taxonomy=self._taxonomy_path(taxonomy))
        return engine

    def _priority(self, seed: int) -> np.ndarray:
        """A fixed random rank per record: capped subsamples keep the same records as history grows."""
        if seed not in self._priorities:
            self._priorities[seed] = np.random.default_rng([seed, 7919]).random(len(self.data))
        return self._priorities[seed]

    def _cap(self, idx: np.ndarray, cap: int | None, seed: int, labels: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """At most `cap` records of `idx`: the same share of each category, lowest fixed rank first.

        Ranks are fixed per seed, so the subsample for months 1-13 mostly
        contains the one for months 1-12 (embeddings are reused, not recomputed).
        """
        if cap is None or len(idx) <= cap:
            return idx, False
        labels = self.data.labels[idx] if labels is None else labels
        rank = self._priority(seed)[idx]
        share = cap / len(idx)
        chosen: list[int] = []
        for c in sorted(set(labels.tolist())):
            mask = labels == c
            members, r = idx[mask], rank[mask]
            take = max(1, int(math.floor(len(members) * share)))
            chosen.extend(members[np.argsort(r, kind="stable")[:take]].tolist())
        return np.array(sorted(chosen), dtype=int), True

    def _pool_fit(self, spec: EngineSpec) -> _Fitted:
        """`spec` fitted on the training pool (its cap's sample of it), base taxonomy: the model the experiments
        start from and the cost and speed figures measure."""
        idx, capped = self._cap(self.pool, spec.max_train, 0)
        return self._fit(spec, idx, capped=capped)

    def _fit(
        self,
        spec: EngineSpec,
        idx: np.ndarray,
        *,
        taxonomy: Taxonomy | None = None,
        relabel: Mapping[str, str] | None = None,
        extra: tuple[np.ndarray, np.ndarray] | None = None,
        seed: int = 0,
        capped: bool = False,
        init: _Fitted | None = None,
    ) -> _Fitted:
        """`spec` fitted on records `idx` (relabelled, plus `extra` texts); `init`: the fit to warm-start from
        (`Engine.warm_starts`; ignored by engines without it), made first, on whichever thread asks."""
        taxonomy = self.base_taxonomy if taxonomy is None else taxonomy
        if init is not None and not self._warm_starts(spec):
            init = None
        key = (spec.display, _key(idx, sorted((relabel or {}).items()), getattr(taxonomy, "version_id", None), None if extra is None else _key(np.arange(len(extra[0])), extra[1].tolist()[:50], len(extra[0])),
                                  *(() if init is None else ("started from", init.key))))
        if key in self._fits:
            return self._fits[key]
        n_train = len(idx) + (0 if extra is None else len(extra[0]))

        def fit() -> tuple[Engine, float]:
            texts = self.data.texts[idx].tolist()
            labels = self.data.labels[idx].tolist()
            if relabel:
                labels = [relabel.get(y, y) for y in labels]
            if extra is not None:
                texts += list(extra[0])
                labels += list(extra[1])
            start_from = None if init is None else init.engine  # waits for that fit (or makes it) first
            engine = self._make(spec, taxonomy)
            start = time.perf_counter()
            engine.fit(texts, labels, init=start_from)
            return engine, float(getattr(engine, "train_seconds_", time.perf_counter() - start))

        if taxonomy is not None:
            self._taxonomy_path(taxonomy)  # written here, on the calling thread, not by a fit on a worker

        fitted = _Fitted(spec, n_train, capped, _key(np.zeros(0), key, sorted(spec.to_dict().items(), key=str)), fit)
        self._fits[key] = fitted
        return fitted

    def _evaluate(
        self,
        fitted: _Fitted,
        idx: np.ndarray,
        experiment: str,
        *,
        truth: np.ndarray | None = None,
        ids: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
        **meta: Any,
    ) -> EvalRun:
        cache_key = self._eval_key(fitted, idx, truth)
        if cache_key in self._evals:
            return self._evals[cache_key]
        y_true = self.data.labels[idx] if truth is None else truth
        ids = self.data.ids[idx] if ids is None else ids
        # Resume: the same cell (same engine settings, training set and records) stored by an earlier run is reused.
        cell = self._cell(fitted, idx, experiment, ids, meta)
        stored = self.log.restore(cell, y_true=y_true, ids=ids)
        if stored is not None:
            fitted.restored(stored.model_id, stored.meta.get("train_seconds", 0.0))
            self.resumed += 1
            self._evals[cache_key] = stored
            return stored
        texts = self.data.texts[idx].tolist() if texts is None else list(texts)
        engine = fitted.engine
        preds, confs = [], []
        start = time.perf_counter()
        step = max(1, fitted.spec.batch_size)
        reasons: dict[str, int] = {}
        for i in range(0, len(texts), step):
            # The one decision path: an engine with a threshold abstains here exactly as in `classify`.
            for p in engine.predict_batch(texts[i : i + step], top_k=1, evidence=False):
                preds.append(p.category)
                confs.append(p.confidence)
                if p.reason and p.category == ABSTAIN:
                    reasons[p.reason] = reasons.get(p.reason, 0) + 1
        seconds = time.perf_counter() - start
        if reasons:
            meta = {**meta, "abstain_reasons": reasons}
        run = self.log.record(
            experiment=experiment,
            engine=fitted.spec.display,
            model_id=fitted.model_id,
            ids=ids,
            y_true=y_true,
            y_pred=preds,
            confidence=confs,
            predict_seconds=seconds,
            meta={"n_train": fitted.n_train, "train_seconds": round(fitted.train_seconds, 4), "train_capped": fitted.capped, **meta},
            cell=cell,
        )
        self._evals[cache_key] = run
        return run

    @staticmethod
    def _eval_key(fitted: _Fitted, idx: np.ndarray, truth: np.ndarray | None = None) -> tuple[str, str]:
        """This run's in-memory key of one evaluation: the same model on the same records (and truth) is scored once."""
        return fitted.key, _key(idx, None if truth is None else truth.tolist())

    @staticmethod
    def _cell(fitted: _Fitted, idx: np.ndarray, experiment: str, ids: np.ndarray, meta: Mapping[str, Any]) -> str:
        """The key of one evaluation: a rerun on the same store finds its predictions under it."""
        return _key(np.asarray(idx, dtype=np.int64), fitted.key, experiment, sorted(meta.items(), key=str),
                    ids[:3].tolist() if len(ids) else [])

    def _test_for(self, spec: EngineSpec, idx: np.ndarray, *, event: bool = False) -> np.ndarray:
        cap = (spec.event_test or spec.max_test) if event else spec.max_test
        return idx[:cap] if cap else idx

    def _joins(self, spec: EngineSpec, experiment: str) -> bool:
        if experiment in spec.skip:
            self.skipped.append({"experiment": experiment, "engine": spec.display, "cell": "",
                                 "reason": "left out of this experiment to keep the run within its time budget"})
            return False
        return True

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 2)

    def _sample_k(self, k: Any, seed: int) -> np.ndarray:
        """k examples per category from the pool (all of a category when it has fewer).

        The k lowest-ranked records of each category under the seed's fixed ranks:
        samples are nested (k=5 holds k=3) and, for seed 0, inside an engine's
        capped pool, so an embedding engine embeds each example once.
        """
        if k == ALL:
            return self.pool
        labels = self.data.labels[self.pool]
        rank = self._priority(seed)[self.pool]
        chosen: list[int] = []
        for c in sorted(set(labels.tolist())):
            mask = labels == c
            members = self.pool[mask]
            chosen.extend(members[np.argsort(rank[mask], kind="stable")[: int(k)]].tolist())
        return np.array(sorted(chosen), dtype=int)

    # ----- 1. learning curve -----------------------------------------------------------
    def learning_curve(self) -> dict[str, Any]:
        s = self.settings
        n_classes = len(set(self.data.labels[self.pool].tolist()))
        plan = []
        for spec in self.specs:
            for seed in range(min(s.seeds, spec.seeds or s.seeds)):
                for k in spec.ks or s.ks:
                    if k != ALL and k not in s.ks:
                        continue
                    plan.append((spec, seed, k))
        # Progress counts records fitted and scored, not cells: the cells with all examples take far longer than
        # k = 1, and an ETA by cells promised "30 s left" for ten minutes on 80,000 records.
        samples = [self._sample_k(k, seed) for _spec, seed, k in plan]
        weights = [min(len(idx), spec.max_train or len(idx)) + len(self.test) for (spec, _s, _k), idx in zip(plan, samples)]
        advance = self.progress("learning curve (records fitted and scored)", sum(weights))
        rows = []
        with self._timed("learning_curve"):
            cells: list[tuple[EngineSpec, int, Any, _Fitted | None, int]] = []
            for (spec, seed, k), idx, weight in zip(plan, samples, weights):
                capped = False
                if k != ALL and len(idx) == len(self.pool):
                    # k is at least the largest category: the same training set as "all".
                    if seed == 0:
                        self.skipped.append({"experiment": "learning_curve", "engine": spec.display, "cell": f"k={k}",
                                             "reason": "k is at least the size of the largest category, so it equals 'all'"})
                    cells.append((spec, seed, k, None, weight))
                    continue
                if k == ALL and seed > 0 and not (spec.max_train and len(idx) > spec.max_train):
                    cells.append((spec, seed, k, None, weight))  # every seed trains on the same full pool: one run says it all
                    continue
                if spec.max_train and len(idx) > spec.max_train:
                    if k != ALL:
                        self.skipped.append({
                            "experiment": "learning_curve", "engine": spec.display, "cell": f"k={k} seed={seed}",
                            "reason": f"{len(idx)} training examples exceed this engine's cap of {spec.max_train}",
                        })
                        cells.append((spec, seed, k, None, weight))
                        continue
                    idx, capped = self._cap(idx, spec.max_train, seed)
                fitted = self._fit(spec, idx, seed=seed, capped=capped)
                self._ahead(fitted, self._test_for(spec, self.test), "learning_curve", seed=seed, k=str(k))
                cells.append((spec, seed, k, fitted, weight))
            for spec, seed, k, fitted, weight in cells:
                if fitted is not None:
                    rows.append(self._evaluate(fitted, self._test_for(spec, self.test), "learning_curve", seed=seed, k=str(k)))
                advance(weight)
        # Aggregate per engine and k over seeds.
        curves: dict[str, list[dict[str, Any]]] = {}
        for spec in self.specs:
            points = []
            for k in s.ks:
                runs = [r for r in rows if r.engine == spec.display and r.meta["k"] == str(k)]
                if not runs:
                    continue
                acc = [r.metrics()["accuracy"] for r in runs]
                f1 = [r.metrics()["macro_f1"] for r in runs]
                points.append({
                    "k": str(k), "k_value": _k_value(k, self.pool, self.data), "seeds": len(runs),
                    "accuracy": float(np.mean(acc)), "accuracy_std": float(np.std(acc)),
                    "macro_f1": float(np.mean(f1)), "macro_f1_std": float(np.std(f1)),
                    "n_train": float(np.mean([r.meta["n_train"] for r in runs])), "n_test": runs[0].n,
                    "train_seconds": float(np.mean([r.meta["train_seconds"] for r in runs])),
                    "run_ids": [r.run_id for r in runs],
                })
            curves[spec.display] = points
        return {
            "ks": [str(k) for k in s.ks], "n_classes": n_classes, "pool": int(len(self.pool)), "test": int(len(self.test)),
            "curves": curves, "crossover": self._crossovers(rows),
        }

    def _crossovers(self, rows: list[EvalRun]) -> list[dict[str, Any]]:
        """Smallest k from which a trained engine stays at or above a retrieval engine, on their common records."""
        out = []
        trained = [s for s in self.specs if s.family == "trained"]
        retrieval = [s for s in self.specs if s.family == "retrieval"]
        for t in trained:
            for r in retrieval:
                by_k = []
                for k in self.settings.ks:
                    rt = [x for x in rows if x.engine == t.display and x.meta["k"] == str(k)]
                    rr = [x for x in rows if x.engine == r.display and x.meta["k"] == str(k)]
                    seeds = sorted({x.meta["seed"] for x in rt} & {x.meta["seed"] for x in rr})
                    if not seeds:
                        continue
                    n = min(min(x.n for x in rt), min(x.n for x in rr))
                    at = float(np.mean([x.head(n).metrics()["accuracy"] for x in rt if x.meta["seed"] in seeds]))
                    ar = float(np.mean([x.head(n).metrics()["accuracy"] for x in rr if x.meta["seed"] in seeds]))
                    by_k.append({"k": str(k), "trained": at, "retrieval": ar, "n": n})
                crossover = None
                for i, p in enumerate(by_k):
                    if all(q["trained"] >= q["retrieval"] for q in by_k[i:]):
                        crossover = p["k"]
                        break
                out.append({"trained": t.display, "retrieval": r.display, "crossover_k": crossover, "points": by_k})
        return out

    # ----- 2. backtest -----------------------------------------------------------------
    def backtest(self) -> dict[str, Any] | None:
        d, s = self.data, self.settings
        if not d.dated:
            self.skipped.append({"experiment": "backtest", "engine": "all", "cell": "",
                                 "reason": "the data has no dates (no 'date' or 'month' column), so there is no time order to test on"})
            return None
        later = sorted({int(m) for m in d.months.tolist() if m > s.train_end_month})
        if not later:
            self.skipped.append({"experiment": "backtest", "engine": "all", "cell": "",
                                 "reason": f"no records after month {s.train_end_month}; nothing to test on"})
            return None
        rng = np.random.default_rng([s.split_seed, 13])
        month_sample: dict[int, np.ndarray] = {}
        for mth in later:
            members = np.flatnonzero(d.months == mth)
            month_sample[mth] = members[rng.permutation(len(members))][: s.backtest_per_month]
        held_out = np.concatenate([self.test] + list(month_sample.values()))
        excluded = np.zeros(len(d), dtype=bool)
        excluded[held_out] = True
        specs = [spec for spec in self.specs if self._joins(spec, "backtest")]
        plan = sum(len(later) * len(spec.policies) + 1 for spec in specs)
        advance = self.progress("backtest by month", plan)
        engines_out: dict[str, Any] = {}
        with self._timed("backtest"):
            plans = []  # the fits known in advance start now: the base model and each monthly retrain
            for spec in specs:
                plan = [(self._pool_fit(spec), self._test_for(spec, self.test),
                         {"policy": "reference", "month": "<=%d" % s.train_end_month})]
                if "monthly" in spec.policies:
                    plan += [(self._retrain(spec, mth, excluded), month_sample[following][: spec.month_test or spec.max_test or None],
                              {"policy": "monthly", "month": following}) for mth, following in zip(later, later[1:])]
                plans.append(plan)
            self._ahead_in_turn(plans, "backtest")
            warm = [spec.display for spec in specs if self._retrains_warm(spec)]
            if warm:
                self.notes.append(f"{', '.join(warm)}: each monthly retrain starts from last month's model (a warm start), "
                                  "as a team retraining it would; the retrains' training times are those of warm-started fits.")
            for spec in specs:
                model0 = self._pool_fit(spec)
                ref_run = self._evaluate(model0, self._test_for(spec, self.test), "backtest", policy="reference", month="<=%d" % s.train_end_month)
                advance(1)
                policies: dict[str, Any] = {}
                for policy in spec.policies:
                    model, reference = model0, ref_run.metrics()["mean_confidence"]
                    months, retrains = [], []
                    for i, mth in enumerate(later):
                        idx = month_sample[mth][: spec.month_test or spec.max_test or None]
                        run = self._evaluate(model, idx, "backtest", policy=policy, month=mth)
                        mm = run.metrics()
                        drift = reference - mm["mean_confidence"]
                        months.append({"month": mth, "accuracy": mm["accuracy"], "macro_f1": mm["macro_f1"],
                                       "mean_confidence": mm["mean_confidence"], "drift": drift, "model_id": model.model_id,
                                       "run_id": run.run_id, "n": run.n})
                        advance(1)
                        last = i == len(later) - 1
                        if last or policy == "never" or (policy == "drift" and drift <= s.drift_threshold):
                            continue
                        model = self._retrain(spec, mth, excluded)
                        # The new model's reference confidence: this month's sample, which it did not train on.
                        # (Evaluated before its train_seconds is read: a resumed run restores both without a fit.)
                        reference = self._evaluate(model, idx, "backtest", policy=f"{policy}-reference", month=mth).metrics()["mean_confidence"]
                        retrains.append({"after_month": mth, "train_seconds": model.train_seconds, "n_train": model.n_train,
                                         "drift": drift})
                    acc = [x["accuracy"] for x in months]
                    policies[policy] = {
                        "months": months, "retrains": retrains, "n_retrains": len(retrains),
                        "mean_accuracy": float(np.mean(acc)), "final_accuracy": acc[-1],
                        "train_seconds": float(sum(r["train_seconds"] for r in retrains)),
                        "run_ids": [x["run_id"] for x in months],
                    }
                for pol in policies.values():
                    pol["n"] = int(sum(x["n"] for x in pol["months"]))
                engines_out[spec.display] = {
                    "reference_accuracy": ref_run.metrics()["accuracy"], "reference_run_id": ref_run.run_id, "reference_n": ref_run.n,
                    "reference_confidence": ref_run.metrics()["mean_confidence"], "policies": policies,
                    "family": spec.family,
                }
        return {"train_months": [int(d.months.min()), s.train_end_month], "months": later,
                "per_month": {str(k): int(len(v)) for k, v in month_sample.items()},
                "drift_threshold": s.drift_threshold, "engines": engines_out}

    def _retrain(self, spec: EngineSpec, month: int, excluded: np.ndarray) -> _Fitted:
        """The backtest's retrain after `month`: its labels arrive at its end, so on everything labelled so far.

        An engine that learns by adding (knn) is not refitted: the month's records are added to last
        month's model, as its users would keep it current. One that warm-starts (head) and is retrained
        monthly refits from last month's weights; the drift policy's retrains are the monthly ones of
        their month (without "monthly", cold fits, so a drift retrain never needs every month before it).
        """
        warm = self._retrains_warm(spec)
        if self._adds(spec) or warm:
            if month - 1 > self.settings.train_end_month:
                previous = self._retrain(spec, month - 1, excluded)
            else:  # the backtest's base model
                previous = self._pool_fit(spec)
        if self._adds(spec):
            return self._added(spec, previous, np.flatnonzero((self.data.months == month) & ~excluded), taxonomy=self._taxonomy_at(month))
        hist = np.flatnonzero((self.data.months <= month) & ~excluded)
        hist_idx, capped = self._cap(hist, spec.max_train, 0)
        return self._fit(spec, hist_idx, taxonomy=self._taxonomy_at(month), seed=month, capped=capped,
                         init=previous if warm else None)

    @staticmethod
    def _warm_starts(spec: EngineSpec) -> bool:
        """Whether `spec`'s engine refits from the model before (`Engine.warm_starts`)."""
        return bool(getattr(spec.engine_class, "warm_starts", False))

    def _retrains_warm(self, spec: EngineSpec) -> bool:
        """Whether the backtest's retrains of `spec` chain, each from last month's model (only when monthly)."""
        return self._warm_starts(spec) and "monthly" in spec.policies

    @staticmethod
    def _adds(spec: EngineSpec) -> bool:
        """Whether `spec`'s engine takes new examples by adding them (uncapped only: a cap resamples each fit)."""
        return bool(getattr(spec.engine_class, "learns_by_adding", False)) and spec.max_train is None

    def _added(self, spec: EngineSpec, base: _Fitted, idx: np.ndarray, *, taxonomy: Taxonomy | None) -> _Fitted:
        """`base`'s model with the records `idx` added (`Engine.updated`): seconds, where a refit takes minutes."""
        key = (spec.display, _key(idx, "added-to", base.key, getattr(taxonomy, "version_id", None)))
        if key in self._fits:
            return self._fits[key]

        def update() -> tuple[Engine, float]:
            engine = base.engine
            current = getattr(engine, "taxonomy_version_", None)
            new_taxonomy = None
            if taxonomy is not None and taxonomy.version_id != current:
                new_taxonomy = self._taxonomy_path(taxonomy)
            updated = engine.updated(self.data.texts[idx].tolist(), self.data.labels[idx].tolist(), taxonomy=new_taxonomy)
            return updated, float(updated.train_seconds_)

        if taxonomy is not None:
            self._taxonomy_path(taxonomy)
        fitted = _Fitted(spec, base.n_train + len(idx), False, _key(np.zeros(0), key, sorted(spec.to_dict().items(), key=str)),
                         update, ahead=False)  # seconds, and it needs `base` first: made when needed, on this thread
        self._fits[key] = fitted
        return fitted

    def _taxonomy_at(self, month: int) -> Taxonomy | None:
        """The taxonomy in force at the end of `month`: new categories count once their records exist."""
        d = self.data
        if not self.new_codes:
            return self.base_taxonomy
        seen = set(d.labels[d.months <= month].tolist())
        if any(c in seen for c in self.new_codes):
            return self.taxonomy
        return self.base_taxonomy

    # ----- 3. taxonomy events ----------------------------------------------------------
    def taxonomy_events(self, lc: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        with self._timed("events_new_category"):
            out["new_category"] = self._new_category()
        with self._timed("events_merge"):
            out["merge"] = self._merge()
        with self._timed("events_network"):
            out["network"] = self._network()
        return out

    def _new_category(self) -> dict[str, Any] | None:
        d, s = self.data, self.settings
        if not d.dated:
            self.skipped.append({"experiment": "new_category", "engine": "all", "cell": "",
                                 "reason": "the data has no dates, so no category appears part-way through; replay needs a category first seen after the training period"})
            return None
        if not self.new_codes and s.new_category is None:
            self.skipped.append({"experiment": "new_category", "engine": "all", "cell": "",
                                 "reason": f"no category first appears after month {s.train_end_month}; nothing to replay (choose one with --new-category CODE)"})
            return None
        counts = {c: int((d.labels == c).sum()) for c in self.new_codes}
        if s.new_category is not None:
            if s.new_category not in set(d.labels.tolist()):
                raise ExperimentError(f"--new-category {s.new_category}: no record has that category "
                                      f"(categories first seen after month {s.train_end_month}: {', '.join(self.new_codes) or 'none'})")
            code = s.new_category
        else:
            # The category that best stands for "a new category arrives": the one with the most records to replay.
            code = max(self.new_codes, key=lambda c: (counts[c], c))
        members = np.flatnonzero(d.labels == code)
        start = int(d.months[members].min())
        members = members[np.lexsort((members, d.months[members]))]
        max_k = max(s.new_category_ks)
        if len(members) <= max_k + 5:
            self.skipped.append({"experiment": "new_category", "engine": "all", "cell": code,
                                 "reason": f"only {len(members)} records of {code}; need more than {max_k + 5}"
                                 + (f" (new categories: {', '.join(f'{c} {n}' for c, n in sorted(counts.items()))})" if counts else "")})
            return None
        intro = members[:max_k]
        rng = np.random.default_rng([s.split_seed, 19])
        eval_new = members[max_k:]
        eval_new = eval_new[rng.permutation(len(eval_new))][: s.new_category_eval]
        after = np.flatnonzero((d.months >= start) & ~np.isin(np.arange(len(d)), intro))
        eval_general = after[rng.permutation(len(after))][: s.general_eval]
        hist = np.flatnonzero(d.months < start)
        specs = [spec for spec in self.specs if self._joins(spec, "new_category")]
        plan = sum(1 + len(spec.event_ks or s.new_category_ks) for spec in specs)
        advance = self.progress(f"new category {code}", plan)
        engines_out = {}

        def fit_at(spec: EngineSpec, k: int) -> _Fitted:
            base_idx, capped = self._cap(hist, spec.max_train, 0)
            if k == 0:
                return self._fit(spec, base_idx, taxonomy=self.base_taxonomy, capped=capped)
            if self._adds(spec):  # knn: the k examples and the new definition are added, nothing refitted
                return self._added(spec, fit_at(spec, 0), intro[:k], taxonomy=self.taxonomy)
            return self._fit(spec, np.concatenate([base_idx, intro[:k]]), taxonomy=self.taxonomy, capped=capped,
                             init=fit_at(spec, 0))  # head: from the model without the category

        self._ahead_in_turn([[(fit_at(spec, k), self._test_for(spec, eval_new, event=True), {"k": k, "part": "new", "category": code})
                              for k in (0, *(spec.event_ks or s.new_category_ks))] for spec in specs], "new_category")
        warm = [spec.display for spec in specs if self._warm_starts(spec) and not self._adds(spec)]
        if warm:
            self.notes.append(f"{', '.join(warm)}: the new-category replay's refits start from the model without the "
                              "category (a warm start); their update times are those of warm-started fits.")
        for spec in specs:
            points = []
            for k in (0, *(spec.event_ks or s.new_category_ks)):
                fitted = fit_at(spec, k)
                r_new = self._evaluate(fitted, self._test_for(spec, eval_new, event=True), "new_category", k=k, part="new", category=code)
                r_all = self._evaluate(fitted, self._test_for(spec, eval_general, event=True), "new_category", k=k, part="all", category=code)
                points.append({
                    "k": k, "recall_new": r_new.metrics()["accuracy"], "accuracy_all": r_all.metrics()["accuracy"],
                    "update_seconds": fitted.train_seconds, "n_train": fitted.n_train,
                    "run_new": r_new.run_id, "run_all": r_all.run_id, "n_new": r_new.n, "n_all": r_all.n,
                })
                advance(1)
            engines_out[spec.display] = {"family": spec.family, "points": points}
        return {"category": code, "name": self.taxonomy[code].name if self.taxonomy is not None and code in self.taxonomy else code,
                "first_month": start, "eval_new": int(len(eval_new)), "eval_all": int(len(eval_general)),
                "history": int(len(hist)), "engines": engines_out}

    def _merge(self) -> dict[str, Any] | None:
        ref = next((s for s in self.specs if s.family == "trained"), self.specs[0])
        runs = [r for r in self.log.select(experiment="learning_curve", engine=ref.display, k=ALL, seed=0)]
        if not runs:
            self.skipped.append({"experiment": "merge", "engine": "all", "cell": "", "reason": "the learning curve did not run with all examples"})
            return None
        run = runs[0]
        pairs: dict[tuple[str, str], int] = {}
        for t, p in zip(run.y_true.tolist(), run.y_pred.tolist()):
            if t != p and (self.base_taxonomy is None or (t in self.base_taxonomy and p in self.base_taxonomy)):
                key = tuple(sorted((t, p)))
                pairs[key] = pairs.get(key, 0) + 1
        if not pairs:
            self.skipped.append({"experiment": "merge", "engine": "all", "cell": "", "reason": "no two categories are confused; no natural merge"})
            return None
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if self.base_taxonomy is not None:
            change = self.base_taxonomy.merge([a, b], into=a, author="taxonomist compare", date="2000-01-01")
            relabel, merged_tax = dict(change.relabel), change.taxonomy
        else:
            relabel, merged_tax = {b: a}, None
        specs = [spec for spec in self.specs if self._joins(spec, "merge")]
        advance = self.progress(f"merge {a}+{b}", 2 * len(specs))
        engines_out = {}

        def refit_for(spec: EngineSpec) -> _Fitted:
            pool_idx, capped = self._cap(self.pool, spec.max_train, 0)
            return self._fit(spec, pool_idx, taxonomy=merged_tax, relabel=relabel, capped=capped)

        for spec in specs:
            if self.log.select(experiment="learning_curve", engine=spec.display, k=ALL, seed=0):
                self._ahead(refit_for(spec), self._test_for(spec, self.test, event=True), "merge", variant="refit", merge=f"{a}+{b}")
        for spec in specs:
            base = [r for r in self.log.select(experiment="learning_curve", engine=spec.display, k=ALL, seed=0)]
            if not base:
                advance(2)
                continue
            before = base[0]
            truth = np.array([relabel.get(y, y) for y in before.y_true.tolist()], dtype=object)
            mapped = self.log.record(
                experiment="merge", engine=spec.display, model_id=before.model_id, ids=before.ids, y_true=truth,
                y_pred=[relabel.get(y, y) for y in before.y_pred.tolist()], confidence=before.confidence,
                predict_seconds=0.0, meta={"variant": "mapped", "merge": f"{a}+{b}", "from_run": before.run_id},
            )
            advance(1)
            fitted = refit_for(spec)
            idx = self._test_for(spec, self.test, event=True)
            refit = self._evaluate(fitted, idx, "merge", truth=np.array([relabel.get(y, y) for y in self.data.labels[idx].tolist()], dtype=object),
                                   variant="refit", merge=f"{a}+{b}")
            advance(1)
            engines_out[spec.display] = {
                "family": spec.family,
                "before": before.metrics()["accuracy"], "mapped": mapped.metrics()["accuracy"], "refit": refit.metrics()["accuracy"],
                "refit_seconds": fitted.train_seconds, "n": before.n, "n_refit": refit.n, "run_before": before.run_id, "run_mapped": mapped.run_id, "run_refit": refit.run_id,
            }
        return {"sources": [a, b], "into": a, "confusions": count, "relabel": relabel, "engines": engines_out}

    def _network(self) -> dict[str, Any] | None:
        if self.second_network is None:
            self.skipped.append({"experiment": "network_import", "engine": "all", "cell": "",
                                 "reason": "no second network given (--network FILE --crosswalk FILE)"})
            return None
        other, crosswalk = self.second_network
        s = self.settings
        if self.taxonomy is not None:
            crosswalk.check(self.taxonomy)
        keep = np.array([y in crosswalk.mapping for y in other.labels.tolist()], dtype=bool)
        unmapped = int((~keep).sum())
        idx_all = np.flatnonzero(keep)
        rng = np.random.default_rng([s.split_seed, 23])
        idx_all = idx_all[rng.permutation(len(idx_all))]
        n_eval = min(s.network_eval, len(idx_all) // 2)
        eval_idx, hist_idx = idx_all[:n_eval], idx_all[n_eval:][: s.network_history]
        ours = np.array([crosswalk.mapping[y] for y in other.labels.tolist() if y in crosswalk.mapping], dtype=object)
        mapped_all = np.full(len(other), "", dtype=object)
        mapped_all[keep] = ours
        ids = np.array([f"{other.name}:{i}" for i in other.ids.tolist()], dtype=object)
        specs = [spec for spec in self.specs if self._joins(spec, "network_import")]
        advance = self.progress("second network via crosswalk", 2 * len(specs))
        engines_out = {}

        def with_history(spec: EngineSpec) -> tuple[_Fitted, np.ndarray]:
            pool_idx, capped = self._cap(self.pool, spec.max_train, 0)
            h = hist_idx[: max(0, spec.max_train // 2)] if spec.max_train else hist_idx
            return self._fit(spec, pool_idx, extra=(other.texts[h], mapped_all[h]), capped=capped), h

        for spec in specs:
            ev = self._test_for(spec, eval_idx, event=True)
            self._ahead(with_history(spec)[0], ev, "network_import", ids=ids[ev], variant="with_history")
        for spec in specs:
            ev = self._test_for(spec, eval_idx, event=True)
            fitted = self._pool_fit(spec)
            as_is = self._evaluate(fitted, ev, "network_import", truth=mapped_all[ev], ids=ids[ev], texts=other.texts[ev].tolist(), variant="as_is")
            advance(1)
            fitted2, h = with_history(spec)
            with_hist = self._evaluate(fitted2, ev, "network_import", truth=mapped_all[ev], ids=ids[ev], texts=other.texts[ev].tolist(), variant="with_history")
            advance(1)
            engines_out[spec.display] = {
                "family": spec.family, "as_is": as_is.metrics()["accuracy"], "with_history": with_hist.metrics()["accuracy"],
                "n_history": int(len(h)), "update_seconds": fitted2.train_seconds, "n": as_is.n,
                "run_as_is": as_is.run_id, "run_with_history": with_hist.run_id,
            }
        return {"network": other.name, "crosswalk": crosswalk.source, "their_codes": len(crosswalk.mapping),
                "merges": {k: v for k, v in crosswalk.merges.items()}, "unmapped_records": unmapped,
                "eval": int(n_eval), "history": int(len(hist_idx)), "engines": engines_out}

    # ----- 4. cost and speed -----------------------------------------------------------
    def cost_speed(self, prices: PriceTable, backtest: dict[str, Any] | None, *, llm_tokens: Mapping[str, Any] | None = None) -> dict[str, Any]:
        advance = self.progress("latency and throughput", len(self.specs))
        speed: dict[str, Any] = {}
        with self._timed("cost_speed"):
            for spec in self.specs:
                fitted = self._pool_fit(spec)
                speed[spec.display] = self._measure(fitted)
                advance(1)
        models: list[CostModel] = []
        full_pool = len(self.pool)
        for spec in self.specs:
            sp = speed[spec.display]
            fitted = self._pool_fit(spec)
            train_full = fitted.train_seconds * (full_pool / max(fitted.n_train, 1))
            if spec.family == "retrieval":
                retrains = 0.0
                cadence = "no retraining: new examples and categories are added to the index"
            else:
                retrains, cadence = self._retrain_cadence(spec, backtest, prices)
            cm = CostModel.self_hosted(
                f"{spec.display} (self-hosted)", prices=prices, seconds_per_item=1.0 / max(sp["throughput_per_s"], 1e-9),
                train_seconds=train_full, retrains_per_month=retrains, gpu=spec.gpu,
            )
            cm = replace(cm, notes=(*cm.notes, cadence, f"training at full volume ≈ {train_full:.1f} s"))
            models.append(cm)
            sp["cost_per_1000"] = cm.per_item * 1000
            sp["train_seconds_full"] = train_full
            sp["retrain_compute_usd"] = prices.train_cost(train_full, gpu=spec.gpu)
            sp["monthly_cost"] = cm.monthly(self.settings.volume)
        tokens = dict(llm_tokens or {}) or self._estimated_prompt_tokens()
        api = CostModel.hosted_llm(
            f"hosted LLM RAG ({prices.llm_model})", prices=prices, input_tokens=tokens["input"], output_tokens=tokens["output"],
            cached_tokens=tokens.get("cached", 0.0),
        )
        api = replace(api, notes=(*api.notes, "tokens " + ("measured" if llm_tokens else "estimated at 4 characters a token")))
        models.append(api)
        pairs = []
        for a in models:
            for b in models:
                if a.approach >= b.approach:
                    continue
                v = break_even_volume(a, b)
                if v is None:
                    continue
                cheaper_above = a.approach if a.per_item < b.per_item else b.approach
                pairs.append({"a": a.approach, "b": b.approach, "volume": v, "cheaper_above": cheaper_above})
        return {"speed": speed, "cost_models": [m.to_dict() for m in models], "break_even": pairs,
                "llm_tokens": {**tokens, "measured": bool(llm_tokens)}, "prices": prices.to_dict()}

    def _measure(self, fitted: _Fitted) -> dict[str, Any]:
        s, spec = self.settings, fitted.spec
        n_lat = s.latency_items if spec.max_test is None else min(s.latency_items, max(1, spec.max_test // 10))
        n_tp = s.throughput_items if spec.max_test is None else min(s.throughput_items, max(2, spec.max_test // 5))
        base = self.data.texts[self.test].tolist() or self.data.texts.tolist()
        # A unique suffix defeats embedding and response caches: we time real work.
        fresh = [f"{base[i % len(base)]} (timing {spec.name} {i})" for i in range(n_lat + n_tp)]
        lat = []
        for t in fresh[:n_lat]:
            start = time.perf_counter()
            fitted.engine.predict_one(t)
            lat.append((time.perf_counter() - start) * 1000)
        lc = self.log.select(experiment="learning_curve", engine=spec.display, k=ALL, seed=0)
        timed_run = None  # the run whose prediction time is the throughput, when it is not timed here
        if spec.max_test is not None and spec.max_test <= 20 and lc and lc[0].predict_seconds > 0:
            # A slow engine on a small sample: its learning-curve run (first-time prompts, no cache) is the batch timing.
            n_tp, seconds, timed_run = lc[0].n, lc[0].predict_seconds, lc[0].run_id
        else:
            start = time.perf_counter()
            for i in range(n_lat, n_lat + n_tp, max(1, spec.batch_size)):
                fitted.engine.predict_proba(fresh[i : min(i + spec.batch_size, n_lat + n_tp)])
            seconds = time.perf_counter() - start
        return {
            "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
            "latency_items": n_lat, "throughput_per_s": n_tp / max(seconds, 1e-9), "throughput_items": n_tp,
            "throughput_run": timed_run, "train_seconds": fitted.train_seconds, "n_train": fitted.n_train,
        }

    def _retrain_cadence(self, spec: EngineSpec, backtest: dict[str, Any] | None, prices: PriceTable) -> tuple[float, str]:
        changes = prices.taxonomy_changes_per_year / 12.0
        if backtest and spec.display in backtest["engines"]:
            pol = backtest["engines"][spec.display]["policies"]
            chosen = choose_policy(pol)
            if chosen:
                n_months = len(backtest["months"])
                r = pol[chosen]["n_retrains"] / max(n_months, 1)
                return r + changes, f"retraining '{chosen}' policy from the backtest ({pol[chosen]['n_retrains']} in {n_months} months) + {prices.taxonomy_changes_per_year:g} taxonomy changes a year"
        return 1.0 + changes, f"assumed monthly retraining (no backtest) + {prices.taxonomy_changes_per_year:g} taxonomy changes a year"

    def _estimated_prompt_tokens(self) -> dict[str, float]:
        if self.taxonomy is not None:
            definitions = sum(len(c.describe()) for c in self.taxonomy.active_categories)
        else:
            definitions = sum(len(c) + 20 for c in set(self.data.labels.tolist()))
        mean_text = float(np.mean([len(t) for t in self.data.texts[: 2000].tolist()]))
        prefix = definitions / 4.0 + 150.0
        examples = 10 * mean_text / 4.0
        return {"input": prefix + examples + mean_text / 4.0, "cached": prefix, "output": 12.0}

    def _stratified(self, idx: np.ndarray, n: int) -> np.ndarray:
        """Exactly min(n, len(idx)) records of `idx`, each category's share by largest remainder (every category
        gets one first when n allows), lowest fixed rank first; returned in rank order."""
        labels = self.data.labels[idx]
        rank = self._priority(0)[idx]
        n = min(int(n), len(idx))
        cats = sorted(set(labels.tolist()))
        members = {c: idx[labels == c][np.argsort(rank[labels == c], kind="stable")] for c in cats}
        quota = {c: len(members[c]) * n / len(idx) for c in cats}
        take = {c: min(len(members[c]), int(quota[c])) for c in cats}
        if n >= len(cats):
            take = {c: max(1, t) for c, t in take.items()}
        order = sorted(cats, key=lambda c: (-(quota[c] - int(quota[c])), c))
        while sum(take.values()) < n:
            grew = False
            for c in order:
                if sum(take.values()) < n and take[c] < len(members[c]):
                    take[c] += 1
                    grew = True
            if not grew:
                break
        while sum(take.values()) > n:  # the one-per-category floor overshot: trim the largest
            c = max(cats, key=lambda c: (take[c], c))
            take[c] -= 1
        chosen = np.concatenate([members[c][: take[c]] for c in cats]) if cats else idx[:0]
        return chosen[np.argsort(self._priority(0)[chosen], kind="stable")]

    # ----- a real LLM endpoint, measured ------------------------------------------------
    def measure_endpoint(self, spec: EngineSpec, prices: PriceTable) -> dict[str, Any]:
        """One LLM endpoint (any OpenAI-compatible server) answers a stratified sample of the test set.

        The sample is the same share of every category (`_cap` of the test set to `spec.max_test`, at least one
        record a category); the engine retrieves its examples from the training pool (capped by `spec.max_train`).
        Measured: accuracy (with its Wilson interval, in the report), coverage, latency per record, tokens and
        their cost from the project's price table (the engine's ledger prices its calls from it).
        """
        sample = self._stratified(self.test, spec.max_test or 40)
        advance = self.progress(f"measuring {spec.display} on {len(sample)} records", 1)
        with self._timed("llm_endpoint"):
            fitted = self._pool_fit(spec)
            engine = fitted.engine
            ledger = getattr(engine, "ledger_", None)
            before = ledger.to_dict() if ledger is not None else {}
            texts = self.data.texts[sample].tolist()
            start = time.perf_counter()
            preds = engine.predict_batch(texts, top_k=1, evidence=False)
            seconds = time.perf_counter() - start
            run = self.log.record(
                experiment="llm_endpoint", engine=spec.display, model_id=fitted.model_id, ids=self.data.ids[sample],
                y_true=self.data.labels[sample], y_pred=[p.category for p in preds], confidence=[p.confidence for p in preds],
                predict_seconds=seconds, meta={"n_train": fitted.n_train, "train_capped": fitted.capped, "stratified": True},
            )
            ledger = getattr(engine, "ledger_", None)  # made by the first call
            after = ledger.to_dict() if ledger is not None else {}
        advance(1)
        calls = max(int(after.get("calls", 0)) - int(before.get("calls", 0)), 0)

        def spent(key: str) -> float:
            return float(after.get(key, 0) or 0) - float(before.get(key, 0) or 0)

        latency = [p.latency_ms for p in preds if p.latency_ms]
        m = run.metrics()
        tokens = {"input": spent("prompt_tokens") / max(calls, 1), "cached": spent("cached_tokens") / max(calls, 1),
                  "output": spent("completion_tokens") / max(calls, 1)}
        cost = spent("cost_usd")
        cost_source = "the price table's models: entry (engine ledger)"
        if cost == 0 and calls:
            # The ledger prices only models named in the table; an unlisted one is priced at the hosted-LLM rates.
            cost = calls * prices.llm_cost(tokens["input"], tokens["output"], tokens["cached"])
            cost_source = f"not under models: in the price table; priced at llm_api rates ({prices.llm_model})"
        return {
            "engine": spec.display, "params": {k: v for k, v in spec.params.items() if k != "api_key"},
            "run_id": run.run_id, "n": run.n, "categories": int(len(set(self.data.labels[sample].tolist()))),
            "accuracy": m["accuracy"], "coverage": m["coverage"], "answered_accuracy": m["answered_accuracy"],
            "calls": calls, "cache_hits": int(spent("cache_hits")), "tokens_per_call": tokens,
            "latency_p50_ms": float(np.percentile(latency, 50)) if latency else None,
            "latency_p95_ms": float(np.percentile(latency, 95)) if latency else None,
            "seconds": seconds, "cost_usd": cost, "cost_per_1000": 1000 * cost / max(run.n, 1),
            "monthly_cost": cost / max(run.n, 1) * self.settings.volume,
            "cost_source": cost_source,
        }

    # ----- the combination ------------------------------------------------------------
    def cascade(self) -> list[dict[str, Any]]:
        """Cheap first, expensive when unsure: every `cascade` engine of the comparison, for each target accuracy.

        The cascade fitted with all examples (the learning curve's k=all, seed 0) runs each of its stages on the
        test records once; at each target it routes them with the thresholds its search chooses on its
        cross-fitted records, and each stage alone, as a single engine, answers what clears its own threshold for
        that target (the same search, one stage). Reported on the same records: the share each stage answers,
        the share left to people, accuracy on answered records and cost per 1,000 records.
        """
        from ..engines.cascade import search_thresholds

        out = []
        for spec in (s for s in self.specs if s.name == "cascade"):
            idx, capped = self._cap(self.pool, spec.max_train, 0) if spec.max_train else (self.pool, False)
            fitted = self._fit(spec, idx, seed=0, capped=capped)
            engine = fitted.engine
            test = self._test_for(spec, self.test)
            truth = self.data.labels[test]
            outputs = engine.stage_outputs(self.data.texts[test].tolist())
            oof = engine.oof_
            names = list(engine.stage_names_)
            rows = []
            for target in self.settings.cascade_targets:
                plan = engine.plan_at(target)
                routed = engine.routed_at(outputs, plan.thresholds)
                answered = routed["stage"] >= 0
                row: dict[str, Any] = {
                    "target": target, "n": int(len(test)), "feasible": plan.feasible,
                    "stage_shares": {nm: float((routed["stage"] == s).mean()) for s, nm in enumerate(names)},
                    "to_people": float((~answered).mean()),
                    "answered_accuracy": float((routed["category"][answered] == truth[answered]).mean()) if answered.any() else None,
                    "cost_per_1000": float(routed["cost"].mean() * 1000),
                    "singles": {},
                }
                for s, nm in enumerate(names):
                    alone = search_thresholds([oof["confidence"][s]], [oof["correct"][s]], [oof["costs"][s]],
                                              target_accuracy=target, z=oof["z"], defer=True)
                    take = outputs[s]["confidence"] >= alone.thresholds[0]
                    row["singles"][nm] = {
                        "coverage": float(take.mean()),
                        "answered_accuracy": float((outputs[s]["category"][take] == truth[take]).mean()) if take.any() else None,
                        "cost_per_1000": float(outputs[s]["cost"].mean() * 1000),
                    }
                rows.append(row)
            out.append({"engine": spec.display, "stages": names, "model_id": fitted.model_id, "n_train": fitted.n_train,
                        "targets": rows})
        return out


def choose_policy(policies: Mapping[str, Any], tolerance: float = 0.01) -> str | None:
    """The cheapest policy (fewest retrains) whose mean accuracy is within `tolerance` of the best."""
    if not policies:
        return None
    best = max(p["mean_accuracy"] for p in policies.values())
    ok = [(p["n_retrains"], name) for name, p in policies.items() if p["mean_accuracy"] >= best - tolerance]
    return min(ok)[1]


def _model_id(engine: Engine, spec: EngineSpec) -> str:
    try:
        return engine.model_id
    except Exception:  # an engine whose manifest cannot be built still gets a stable id
        return f"{spec.name}-{getattr(engine, 'training_data_hash_', '')[-10:]}"


def _k_value(k: Any, pool: np.ndarray, data: Dataset) -> float:
    if k == ALL:
        labels = data.labels[pool]
        return float(len(labels)) / max(len(set(labels.tolist())), 1)
    return float(k)
