"""TF-IDF (word 1-2 grams + character 2-5 grams) with a linear SVM: the fast, dependable baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from ..errors import EngineError
from ..prediction import Evidence
from .base import Engine, Manifest, register_engine

__all__ = ["TfidfEngine"]

_WEIGHTS = "tfidf_weights.npz"
_VOCAB = "tfidf_vocabulary.json"
_EVIDENCE = "tfidf_evidence.json"


def _vectorizers(min_df: int, vocabularies: tuple[Any, Any] = (None, None)) -> tuple[TfidfVectorizer, TfidfVectorizer]:
    common = {"sublinear_tf": True, "lowercase": True, "dtype": np.float32}
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=min_df if vocabularies[0] is None else 1,
                           vocabulary=vocabularies[0], **common)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=min_df if vocabularies[1] is None else 1,
                           vocabulary=vocabularies[1], **common)
    return word, char


def _shared_vocabularies(texts: list[str], min_records: int, min_df: int) -> tuple[Any, Any]:
    """The word and char n-grams found in at least `min_records` distinct texts (None: keep every n-gram).

    Counted over distinct texts, so one record imported twice does not make a
    patient's name or member id common. The saved vocabulary then holds no
    n-gram unique to one record.
    """
    if min_records <= 1:
        return None, None
    distinct = list(dict.fromkeys(texts))
    if len(distinct) < min_records:
        raise EngineError(
            f"fit: min_records={min_records} but the training set has {len(distinct)} distinct texts; "
            "lower min_records or add records"
        )
    out = []
    for vec in _vectorizers(max(min_df, min_records)):
        try:
            vec.fit(distinct)
        except ValueError:  # sklearn: no n-gram is common enough
            raise EngineError(
                f"fit: no word is used in {min_records} or more distinct training texts; lower min_records"
            ) from None
        out.append(sorted(vec.vocabulary_))
    return out[0], out[1]


@register_engine
class TfidfEngine(Engine):
    """Word 1-2 + char_wb 2-5 TF-IDF features and a one-vs-rest LinearSVC.

    Probabilities are a softmax of the SVM margins scaled by `scale`; fit a
    temperature on held-out data with `taxonomist.engines.calibration` to make
    them calibrated.

    `min_records` keeps only the word and character n-grams that occur in at
    least that many distinct training texts, so the saved vocabulary
    (`tfidf_vocabulary.json`) holds no word unique to one record, such as a
    patient name or member id written in one note. Character n-grams of a rare
    word can still survive through common ones (see docs/SECURITY.md).
    Default 2 (PHI first): measured by benchmarks/tfidf_min_records.py, BANKING77
    91.14% instead of 91.33% with min_records=1, generated denials 87.90% vs 87.82%.

    Evidence: for each category the `evidence_per_class` training records the
    SVM scores most typical of it are kept as sparse vectors with their record
    ids; a decision cites the nearest of them among its top categories (ids
    and scores, never text).
    """

    name = "tfidf"
    family = "fine-tuned"
    label = "tfidf"
    budget_kind = "fast"
    test_params: dict = {}
    demo_caps = {"max_train": 3000}
    cheap_to_refit = True

    def __init__(
        self,
        *,
        C: float = 0.5,
        min_df: int = 1,
        min_records: int = 2,
        scale: float = 10.0,
        threshold: float | None = None,
        evidence_per_class: int = 20,
    ) -> None:
        self.C = C
        self.min_df = min_df
        self.min_records = min_records
        self.scale = scale
        self.threshold = threshold
        self.evidence_per_class = evidence_per_class

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        if len(self.classes_) < 2:
            raise EngineError(f"fit: tfidf needs at least 2 categories, found {len(self.classes_)}; add examples of another category")
        word, char = _vectorizers(self.min_df, _shared_vocabularies(texts, self.min_records, self.min_df))
        try:
            x = sparse.hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
        except ValueError as exc:  # sklearn: "empty vocabulary" (texts of single characters or nothing)
            raise EngineError(f"fit: the training texts yield no word features ({exc}); check the text column") from None
        svm = LinearSVC(C=self.C, random_state=0)
        svm.fit(x, labels)
        coef, intercept = svm.coef_, svm.intercept_
        if coef.shape[0] == 1:  # binary: sklearn keeps one row for the positive class
            coef = np.vstack([-coef, coef])
            intercept = np.array([-intercept[0], intercept[0]])
        # Columns follow classes_ (sorted), which is also LinearSVC's order.
        assert list(svm.classes_) == list(self.classes_)
        self.word_vectorizer_, self.char_vectorizer_ = word, char
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.asarray(intercept, dtype=np.float32)
        self._keep_prototypes(x, labels)

    def _keep_prototypes(self, x: sparse.csr_matrix, labels: np.ndarray) -> None:
        """Per category, the training records the model finds most typical of it: the evidence decisions cite."""
        refs = self._train_refs(x.shape[0])
        keep: list[int] = []
        m = int(self.evidence_per_class or 0)
        if m > 0:
            margins = np.asarray(x @ self.coef_.T) + self.intercept_
            for j, c in enumerate(self.classes_):
                rows = np.flatnonzero(labels == c)
                keep.extend(rows[np.argsort(-margins[rows, j], kind="stable")[:m]].tolist())
        idx = np.array(sorted(keep), dtype=int)
        self.proto_x_ = x[idx].astype(np.float32) if len(idx) else sparse.csr_matrix((0, x.shape[1]), dtype=np.float32)
        self.proto_refs_ = [refs[i] for i in idx]
        self.proto_labels_ = [str(labels[i]) for i in idx]

    def _evidence_batch(self, texts: list[str], proba: np.ndarray) -> list[tuple]:
        protos = getattr(self, "proto_x_", None)
        if protos is None or protos.shape[0] == 0:
            return [() for _ in texts]
        x = sparse.hstack([self.word_vectorizer_.transform(texts), self.char_vectorizer_.transform(texts)]).tocsr()
        sims = np.asarray((x @ protos.T).todense()) / 2.0  # word and char parts are each unit length: cosine in [0, 1]
        index = {c: i for i, c in enumerate(self.classes_)}
        proto_class = np.array([index.get(y, -1) for y in self.proto_labels_])
        out = []
        for row, p in zip(sims, proba):
            top = set(np.argsort(-p)[:2].tolist())
            candidates = [i for i in np.argsort(-row)[:50] if proto_class[i] in top][:3]
            out.append(tuple(Evidence(kind="example", category=self.proto_labels_[i], score=float(row[i]),
                                      ref=self.proto_refs_[i]) for i in candidates))
        return out

    def decision_function(self, texts: list[str]) -> np.ndarray:
        self._check_fitted()
        x = sparse.hstack([self.word_vectorizer_.transform(texts), self.char_vectorizer_.transform(texts)]).tocsr()
        return np.asarray(x @ self.coef_.T) + self.intercept_

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        z = self.decision_function(texts).astype(np.float64) * self.scale
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    # ----- persistence: vocabulary + idf as JSON/npz, never pickle -------------------
    def _save_weights(self, directory: Path) -> dict[str, Any]:
        vocab = {}
        for key, vec in (("word", self.word_vectorizer_), ("char", self.char_vectorizer_)):
            terms = [""] * len(vec.vocabulary_)
            for term, i in vec.vocabulary_.items():
                terms[i] = term
            vocab[key] = terms
        (directory / _VOCAB).write_text(json.dumps(vocab, ensure_ascii=False))
        protos = getattr(self, "proto_x_", None)
        if protos is None:
            protos = sparse.csr_matrix((0, self.coef_.shape[1]), dtype=np.float32)
        np.savez_compressed(
            directory / _WEIGHTS,
            word_idf=self.word_vectorizer_.idf_.astype(np.float64),
            char_idf=self.char_vectorizer_.idf_.astype(np.float64),
            coef=self.coef_,
            intercept=self.intercept_,
            proto_data=protos.data, proto_indices=protos.indices, proto_indptr=protos.indptr,
            proto_shape=np.array(protos.shape),
        )
        (directory / _EVIDENCE).write_text(json.dumps({"refs": getattr(self, "proto_refs_", []),
                                                        "labels": getattr(self, "proto_labels_", [])}))
        return {"n_features": int(self.coef_.shape[1])}

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        try:
            vocab = json.loads((directory / _VOCAB).read_text())
            weights = np.load(directory / _WEIGHTS, allow_pickle=False)
        except FileNotFoundError as exc:
            raise EngineError(f"'{directory}' is missing {Path(exc.filename).name}; save the model again") from None
        word, char = _vectorizers(self.min_df)
        for vec, key in ((word, "word"), (char, "char")):
            vec.set_params(vocabulary={t: i for i, t in enumerate(vocab[key])})
            vec.fit(["a"])  # sets up the fixed-vocabulary state; the stored idf replaces the fitted one
            vec.idf_ = weights[f"{key}_idf"]
        self.word_vectorizer_, self.char_vectorizer_ = word, char
        self.coef_ = weights["coef"]
        self.intercept_ = weights["intercept"]
        if "proto_shape" in weights.files and (directory / _EVIDENCE).is_file():
            self.proto_x_ = sparse.csr_matrix(
                (weights["proto_data"], weights["proto_indices"], weights["proto_indptr"]),
                shape=tuple(int(v) for v in weights["proto_shape"]),
            )
            ev = json.loads((directory / _EVIDENCE).read_text())
            self.proto_refs_, self.proto_labels_ = ev["refs"], ev["labels"]
