"""The engine contract every classifier follows (scikit-learn estimator style).

An engine is constructed with keyword-only parameters that `__init__` stores
unchanged; `fit(texts, labels)` learns attributes ending in `_` and returns
self; `predict_proba` has one column per entry of `classes_`. `save(dir)` writes
weights plus `manifest.json` (never a pickle of the whole object) and
`load_engine(dir)` rebuilds it, after checking the SHA-256 of every weight file
and the model id the manifest records (a tampered directory is refused).

`predict_batch` is the one decision path: it turns calibrated probabilities into
`Prediction`s through `taxonomist.decision.decide` (threshold, taxonomy-version
mapping, reasons). `predict`, `predict_one`, the CLI, compare and the API all
call it.

An engine's identity lives on its class (`name`, `family`, `label`, `extra`,
`cost_kind`, `budget_kind`, `test_params`); engines register with
`@register_engine` and are found through the `taxonomist.engines` entry-point
group, so another package can add one. The shared contract tests run every
registered engine with its `test_params`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import importlib.metadata
import json
import platform
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import EngineError, NotFittedError
from ..prediction import Prediction

__all__ = [
    "Engine",
    "Manifest",
    "ENGINES",
    "register_engine",
    "create_engine",
    "load_engine",
    "data_hash",
    "library_versions",
    "engine_classes",
    "FAMILIES",
]

MANIFEST = "manifest.json"
ENGINES: dict[str, type[Engine]] = {}
#: What an engine is, for the report and the cascade: answers from retrieved examples,
#: from weights trained on the data, from a prompted general model, or a combination.
FAMILIES = ("retrieval", "fine-tuned", "prompted", "combined")
ENTRY_POINT_GROUP = "taxonomist.engines"


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available by its `name` (CLI, benchmarks, contract tests)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.family not in FAMILIES:
        raise TypeError(f"{cls.__name__}.family is {cls.family!r}; expected one of {', '.join(FAMILIES)}")
    ENGINES[cls.name] = cls
    return cls


@functools.cache
def _ensure_registered() -> None:
    """Import every engine: ours, then any other package's `taxonomist.engines` entry points.

    Engine modules import their heavy dependencies lazily, so this stays cheap.
    """
    from . import _registry  # noqa: F401  (ours, also when running from a source tree)

    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in ENGINES:
            continue
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in engines down
            import warnings

            warnings.warn(f"engine plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        if isinstance(loaded, type) and issubclass(loaded, Engine) and loaded.name not in ENGINES:
            register_engine(loaded)


def engine_classes() -> dict[str, type[Engine]]:
    """Every registered engine class by name (built-in and plugins), sorted by name."""
    _ensure_registered()
    return dict(sorted(ENGINES.items()))


def create_engine(name: str, **params: Any) -> Engine:
    _ensure_registered()
    try:
        cls = ENGINES[name]
    except KeyError:
        raise EngineError(f"unknown engine '{name}' (known: {', '.join(sorted(ENGINES))})") from None
    return cls(**params)


def data_hash(texts: Sequence[str], labels: Sequence[str]) -> str:
    """Order-sensitive hash of training data, recorded in the manifest for lineage."""
    h = hashlib.sha256()
    for t, y in zip(texts, labels):
        h.update(str(t).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(str(y).encode("utf-8"))
        h.update(b"\x1e")
    return "sha256:" + h.hexdigest()[:16]


@functools.cache
def _param_names(cls: type) -> tuple[str, ...]:
    """An engine class's parameter names (sklearn reads its `__init__` signature each time it is asked)."""
    return tuple(cls._get_param_names())


def library_versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in ("taxonomist", "numpy", "scikit-learn", *names):
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class Manifest:
    """What a saved model is: enough to reproduce and audit it, read without the weights."""

    engine: str
    params: dict[str, Any]
    classes: list[str]
    base_model: str = ""
    taxonomy_version: str = ""
    training_data_hash: str = ""
    n_train: int = 0
    train_seconds: float = 0.0
    library_versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: SHA-256 of every weight file, by path relative to the model directory (covered by the model id).
    files: dict[str, str] = field(default_factory=dict)
    #: The id the model had when saved; `read` refuses a manifest whose content no longer gives it.
    id: str = ""

    def write(self, directory: Path) -> None:
        data = asdict(self)
        data["id"] = self.model_id
        # Written last and atomically: a directory with a manifest is a whole model (an interrupted save has none).
        tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, directory / MANIFEST)

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise EngineError(f"'{directory}' is not a saved model: {MANIFEST} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EngineError(f"'{path}' is not valid JSON ({type(exc).__name__}); the model directory is damaged: save the model again") from None
        if not isinstance(data, dict) or not data.get("engine"):
            raise EngineError(f"'{path}' is not a model manifest (no 'engine'); save the model again")
        known = {f for f in cls.__dataclass_fields__}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise EngineError(f"'{path}' is not a model manifest ({exc}); save the model again") from None
        if manifest.id and manifest.id != manifest.model_id:
            raise EngineError(
                f"'{path}' was edited after the model was saved (its content gives id {manifest.model_id}, "
                f"it says {manifest.id}); restore the directory or train the model again"
            )
        return manifest

    @property
    def model_id(self) -> str:
        """Content hash: engine, parameters, classes, taxonomy version, training data, calibration, weight files."""
        key = json.dumps(
            [self.engine, self.params, self.training_data_hash, self.taxonomy_version, self.classes,
             self.extra.get("calibration"), self.files],
            sort_keys=True, default=str,
        )
        return f"{self.engine}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def verify_files(self, directory: Path) -> None:
        """Refuse a model directory whose weight files differ from the digests recorded at save time."""
        for rel, digest in sorted(self.files.items()):
            path = directory / rel
            if not path.is_file():
                raise EngineError(f"'{directory}' is missing {rel}; the model directory is incomplete: save the model again")
            if _sha256(path) != digest:
                raise EngineError(
                    f"'{path}' was changed after the model was saved (SHA-256 differs from the manifest); "
                    "restore the directory or train the model again"
                )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): _sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p != directory / MANIFEST
    }


class Engine(ClassifierMixin, BaseEstimator):
    """Base of all engines. Subclasses implement `_fit`, `_predict_proba`, `_save_weights`, `_load_weights`.

    Subclass `__init__` must take keyword-only parameters and store them unchanged
    (sklearn's `get_params`/`clone` rely on it). Common parameters, when a
    subclass declares them: `threshold` (abstain below this calibrated
    confidence), `taxonomy` (path or Taxonomy used for definitions/examples).
    """

    name: ClassVar[str] = ""
    #: One of FAMILIES: how the engine answers (the report groups engines by it).
    family: ClassVar[str] = "fine-tuned"
    #: How reports and help name it, e.g. "knn (MiniLM retrieval)".
    label: ClassVar[str] = ""
    #: Extra whose absence makes this engine unusable (checked before fit).
    extra: ClassVar[str | None] = None
    #: What a prediction costs: "cpu" (seconds on the serving machine) or "tokens" (a priced LLM call).
    cost_kind: ClassVar[str] = "cpu"
    #: Which data caps a comparison budget applies: "fast" (none), "embed", "finetune" or "llm".
    budget_kind: ClassVar[str] = "fast"
    #: Parameters that keep the engine quick on 2 CPU cores: the contract suite and smoke tests use them.
    test_params: ClassVar[dict[str, Any]] = {}
    #: Refitting takes seconds (no network to train): `train --target-accuracy` then calibrates on
    #: out-of-fold predictions of every record (5 extra fits) instead of a 10% hold-out.
    cheap_to_refit: ClassVar[bool] = False
    #: The demo's caps for this engine (`compare.EngineSpec` fields): what is left out runs in full.
    demo_caps: ClassVar[dict[str, Any]] = {}
    #: New examples are added to the fitted engine, not learnt by a refit (`updated`): how its users keep it
    #: current, so a comparison's monthly "retrain" and new-category replay add examples instead of refitting.
    learns_by_adding: ClassVar[bool] = False
    #: `fit(..., init=model)` starts the solver from `model`'s weights (a warm start), so a refit on a little
    #: more data takes a fraction of the iterations; a comparison's monthly retrains and new-category refits
    #: start from the model before. Engines without it ignore `init`.
    warm_starts: ClassVar[bool] = False

    # ----- to implement -------------------------------------------------------------
    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _save_weights(self, directory: Path) -> dict[str, Any]:
        """Write weights into `directory`; return extra manifest fields."""
        raise NotImplementedError

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        raise NotImplementedError

    def _evidence(self, text: str, proba: np.ndarray) -> tuple:
        """Evidence for one decision; engines with retrieval override this (or `_evidence_batch`)."""
        return ()

    def _evidence_batch(self, texts: Sequence[str], proba: np.ndarray) -> list[tuple]:
        """Evidence for a batch of decisions; override when one pass over the batch is cheaper."""
        return [tuple(self._evidence(t, row)) for t, row in zip(texts, proba)]

    # ----- the contract -------------------------------------------------------------
    def precompute(self, texts: Sequence[str]) -> None:
        """Compute, into a shared cache, what fitting or predicting on `texts` will need (e.g. their embeddings).

        Optional: engines with nothing to share leave it alone. A comparison calls it once on every record
        before fits run side by side, so no two fits compute the same thing.
        """

    def fit(self, texts: Iterable[str], labels: Iterable[str], *, ids: Sequence[str] | None = None,
            init: Engine | None = None) -> Engine:
        """Learn from labelled texts. `ids` (record ids, one per text) let retrieval evidence name records.

        `init`: a fitted model of this engine to start from (`warm_starts`), e.g. last month's; the solver
        ends at the same optimum within its tolerance, not bit for bit where a cold fit would.
        """
        texts = _as_texts(texts)
        labels = np.asarray([str(y) for y in labels], dtype=object)
        if len(texts) != len(labels):
            raise EngineError(f"fit: {len(texts)} texts but {len(labels)} labels; they must be the same length")
        if ids is not None and len(ids) != len(texts):
            raise EngineError(f"fit: {len(texts)} texts but {len(ids)} ids; give one id per text or none")
        if len(texts) == 0:
            raise EngineError("fit: no training data")
        if init is not None:
            if type(init) is not type(self):
                raise EngineError(f"fit: init is a '{init.name}' model; a '{self.name}' fit can only start from a '{self.name}' model")
            init._check_fitted()
        start = time.perf_counter()
        self.classes_ = np.array(sorted(set(labels.tolist())), dtype=object)
        self.calibrator_ = None
        self.saved_manifest_ = None
        self._fit_ids = [str(i) for i in ids] if ids is not None else None
        start_from = init if self.warm_starts else None
        self._fit_init = start_from
        try:
            self._fit(texts, labels)
        finally:
            del self._fit_ids, self._fit_init
        self.train_seconds_ = time.perf_counter() - start
        # Lineage: the model a warm start began from (its weights shaped this one's).
        self.started_from_ = start_from.model_id if start_from is not None else None
        self.training_data_hash_ = data_hash(texts, labels.tolist())
        self.n_train_ = len(texts)
        return self

    def updated(self, texts: Sequence[str], labels: Sequence[str], *, taxonomy: Any = None) -> Engine:
        """A new engine: this fitted one with `texts`/`labels` added (and `taxonomy` in force), no refit.

        Only for engines that `learns_by_adding`; this one is left as it was. Its lineage (training-data
        hash, record count) and `train_seconds_` describe the update, so its model id differs from this one's.
        """
        raise EngineError(f"engine '{self.name}' learns by refitting, not by adding examples; call fit() on all the examples")

    def _train_refs(self, n: int) -> list[str]:
        """Evidence refs of the texts being fitted: their record ids when `fit` got them, else `train:i`."""
        ids = getattr(self, "_fit_ids", None)
        return list(ids) if ids is not None else [f"train:{i}" for i in range(n)]

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"engine '{self.name}' is not fitted; call fit() or load a saved model first")

    def predict_proba(self, texts: Iterable[str]) -> np.ndarray:
        self._check_fitted()
        texts = _as_texts(texts)
        if not texts:
            return np.zeros((0, len(self.classes_)))
        proba = np.asarray(self._predict_proba(texts), dtype=float)
        # Set by engines.calibration.calibrate(): a temperature fitted on held-out data.
        calibrator = getattr(self, "calibrator_", None)
        return calibrator.apply(proba) if calibrator is not None else proba

    def _abstain_threshold(self) -> float | None:
        """The engine's own `threshold` parameter, else the calibrator's chosen one."""
        threshold = getattr(self, "threshold", None)
        if threshold is None and getattr(self, "calibrator_", None) is not None:
            threshold = self.calibrator_.threshold
        return threshold

    def predict(self, texts: Iterable[str]) -> np.ndarray:
        """Categories (NONE where the decision path abstains), without evidence: for scoring."""
        preds = self.predict_batch(texts, top_k=1, evidence=False)
        return np.array([p.category for p in preds], dtype=object)

    def predict_one(self, text: str, *, top_k: int = 5) -> Prediction:
        """`predict_batch([text])[0]`: the API's per-record path."""
        if text is None:
            raise EngineError("text is missing (None); every record needs text")
        return self.predict_batch([text], top_k=top_k)[0]

    def predict_batch(
        self,
        texts: Iterable[str],
        *,
        ids: Sequence[str] | None = None,
        top_k: int = 5,
        evidence: bool = True,
        taxonomy: Any = None,
        code_map: Any = None,
    ) -> list[Prediction]:
        """The one decision path: a `Prediction` per text (category or NONE with a reason).

        `taxonomy` (the store's current `Taxonomy`) makes the decision valid in
        that version: codes merged, renamed or split since the model was trained
        are mapped or abstain (see `taxonomist.decision`). Pass a prebuilt
        `code_map` instead to reuse it across batches.
        """
        texts = _as_texts(texts)
        if ids is not None and len(ids) != len(texts):
            raise EngineError(f"predict_batch: {len(texts)} texts but {len(ids)} ids; give one id per text or none")
        start = time.perf_counter()
        proba = self.predict_proba(texts)
        ev = self._evidence_batch(texts, proba) if evidence else None
        return self._decide(proba, texts, ids=ids, top_k=top_k, taxonomy=taxonomy, code_map=code_map,
                            evidence=ev, start=start)

    def _decide(self, proba: np.ndarray, texts: Sequence[str], *, ids, top_k, taxonomy, code_map, evidence, start,
                forced=None, forced_confidence=None, costs=None, extras=None, route: str | None = None) -> list[Prediction]:
        from ..decision import decide

        if code_map is None and taxonomy is not None:
            code_map = self.code_map(taxonomy)
        version = code_map.current_version if code_map is not None else str(getattr(self, "taxonomy_version_", "") or "")
        return decide(
            proba, self.classes_, threshold=self._abstain_threshold(), top_k=top_k, code_map=code_map,
            forced=forced, forced_confidence=forced_confidence, evidence=evidence, ids=ids, model_id=self.model_id, taxonomy_version=version,
            route=self.name if route is None else route, latency_ms=(time.perf_counter() - start) * 1000,
            costs=costs, extras=extras,
        )

    def code_map(self, taxonomy: Any):
        """How this model's classes read in `taxonomy` (a `decision.CodeMap`; `.changed` says if any differ)."""
        from ..decision import CodeMap

        self._check_fitted()
        return CodeMap([str(c) for c in self.classes_], taxonomy, model_version=str(getattr(self, "taxonomy_version_", "") or ""))

    @property
    def model_id(self) -> str:
        """The content hash of the model (see `Manifest.model_id`); after save/load it covers the weight files."""
        self._check_fitted()
        saved = getattr(self, "saved_manifest_", None)
        if saved is not None:
            return saved.id or saved.model_id  # `id` is set at save and checked on load: no hashing per call
        # The API asks for the id with every prediction: rebuild the manifest only when something it is made of
        # was replaced (fit, set_params, calibrate and load all assign new objects). The memo keeps the objects
        # themselves, so an identity match cannot be a freed object's reused address.
        state = self._id_state()
        memo = self.__dict__.get("_model_id_memo")
        if memo is not None and len(memo[0]) == len(state) and all(a is b for a, b in zip(memo[0], state)):
            return memo[1]
        model_id = self._manifest_core().model_id
        self.__dict__["_model_id_memo"] = (state, model_id)
        return model_id

    def _id_state(self) -> tuple:
        """The objects the unsaved model's id is computed from (parameters, classes, calibration, lineage)."""
        return (*(getattr(self, n, None) for n in _param_names(type(self))), self.classes_,
                *(getattr(self, a, None) for a in ("calibrator_", "base_model_", "taxonomy_version_", "training_data_hash_",
                                                   "n_train_", "train_seconds_", "started_from_")))

    def _manifest_core(self, **extra: Any) -> Manifest:
        """The manifest without library versions and timestamps (cheap: the API asks for the id per call)."""
        calibrator = getattr(self, "calibrator_", None)
        if calibrator is not None and "calibration" not in extra:
            extra["calibration"] = calibrator.to_dict()
        if getattr(self, "started_from_", None) and "started_from" not in extra:
            extra["started_from"] = self.started_from_
        return Manifest(
            engine=self.name,
            params={k: _jsonable(v) for k, v in self.get_params(deep=False).items()},
            classes=[str(c) for c in self.classes_],
            base_model=str(getattr(self, "base_model_", "") or ""),
            taxonomy_version=str(getattr(self, "taxonomy_version_", "") or ""),
            training_data_hash=getattr(self, "training_data_hash_", ""),
            n_train=int(getattr(self, "n_train_", 0)),
            train_seconds=round(float(getattr(self, "train_seconds_", 0.0)), 3),
            extra=extra,
        )

    def manifest(self, **extra: Any) -> Manifest:
        self._check_fitted()
        saved = getattr(self, "saved_manifest_", None)
        if saved is not None and not extra:
            return saved
        m = self._manifest_core(**extra)
        m.library_versions = library_versions(*self._libraries())
        m.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return m

    def _libraries(self) -> tuple[str, ...]:
        return ()

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        from .._private import DIR_MODE, FILE_MODE, private_dir

        d = Path(directory)
        new_dir = not d.exists()
        private_dir(d)
        self.saved_manifest_ = None
        extra = self._save_weights(d) or {}
        if getattr(self, "calibrator_", None) is not None:
            extra["calibration"] = self.calibrator_.to_dict()
        manifest = self.manifest(**extra)
        manifest.files = _digests(d)
        manifest.write(d)
        # Weights can hold record text (retriever points, vocabularies): owner only, like the store.
        for rel in [*manifest.files, MANIFEST]:
            os.chmod(d / rel, FILE_MODE)
        if new_dir:
            for sub in (p for p in d.rglob("*") if p.is_dir()):
                os.chmod(sub, DIR_MODE)
        manifest.id = manifest.model_id
        self.saved_manifest_ = manifest
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Engine:
        directory = Path(directory)
        if not directory.is_dir():
            raise EngineError(f"'{directory}' is not a model directory (it does not exist); pass the --out of `taxonomist train`")
        manifest = Manifest.read(directory)
        if cls is not Engine and manifest.engine != cls.name:
            raise EngineError(f"'{directory}' holds a '{manifest.engine}' model, not '{cls.name}'")
        _ensure_registered()
        klass = ENGINES.get(manifest.engine)
        if klass is None:
            raise EngineError(
                f"'{directory}' holds a model of unknown engine '{manifest.engine}' "
                f"(known: {', '.join(sorted(ENGINES))}); install the package that provides it"
            )
        manifest.verify_files(directory)
        try:
            engine = klass(**manifest.params)
        except TypeError as exc:
            raise EngineError(f"'{directory}': the manifest's parameters do not fit engine '{manifest.engine}' ({exc})") from None
        engine.classes_ = np.array(manifest.classes, dtype=object)
        engine.training_data_hash_ = manifest.training_data_hash
        engine.n_train_ = manifest.n_train
        engine.train_seconds_ = manifest.train_seconds
        engine.taxonomy_version_ = manifest.taxonomy_version
        try:
            engine._load_weights(directory, manifest)
        except (EngineError, ImportError):
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise EngineError(
                f"cannot load the model in '{directory}': {type(exc).__name__}; the directory is damaged, save the model again"
            ) from None
        if manifest.extra.get("calibration"):
            from .calibration import Calibrator

            engine.calibrator_ = Calibrator.from_dict(manifest.extra["calibration"])
        engine.saved_manifest_ = manifest
        return engine


def load_engine(directory: str | Path) -> Engine:
    """Rebuild any saved engine from its directory (manifest + weights)."""
    return Engine.load(directory)


def _as_texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise EngineError("expected a list of texts, got a single string; wrap it in a list or use predict_one")
    out = []
    for i, t in enumerate(texts):
        if t is None:
            raise EngineError(f"text #{i} is missing (None); every record needs text")
        out.append(str(t))
    return out


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return repr(value)


Loader = Callable[[Path], Engine]
