"""Frozen MiniLM sentence embeddings with a logistic-regression head: refits in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from .base import Manifest, register_engine
from .knn import EmbeddingEngine

__all__ = ["HeadEngine"]

_WEIGHTS = "head_weights.npz"


@register_engine
class HeadEngine(EmbeddingEngine):
    """Multinomial logistic regression over L2-normalised MiniLM embeddings.

    `C` is the inverse regularisation strength; 20 measured best on BANKING77
    (`benchmarks/engines.py`). Embeddings come from the shared cache, so a refit
    on the same texts embeds nothing.
    """

    name = "head"

    def __init__(self, *, embedder: str = "minilm", C: float = 20.0, max_iter: int = 3000, threshold: float | None = None) -> None:
        self.embedder = embedder
        self.C = C
        self.max_iter = max_iter
        self.threshold = threshold

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        if len(self.classes_) < 2:
            raise EngineError(f"fit: head needs at least 2 categories, found {len(self.classes_)}; add examples of another category")
        self.embedder_ = None
        x = self._embed(texts)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        model.fit(x, labels)
        assert list(model.classes_) == list(self.classes_)
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one row for the positive class; make it a 2-way softmax
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)

    def decision_function(self, texts: list[str]) -> np.ndarray:
        self._check_fitted()
        return self._embed(texts).astype(np.float64) @ self.coef_.T + self.intercept_

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        z = self.decision_function(texts)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def _save_weights(self, directory: Path) -> dict[str, Any]:
        np.savez(directory / _WEIGHTS, coef=self.coef_, intercept=self.intercept_)
        return {"embedder": self.embedder}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        path = directory / _WEIGHTS
        if not path.is_file():
            raise EngineError(f"'{directory}' is missing {_WEIGHTS}; save the model again")
        weights = np.load(path, allow_pickle=False)
        self.coef_, self.intercept_ = weights["coef"], weights["intercept"]
        self.embedder_ = None
        self.base_model_ = manifest.base_model
