"""Frozen MiniLM sentence embeddings with a logistic-regression head: refits in seconds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError
from .base import Manifest, register_engine
from .knn import DEFINITION, EmbeddingEngine, _as_taxonomy, taxonomy_points

__all__ = ["HeadEngine"]

_WEIGHTS = "head_weights.npz"


@register_engine
class HeadEngine(EmbeddingEngine):
    """Multinomial logistic regression over L2-normalised MiniLM embeddings.

    `C` is the inverse regularisation strength; 20 measured best on BANKING77
    (`benchmarks/engines.py`). Embeddings come from the shared cache, so a refit
    on the same texts embeds nothing. With `taxonomy` (path or Taxonomy), each
    active category's definition (`Category.describe()`, with
    `use_definitions`) and its taxonomy examples are extra training rows, as
    in `knn`: with few examples per category the definitions help (BANKING77,
    10 per intent: +0.4 points from the intent names alone), and a category
    with a definition but no example yet can still be predicted (a definition
    weighs `max(1, median examples per category / (its examples + 1))`, so a
    lone definition is not drowned by the other categories' examples).

    `fit(..., init=model)` starts lbfgs from `model`'s weights (`warm_starts`): a retrain on a month more
    of denials took 53 iterations instead of 236 cold, ending at the same optimum within lbfgs's tolerance
    (98.5% of predictions equal to the cold fit's; C=20 leaves the optimum flat).
    """

    name = "head"
    family = "fine-tuned"
    label = "head (MiniLM + logistic)"
    budget_kind = "embed"
    test_params: dict = {}
    cheap_to_refit = True
    warm_starts = True
    # A logistic head costs ~12 CPU-s a fit here: fewer cells, and it sits out the merge and network replays.
    demo_caps = {"max_train": 1500, "max_test": 300, "month_test": 60, "event_test": 150, "seeds": 1,
                 "ks": (1, 5, 25, "all"), "policies": ("never", "drift"), "event_ks": (25,),
                 "skip": ("merge", "network_import")}

    def __init__(
        self,
        *,
        embedder: str = "minilm",
        C: float = 20.0,
        max_iter: int = 3000,
        taxonomy: Any = None,
        use_definitions: bool = True,
        threshold: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.C = C
        self.max_iter = max_iter
        self.taxonomy = taxonomy
        self.use_definitions = use_definitions
        self.threshold = threshold

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        taxonomy = _as_taxonomy(self.taxonomy)
        self.taxonomy_, self.taxonomy_version_ = taxonomy, ""
        weights = None
        if taxonomy is not None:
            extra_texts, codes, kinds, _ = taxonomy_points(taxonomy, use_definitions=self.use_definitions)
            counts = Counter(labels.tolist())
            median = float(np.median(list(counts.values())))
            counts.update(code for code, kind in zip(codes, kinds) if kind != DEFINITION)
            # A category with few examples would be drowned by the others: its definition weighs
            # what it lacks, up to a typical category's count (1 once it has that many).
            weights = np.array([1.0] * len(texts) + [max(1.0, median / (counts[code] + 1)) if kind == DEFINITION else 1.0
                                                     for code, kind in zip(codes, kinds)])
            texts = [*texts, *extra_texts]
            labels = np.concatenate([labels, np.asarray(codes, dtype=object)])
            self.classes_ = np.array(sorted(set(labels.tolist())), dtype=object)
            self.taxonomy_version_ = taxonomy.version_id
        if len(self.classes_) < 2:
            raise EngineError(f"fit: head needs at least 2 categories, found {len(self.classes_)}; add examples of another category")
        self.embedder_ = None
        x = self._embed(texts)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter)
        start = self._warm_start(x.shape[1])
        if start is not None:
            model.set_params(warm_start=True)
            model.coef_, model.intercept_ = start
        model.fit(x, labels, sample_weight=weights)
        self.n_iter_ = int(np.max(model.n_iter_))  # lbfgs iterations: what a warm start saves
        assert list(model.classes_) == list(self.classes_)
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:  # binary: one row for the positive class; make it a 2-way softmax
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self.coef_ = np.asarray(coef, dtype=np.float64)
        self.intercept_ = np.asarray(intercept, dtype=np.float64)

    def _warm_start(self, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
        """`fit(init=...)`'s model's weights laid out for this fit's classes; None for a cold start.

        A category new to this fit starts at zero weight with the lowest intercept (unlikely until the
        solver learns it). Cold when `init` embeds differently or either fit has two categories (one row).
        """
        init = getattr(self, "_fit_init", None)
        if init is None or init.embedder != self.embedder or init.coef_.shape[1] != dim:
            return None
        if len(self.classes_) < 3 or len(init.classes_) < 3:
            return None
        row = {c: i for i, c in enumerate(init.classes_)}
        coef = np.zeros((len(self.classes_), dim), dtype=np.float64)
        intercept = np.full(len(self.classes_), float(np.min(init.intercept_)))
        for j, c in enumerate(self.classes_):
            if c in row:
                coef[j], intercept[j] = init.coef_[row[c]], init.intercept_[row[c]]
        return coef, intercept

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
        self._save_taxonomy(directory)  # the document it was trained with, for a refit
        return {"embedder": self.embedder}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        path = directory / _WEIGHTS
        if not path.is_file():
            raise EngineError(f"'{directory}' is missing {_WEIGHTS}; save the model again")
        weights = np.load(path, allow_pickle=False)
        self.coef_, self.intercept_ = weights["coef"], weights["intercept"]
        self.embedder_ = None
        self.base_model_ = manifest.base_model
        self._load_taxonomy(directory)
