"""An engine from outside the taxonomist package: found through its `taxonomist.engines` entry point.

The tests put this folder on sys.path; its dist-info declares the entry point, as an
installed package would. Nearest class centroid over hashed character n-grams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from taxonomist.engines.base import Engine, Manifest

_WEIGHTS = "centroids.npz"


def _vectorizer() -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2**14, alternate_sign=False, norm="l2")


class CentroidEngine(Engine):
    name: ClassVar[str] = "centroid"
    family: ClassVar[str] = "retrieval"
    label: ClassVar[str] = "centroid (example plugin)"
    test_params: ClassVar[dict] = {"scale": 20.0}

    def __init__(self, *, scale: float = 20.0, threshold: float | None = None) -> None:
        self.scale = scale
        self.threshold = threshold

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        x = _vectorizer().transform(texts)
        rows = []
        for c in self.classes_:
            centroid = np.asarray(x[labels == c].mean(axis=0)).ravel()
            rows.append(centroid / (np.linalg.norm(centroid) or 1.0))
        self.centroids_ = np.vstack(rows).astype(np.float32)

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        sims = np.asarray(_vectorizer().transform(texts) @ self.centroids_.T) * self.scale
        sims -= sims.max(axis=1, keepdims=True)
        p = np.exp(sims)
        return p / p.sum(axis=1, keepdims=True)

    def _save_weights(self, directory: Path) -> dict[str, Any]:
        np.savez(directory / _WEIGHTS, centroids=self.centroids_)
        return {}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        self.centroids_ = np.load(directory / _WEIGHTS, allow_pickle=False)["centroids"]
