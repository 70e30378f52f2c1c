"""Retrieval-only classifier over labelled points; also the retriever the LLM engine uses.

Labelled points are the training examples plus, when a taxonomy is given, each
active category's definition (`Category.describe()`) and its example texts.
A query's class scores come from a similarity-weighted vote of its top-k
neighbours; classes with no neighbour in the top k keep a small score from
their single nearest point, so every class has a non-zero probability.

Similarity (`retrieval`): "dense" (MiniLM cosine), "lexical" (label-weighted
word and character n-grams) or "hybrid" (default: a mix of both, the dense
share and the vote temperature chosen by leave-one-out accuracy on the
training points); see `taxonomist.retrieval`. Codes such as `CO-197` or
`90837-95`, which a sentence embedder blurs, are matched exactly by the lexical side.

Points can be added or removed, and the taxonomy swapped, between calls: only
new texts are embedded and nothing is refitted (`add_examples`,
`remove_examples`, `set_taxonomy`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EngineError, TaxonomyError
from ..prediction import Evidence
from ..retrieval import LexicalIndex, choose_mix, cv_queries, knn_vote, rows_per_chunk
from ..taxonomy import Taxonomy, load_taxonomy
from .base import Engine, Manifest, _as_texts, data_hash, register_engine

__all__ = ["KnnEngine", "EmbeddingEngine"]

_POINTS = "knn_points.json"
_VECTORS = "knn_vectors.npz"
_LEXICAL = "knn_lexical.npz"
_RETRIEVAL = "knn_retrieval.json"
RETRIEVALS = ("dense", "lexical", "hybrid")
_TAXONOMY = "taxonomy.yaml"

EXAMPLE, DEFINITION = "example", "definition"


def _as_taxonomy(value: Taxonomy | str | Path | None) -> Taxonomy | None:
    if value is None or isinstance(value, Taxonomy):
        return value
    return load_taxonomy(value)


def taxonomy_points(taxonomy: Taxonomy, *, use_definitions: bool = True) -> tuple[list[str], list[str], list[str], list[str]]:
    """The labelled points a taxonomy document gives, as columns (texts, category codes, kinds, refs):
    each active category's definition (`Category.describe()`, with `use_definitions`) and examples."""
    texts: list[str] = []
    codes: list[str] = []
    kinds: list[str] = []
    refs: list[str] = []
    for cat in taxonomy.active_categories:
        if use_definitions:
            texts.append(cat.describe())
            codes.append(cat.code)
            kinds.append(DEFINITION)
            refs.append(f"taxonomy:{cat.code}")
        for j, example in enumerate(cat.examples):
            texts.append(example)
            codes.append(cat.code)
            kinds.append(EXAMPLE)
            refs.append(f"taxonomy:{cat.code}#{j}")
    return texts, codes, kinds, refs


class EmbeddingEngine(Engine):
    """Shared plumbing for engines over a sentence embedder (`embedder` names one in `taxonomist.embed.EMBEDDERS`)."""

    extra = "embed"

    def _embedder(self):
        if getattr(self, "embedder_", None) is None:
            from ..embed import get_embedder

            self.embedder_ = get_embedder(self.embedder)
            self.base_model_ = self.embedder_.model_id
        return self.embedder_

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._embedder().encode(list(texts))

    def precompute(self, texts: Sequence[str]) -> None:
        self._embedder().encode(list(texts))  # into the embedding cache, which every fit reads

    def _libraries(self) -> tuple[str, ...]:
        return ("onnxruntime", "sentence-transformers", "torch", "tokenizers")

    def _save_taxonomy(self, directory: Path) -> None:
        if getattr(self, "taxonomy_", None) is not None:
            self.taxonomy_.save(directory / _TAXONOMY)

    def _load_taxonomy(self, directory: Path) -> None:
        """Restore `taxonomy_` from a saved model; the `taxonomy` parameter falls back to it when its file is gone."""
        self.taxonomy_ = None
        if (directory / _TAXONOMY).is_file():
            try:
                self.taxonomy_ = load_taxonomy(directory / _TAXONOMY)
            except TaxonomyError as exc:
                raise EngineError(f"'{directory}': saved taxonomy cannot be read: {exc}") from None
            if not isinstance(self.taxonomy, (str, Path)) or not Path(str(self.taxonomy)).is_file():
                self.taxonomy = self.taxonomy_


@register_engine
class KnnEngine(EmbeddingEngine):
    """k-nearest-neighbour vote over examples and category definitions (MiniLM + label-weighted n-grams).

    Parameters: `k` neighbours vote; `retrieval` is "hybrid" (default),
    "dense" or "lexical"; `mix` is the dense share of the hybrid similarity
    (None: chosen on the training data); `temperature` sharpens the similarity
    weights `exp(sim / temperature)` (None: chosen on the training data);
    `taxonomy` (path or Taxonomy) adds definitions and taxonomy examples as
    labelled points; `threshold` abstains below that confidence.

    Models saved before `retrieval` existed load as "dense" with their saved temperature.
    """

    name = "knn"
    family = "retrieval"
    label = "knn (MiniLM + n-gram retrieval)"
    budget_kind = "embed"
    test_params = {"k": 10}
    cheap_to_refit = True
    learns_by_adding = True  # examples and categories are added to the index; nothing is retrained
    demo_caps = {"max_train": 1500, "max_test": 300, "month_test": 60, "event_test": 150, "seeds": 1,
                 "policies": ("never", "monthly")}

    def __init__(
        self,
        *,
        embedder: str = "minilm",
        k: int = 10,
        retrieval: str = "hybrid",
        mix: float | None = None,
        temperature: float | None = None,
        taxonomy: Taxonomy | str | Path | None = None,
        use_definitions: bool = True,
        threshold: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.k = k
        self.retrieval = retrieval
        self.mix = mix
        self.temperature = temperature
        self.taxonomy = taxonomy
        self.use_definitions = use_definitions
        self.threshold = threshold

    # ----- fitting = indexing ---------------------------------------------------------
    def _check_params(self) -> None:
        if self.k < 1 or (self.temperature is not None and self.temperature <= 0):
            raise EngineError(f"knn: k must be >= 1 and temperature > 0 (got k={self.k}, temperature={self.temperature})")
        if self.retrieval not in RETRIEVALS:
            raise EngineError(f"knn: retrieval='{self.retrieval}': expected one of {', '.join(RETRIEVALS)}")
        if self.mix is not None and not 0.0 <= self.mix <= 1.0:
            raise EngineError(f"knn: mix={self.mix}: the dense share must be between 0 and 1 (or None: chosen on the data)")

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        self._check_params()
        self.embedder_ = None
        self.texts_: list[str] = []
        self.labels_: list[str] = []
        self.kinds_: list[str] = []
        self.refs_: list[str] = []
        self.vectors_ = np.zeros((0, self._embedder().dim), dtype=np.float32)
        self.lexical_ = LexicalIndex() if self.retrieval != "dense" else None
        self.mix_ = {"dense": 1.0, "lexical": 0.0}.get(self.retrieval, self.mix)
        self.temperature_ = self.temperature
        self.taxonomy_ = None
        self.taxonomy_version_ = ""
        self._append(texts, labels.tolist(), EXAMPLE, self._train_refs(len(texts)))
        taxonomy = _as_taxonomy(self.taxonomy)
        if taxonomy is not None:
            self.set_taxonomy(taxonomy)
        else:
            self._reindex()
        self._choose_mix()

    def _choose_mix(self) -> None:
        """Dense share and vote temperature left as None: the best leave-one-out kNN accuracy on the training examples."""
        self.cv_accuracy_ = None
        if self.mix_ is not None and self.temperature_ is not None:
            return
        examples = np.flatnonzero(np.array([k == EXAMPLE for k in self.kinds_], dtype=bool))
        queries = cv_queries(self._point_class, examples)
        mixes = (self.mix_,) if self.mix_ is not None else None
        temperatures = (self.temperature_,) if self.temperature_ is not None else None
        if len(queries) == 0:  # no class has two points: nothing to validate on
            self.mix_ = 0.5 if self.mix_ is None else self.mix_
            self.temperature_ = 0.05 if self.temperature_ is None else self.temperature_
            return
        use_dense, use_lexical = self.mix_ != 0.0, self.lexical_ is not None and self.mix_ != 1.0

        def similarities(rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
            return (self.vectors_[rows] @ self.vectors_.T if use_dense else None,
                    self.lexical_.similarities(rows=rows) if use_lexical else None)

        grid = {k: v for k, v in (("mixes", mixes), ("temperatures", temperatures)) if v is not None}
        self.mix_, self.temperature_, self.cv_accuracy_ = choose_mix(
            similarities, queries, self._point_class, len(self.classes_), k=self.k, **grid)

    def _append(self, texts: Sequence[str], labels: Sequence[str], kind: str, refs: Sequence[str],
                vectors: np.ndarray | None = None) -> None:
        if not texts:
            return
        vectors = self._embed(texts) if vectors is None else vectors
        self.texts_.extend(texts)
        self.labels_.extend(str(y) for y in labels)
        self.kinds_.extend([kind] * len(texts) if isinstance(kind, str) else kind)
        self.refs_.extend(refs)
        self.vectors_ = np.vstack([self.vectors_, vectors]).astype(np.float32, copy=False)
        if self.lexical_ is not None:
            self.lexical_ = self.lexical_.extended(texts)

    def _keep(self, mask: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        self.texts_ = [self.texts_[i] for i in idx]
        self.labels_ = [self.labels_[i] for i in idx]
        self.kinds_ = [self.kinds_[i] for i in idx]
        self.refs_ = [self.refs_[i] for i in idx]
        self.vectors_ = self.vectors_[idx]
        if self.lexical_ is not None:
            self.lexical_ = self.lexical_.subset(idx)

    def _reindex(self) -> None:
        """Recompute classes and the per-point class index after any change (no embedding)."""
        retired = set()
        if self.taxonomy_ is not None:
            retired = {c.code for c in self.taxonomy_.categories if not c.active}
        active = np.array([y not in retired for y in self.labels_], dtype=bool)
        classes = sorted({y for y, a in zip(self.labels_, active) if a})
        if not classes:
            raise EngineError("knn: no labelled points left; add examples or categories before predicting")
        self.classes_ = np.array(classes, dtype=object)
        lookup = {c: i for i, c in enumerate(classes)}
        self._point_class = np.array([lookup.get(y, -1) for y in self.labels_], dtype=np.int64)
        if self.lexical_ is not None:  # n-gram weights follow the labels of the active points
            self.lexical_ = self.lexical_.reweighted(self._point_class, len(classes))

    # ----- instant updates ------------------------------------------------------------
    def updated(self, texts: Sequence[str], labels: Sequence[str], *, taxonomy: Any = None) -> KnnEngine:
        self._check_fitted()
        start = time.perf_counter()
        texts, labels = _as_texts(texts), [str(y) for y in labels]
        new = copy.copy(self)  # every array the update changes is replaced, not written in place; the lists are copied
        new.texts_, new.labels_, new.kinds_, new.refs_ = list(self.texts_), list(self.labels_), list(self.kinds_), list(self.refs_)
        new.saved_manifest_ = None
        if taxonomy is not None:
            new.set_taxonomy(taxonomy)
        new.add_examples(texts, labels)
        new.training_data_hash_ = data_hash([str(getattr(self, "training_data_hash_", "")), *texts], ["", *labels])
        new.n_train_ = int(getattr(self, "n_train_", 0)) + len(texts)
        new.train_seconds_ = time.perf_counter() - start
        return new

    def add_examples(self, texts: Iterable[str], labels: Iterable[str], *, refs: Iterable[str] | None = None) -> KnnEngine:
        """Add labelled examples; they count from the next call. Only these texts are embedded."""
        self._check_fitted()
        texts = _as_texts(texts)
        labels = [str(y) for y in labels]
        if len(texts) != len(labels):
            raise EngineError(f"add_examples: {len(texts)} texts but {len(labels)} labels; they must be the same length")
        start = len(self.texts_)
        refs = list(refs) if refs is not None else [f"added:{start + i}" for i in range(len(texts))]
        if len(refs) != len(texts):
            raise EngineError(f"add_examples: {len(texts)} texts but {len(refs)} refs; give one ref per text")
        self._append(texts, labels, EXAMPLE, refs)
        self._reindex()
        return self

    def remove_examples(self, *, refs: Iterable[str] | None = None, texts: Iterable[str] | None = None, category: str | None = None) -> int:
        """Remove examples by ref, by exact text, or every example of a category; returns how many went."""
        self._check_fitted()
        if refs is None and texts is None and category is None:
            raise EngineError("remove_examples: say which examples to remove (refs=, texts= or category=)")
        refs_set, texts_set = set(refs or ()), set(texts or ())
        drop = np.array(
            [
                kind == EXAMPLE and (ref in refs_set or text in texts_set or label == category)
                for kind, ref, text, label in zip(self.kinds_, self.refs_, self.texts_, self.labels_)
            ],
            dtype=bool,
        )
        self._keep(~drop)
        self._reindex()
        return int(drop.sum())

    def set_taxonomy(self, taxonomy: Taxonomy | str | Path) -> KnnEngine:
        """Use a new taxonomy version: its definitions and examples replace the old ones.

        New categories become classes; retired ones stop being predicted (their
        training examples are kept but not used). Only new texts are embedded.
        """
        if not hasattr(self, "texts_"):
            raise EngineError("knn: set_taxonomy needs a fitted engine; call fit() first")
        taxonomy = _as_taxonomy(taxonomy)
        from_taxonomy = np.array([r.startswith("taxonomy:") for r in self.refs_], dtype=bool)
        # Unchanged definitions and examples keep their vectors: only new texts are embedded.
        known = {self.texts_[i]: self.vectors_[i] for i in np.flatnonzero(from_taxonomy)}
        self._keep(~from_taxonomy)
        texts, labels, kinds, refs = taxonomy_points(taxonomy, use_definitions=self.use_definitions)
        if texts:
            vectors = np.zeros((len(texts), self.vectors_.shape[1]), dtype=np.float32)
            new = [i for i, t in enumerate(texts) if t not in known]
            for i, t in enumerate(texts):
                if t in known:
                    vectors[i] = known[t]
            if new:
                vectors[new] = self._embed([texts[i] for i in new])
            self._append(texts, labels, kinds, refs, vectors=vectors)
        self.taxonomy_ = taxonomy
        self.taxonomy_version_ = taxonomy.version_id
        self._reindex()
        return self

    # ----- scoring --------------------------------------------------------------------
    def _similarities(self, texts: Sequence[str]) -> np.ndarray:
        """Each text's similarity to every point (retired categories' points: -inf)."""
        mix = self.mix_
        sims = np.zeros((len(texts), len(self.texts_)), dtype=np.float32)
        if mix > 0.0:
            sims += mix * (self._embed(texts) @ self.vectors_.T)
        if mix < 1.0:
            sims += (1.0 - mix) * self.lexical_.similarities(texts)
        sims[:, self._point_class < 0] = -np.inf
        return sims

    def _step(self) -> int:
        """Texts scored at once: up to 1,024, fewer on a large index (the similarity matrix is dense)."""
        return rows_per_chunk(len(self.texts_), cap=1024)

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        out = []
        step = self._step()
        for i in range(0, len(texts), step):
            sims = self._similarities(texts[i : i + step])
            out.append(knn_vote(sims, self._point_class, len(self.classes_), self.k, self.temperature_))
        return np.vstack(out)

    # ----- the retriever API (used by the LLM engine) ----------------------------------
    def retrieve(self, text: str, *, k: int = 20, per_class: int | None = None, mmr_lambda: float | None = None) -> list[Evidence]:
        """The `k` labelled points nearest to `text`, as Evidence, best first.

        `per_class` caps how many points one category may contribute (class
        balance); `mmr_lambda` (0..1) re-ranks by maximal marginal relevance,
        trading similarity to the query (1.0) against diversity (0.0).
        """
        self._check_fitted()
        if isinstance(text, (list, tuple)):
            raise EngineError("retrieve takes one text; call it once per record")
        return self._ranked(self._similarities([text])[0], k=k, per_class=per_class, mmr_lambda=mmr_lambda)

    def retrieve_batch(self, texts: Sequence[str], *, k: int = 20) -> list[list[Evidence]]:
        """`retrieve(text, k=k)` for many texts with one similarity pass per chunk of texts."""
        self._check_fitted()
        texts = _as_texts(texts)
        out: list[list[Evidence]] = []
        step = self._step()
        for i in range(0, len(texts), step):
            out.extend(self._ranked(row, k=k) for row in self._similarities(texts[i : i + step]))
        return out

    def _ranked(self, sims: np.ndarray, *, k: int, per_class: int | None = None, mmr_lambda: float | None = None) -> list[Evidence]:
        if per_class is None and mmr_lambda is None:
            # The k best need no full sort.
            m = min(k, len(sims))
            head = np.argpartition(-sims, m - 1)[:m] if 0 < m < len(sims) else np.arange(len(sims))
            order = [int(i) for i in head[np.argsort(-sims[head], kind="stable")] if np.isfinite(sims[i])]
        else:
            order = [int(i) for i in np.argsort(-sims, kind="stable") if np.isfinite(sims[i])]
        if per_class is not None:
            taken: dict[int, int] = {}
            capped = []
            for i in order:
                c = int(self._point_class[i])
                if taken.get(c, 0) < per_class:
                    taken[c] = taken.get(c, 0) + 1
                    capped.append(i)
            order = capped
        if mmr_lambda is not None and len(order) > 1:
            order = self._mmr(sims, order[: max(5 * k, 50)], k, mmr_lambda)
        return [
            Evidence(kind=self.kinds_[i], category=self.labels_[i], score=float(sims[i]), ref=self.refs_[i], text=self.texts_[i])
            for i in order[:k]
        ]

    def _mmr(self, sims: np.ndarray, pool: list[int], k: int, lam: float) -> list[int]:
        vectors = self.vectors_[pool]
        chosen: list[int] = []
        remaining = list(range(len(pool)))
        while remaining and len(chosen) < k:
            if chosen:
                redundancy = (vectors[remaining] @ vectors[chosen].T).max(axis=1)
            else:
                redundancy = np.zeros(len(remaining))
            value = lam * sims[[pool[r] for r in remaining]] - (1 - lam) * redundancy
            pick = remaining[int(np.argmax(value))]
            chosen.append(pick)
            remaining.remove(pick)
        return [pool[c] for c in chosen]

    def shortlist(self, text: str, n: int = 10) -> list[tuple[str, float]]:
        """The `n` most likely categories for `text`, with their kNN probabilities."""
        proba = self.predict_proba([text])[0]
        order = np.argsort(-proba, kind="stable")[:n]
        return [(str(self.classes_[i]), float(proba[i])) for i in order]

    def _evidence(self, text: str, proba: np.ndarray) -> tuple:
        return tuple(self.retrieve(text, k=min(self.k, 5)))

    def _evidence_batch(self, texts: Sequence[str], proba: np.ndarray) -> list[tuple]:
        return [tuple(found) for found in self.retrieve_batch(texts, k=min(self.k, 5))]

    # ----- persistence: vectors as npz, points as JSON ---------------------------------
    def _save_weights(self, directory: Path) -> dict[str, Any]:
        points = {"texts": self.texts_, "labels": self.labels_, "kinds": self.kinds_, "refs": self.refs_}
        (directory / _POINTS).write_text(json.dumps(points, ensure_ascii=False))
        np.savez(directory / _VECTORS, vectors=self.vectors_)
        if self.lexical_ is not None:
            np.savez_compressed(directory / _LEXICAL, **self.lexical_.arrays())
        chosen = {"mix": self.mix_, "temperature": self.temperature_, "cv_accuracy": getattr(self, "cv_accuracy_", None)}
        (directory / _RETRIEVAL).write_text(json.dumps(chosen))
        self._save_taxonomy(directory)
        return {"n_points": len(self.texts_), "embedder": self.embedder, "retrieval": self.retrieval}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        old = "retrieval" not in manifest.params  # saved before hybrid retrieval: dense, its saved temperature
        if old:
            self.retrieval, self.mix = "dense", None
        try:
            points = json.loads((directory / _POINTS).read_text())
            vectors = np.load(directory / _VECTORS, allow_pickle=False)["vectors"]
            chosen = {"mix": 1.0, "temperature": self.temperature or 0.05} if old else json.loads((directory / _RETRIEVAL).read_text())
            self.lexical_ = None
            if self.retrieval != "dense":
                with np.load(directory / _LEXICAL, allow_pickle=False) as arrays:
                    self.lexical_ = LexicalIndex.from_arrays(arrays, len(points["texts"]))
        except FileNotFoundError as exc:
            raise EngineError(f"'{directory}' is missing {Path(exc.filename).name}; save the model again") from None
        self.embedder_ = None
        self.texts_, self.labels_ = points["texts"], points["labels"]
        self.kinds_, self.refs_ = points["kinds"], points["refs"]
        self.vectors_ = vectors.astype(np.float32, copy=False)
        self.mix_, self.temperature_ = float(chosen["mix"]), float(chosen["temperature"])
        self.cv_accuracy_ = chosen.get("cv_accuracy")
        self._load_taxonomy(directory)
        self._reindex()
        self.base_model_ = manifest.base_model
