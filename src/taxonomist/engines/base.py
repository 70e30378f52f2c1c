"""The engine contract every classifier follows (scikit-learn estimator style).

An engine is constructed with keyword-only parameters that `__init__` stores
unchanged; `fit(texts, labels)` learns attributes ending in `_` and returns
self; `predict_proba` has one column per entry of `classes_`. `save(dir)` writes
weights plus `manifest.json` (never a pickle of the whole object) and
`load_engine(dir)` rebuilds it. Register an engine with `@register_engine` and
the shared contract tests run it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import EngineError, NotFittedError
from ..prediction import Alternative, Prediction
from ..taxonomy import ABSTAIN

__all__ = [
    "Engine",
    "Manifest",
    "ENGINES",
    "register_engine",
    "create_engine",
    "load_engine",
    "data_hash",
    "library_versions",
]

MANIFEST = "manifest.json"
ENGINES: dict[str, type[Engine]] = {}


def register_engine(cls: type[Engine]) -> type[Engine]:
    """Class decorator: make an engine available by its `name` (CLI, benchmarks, contract tests)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    ENGINES[cls.name] = cls
    return cls


def _ensure_registered() -> None:
    # Engines register themselves on import; importing the package imports the
    # light ones, and heavy ones import their dependencies lazily.
    from . import _registry  # noqa: F401


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

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n")

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise EngineError(f"'{directory}' is not a saved model: {MANIFEST} is missing")
        data = json.loads(path.read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def model_id(self) -> str:
        key = json.dumps([self.engine, self.params, self.training_data_hash, self.taxonomy_version], sort_keys=True, default=str)
        return f"{self.engine}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class Engine(ClassifierMixin, BaseEstimator):
    """Base of all engines. Subclasses implement `_fit`, `_predict_proba`, `_save_weights`, `_load_weights`.

    Subclass `__init__` must take keyword-only parameters and store them unchanged
    (sklearn's `get_params`/`clone` rely on it). Common parameters, when a
    subclass declares them: `threshold` (abstain below this calibrated
    confidence), `taxonomy` (path or Taxonomy used for definitions/examples).
    """

    name: ClassVar[str] = ""
    #: Extra whose absence makes this engine unusable (checked before fit).
    extra: ClassVar[str | None] = None

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
        """Evidence for `predict_one`; engines with retrieval override this."""
        return ()

    # ----- the contract -------------------------------------------------------------
    def fit(self, texts: Iterable[str], labels: Iterable[str]) -> Engine:
        texts = _as_texts(texts)
        labels = np.asarray([str(y) for y in labels], dtype=object)
        if len(texts) != len(labels):
            raise EngineError(f"fit: {len(texts)} texts but {len(labels)} labels; they must be the same length")
        if len(texts) == 0:
            raise EngineError("fit: no training data")
        start = time.perf_counter()
        self.classes_ = np.array(sorted(set(labels.tolist())), dtype=object)
        self._fit(texts, labels)
        self.train_seconds_ = time.perf_counter() - start
        self.training_data_hash_ = data_hash(texts, labels.tolist())
        self.n_train_ = len(texts)
        return self

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
        proba = self.predict_proba(texts)
        out = self.classes_[proba.argmax(axis=1)] if len(proba) else np.array([], dtype=object)
        threshold = self._abstain_threshold()
        if threshold:
            out = np.where(proba.max(axis=1) >= threshold, out, ABSTAIN)
        return out

    def predict_one(self, text: str, *, top_k: int = 5) -> Prediction:
        start = time.perf_counter()
        proba = self.predict_proba([text])[0]
        order = np.argsort(-proba)[:top_k]
        best = int(order[0])
        confidence = float(proba[best])
        threshold = self._abstain_threshold() or 0.0
        category = str(self.classes_[best]) if confidence >= threshold else ABSTAIN
        return Prediction(
            category=category,
            confidence=confidence,
            alternatives=tuple(Alternative(str(self.classes_[i]), float(proba[i])) for i in order),
            evidence=tuple(self._evidence(text, proba)),
            model_id=self.model_id,
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    @property
    def model_id(self) -> str:
        self._check_fitted()
        return self.manifest().model_id

    def manifest(self, **extra: Any) -> Manifest:
        self._check_fitted()
        return Manifest(
            engine=self.name,
            params={k: _jsonable(v) for k, v in self.get_params(deep=False).items()},
            classes=[str(c) for c in self.classes_],
            base_model=str(getattr(self, "base_model_", "") or ""),
            taxonomy_version=str(getattr(self, "taxonomy_version_", "") or ""),
            training_data_hash=getattr(self, "training_data_hash_", ""),
            n_train=int(getattr(self, "n_train_", 0)),
            train_seconds=round(float(getattr(self, "train_seconds_", 0.0)), 3),
            library_versions=library_versions(*self._libraries()),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            extra=extra,
        )

    def _libraries(self) -> tuple[str, ...]:
        return ()

    def save(self, directory: str | Path) -> Path:
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        extra = self._save_weights(d) or {}
        if getattr(self, "calibrator_", None) is not None:
            extra["calibration"] = self.calibrator_.to_dict()
        self.manifest(**extra).write(d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Engine:
        manifest = Manifest.read(directory)
        if cls is not Engine and manifest.engine != cls.name:
            raise EngineError(f"'{directory}' holds a '{manifest.engine}' model, not '{cls.name}'")
        _ensure_registered()
        klass = ENGINES.get(manifest.engine)
        if klass is None:
            raise EngineError(f"'{directory}' holds a model of unknown engine '{manifest.engine}'")
        engine = klass(**manifest.params)
        engine.classes_ = np.array(manifest.classes, dtype=object)
        engine.training_data_hash_ = manifest.training_data_hash
        engine.n_train_ = manifest.n_train
        engine.train_seconds_ = manifest.train_seconds
        engine.taxonomy_version_ = manifest.taxonomy_version
        engine._load_weights(Path(directory), manifest)
        if manifest.extra.get("calibration"):
            from .calibration import Calibrator

            engine.calibrator_ = Calibrator.from_dict(manifest.extra["calibration"])
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
