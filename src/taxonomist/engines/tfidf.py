"""TF-IDF (word 1-2 grams + character 2-5 grams) with a linear SVM: the fast, dependable baseline."""

from __future__ import annotations

import json
import math
import re
import threading
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.svm import LinearSVC

from ..errors import EngineError
from ..prediction import Evidence
from .base import Engine, Manifest, register_engine

__all__ = ["TfidfEngine", "field_tokens", "split_fields"]

_WEIGHTS = "tfidf_weights.npz"
_VOCAB = "tfidf_vocabulary.json"
_EVIDENCE = "tfidf_evidence.json"
#: A record's structured fields as `compare.dataset.compose_text` writes them: `name=value ... | free text`.
_FIELD_KEY = re.compile(r"(?:^|\s)([A-Za-z_][\w.-]*)=")
_FIELD_PREFIX = re.compile(r"^[A-Za-z_][\w.-]*=\S.*?(?= \| |$)")
_AMOUNT = re.compile(r"^-?\d[\d,]*\.\d+$")


def _vectorizers() -> tuple[TfidfVectorizer, TfidfVectorizer]:
    """The word 1-2 gram and char_wb 2-5 gram vectorizers, unfitted (their vocabulary is set by `_fit_features` or on load)."""
    common = {"sublinear_tf": True, "lowercase": True, "dtype": np.float32}
    return (TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common))


def _with_vocabulary(vec: TfidfVectorizer, terms: Any, idf: np.ndarray) -> TfidfVectorizer:
    """`vec` ready to transform with the vocabulary `terms` (in column order) and the given idf (fit and load)."""
    vec.set_params(vocabulary={t: i for i, t in enumerate(terms)})
    vec.fit(["a"])  # sets up the fixed-vocabulary state; the idf given replaces the fitted one
    vec.idf_ = idf
    return vec


class _SharedCounts:
    """The n-gram counts of texts analysed once (`TfidfEngine.precompute`), for every fit in this process.

    One per analyzer (word 1-2, char_wb 2-5), with one vocabulary that grows in the order n-grams are first
    seen. A fit whose texts were all analysed takes their rows and the columns its own vocabulary keeps
    instead of analysing them again: the analysis is about a third of a tfidf fit on 57,000 denials, done
    in Python under the GIL, so fits running side by side would otherwise queue for it. Memory only (the
    counts of one record's words are never written anywhere); at most `limit` texts: adding more starts afresh.
    """

    limit = 250_000

    def __init__(self, analyze: Callable[[str], list[str]]) -> None:
        self.analyze = analyze
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._vocabulary: dict[str, int] = {}
        self._rows: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per add: row lengths, columns, counts
        self._matrix: sparse.csr_matrix | None = None
        self._terms: np.ndarray | None = None

    def add(self, texts: Sequence[str]) -> None:
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._rows]
            if len(self._rows) + len(new) > self.limit:
                self._clear()  # and count all of `texts` again: those counted before are gone with the rest
                new = list(dict.fromkeys(texts))
            vocabulary, lengths, columns, counts = self._vocabulary, array("q"), array("i"), array("i")
            for text in new:
                counter: dict[int, int] = {}
                for gram in self.analyze(text):
                    j = vocabulary.setdefault(gram, len(vocabulary))
                    counter[j] = counter.get(j, 0) + 1
                columns.extend(counter.keys())
                counts.extend(counter.values())
                lengths.append(len(counter))
                self._rows[text] = len(self._rows)
            if new:
                self._parts.append((np.frombuffer(lengths, dtype=np.int64), np.frombuffer(columns, dtype=np.int32),
                                    np.frombuffer(counts, dtype=np.int32)))
                self._matrix = self._terms = None

    def counts(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray] | None:
        """(count matrix of `texts`, one row each, columns in first-seen order; the column terms), or None
        when some text was not analysed."""
        with self._lock:
            try:
                rows = np.fromiter((self._rows[t] for t in texts), dtype=np.int64, count=len(texts))
            except KeyError:
                return None
            if self._matrix is None:
                lengths, columns, counts = (np.concatenate(a) for a in zip(*self._parts))
                indptr = np.concatenate([[0], np.cumsum(lengths)])
                self._matrix = sparse.csr_matrix((counts.astype(np.float32), columns, indptr),
                                                 shape=(len(self._rows), len(self._vocabulary)))
                terms = np.empty(len(self._vocabulary), dtype=object)
                terms[list(self._vocabulary.values())] = list(self._vocabulary)
                self._terms = terms
            return self._matrix[rows], self._terms


_SHARED: dict[tuple, _SharedCounts] = {}
_SHARED_LOCK = threading.Lock()


def _shared_counts(counter: CountVectorizer) -> _SharedCounts:
    """The process's shared counts for `counter`'s analyzer."""
    p = counter.get_params()
    key = (p["analyzer"], p["ngram_range"], p["lowercase"])
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = _SharedCounts(counter.build_analyzer())
        return _SHARED[key]


def _counters() -> list[CountVectorizer]:
    """Count vectorizers with the analyzers of `_vectorizers()`."""
    out = []
    for vec in _vectorizers():
        p = vec.get_params()
        out.append(CountVectorizer(**{k: p[k] for k in ("analyzer", "ngram_range", "lowercase", "dtype")}))
    return out


def _kept_counts(counter: CountVectorizer, texts: list[str], first: np.ndarray | None,
                 floor: int) -> tuple[sparse.csr_matrix, np.ndarray]:
    """`texts`' counts over the n-grams in at least `floor` distinct texts (rows `first`), columns sorted
    by n-gram as CountVectorizer sorts them; with those n-grams. From the shared counts when all were analysed."""
    shared = _shared_counts(counter).counts(texts)
    if shared is None:
        try:
            counts = counter.fit_transform(texts)
        except ValueError as exc:  # sklearn: "empty vocabulary" (texts of single characters or nothing)
            raise EngineError(f"fit: the training texts yield no word features ({exc}); check the text column") from None
        terms = counter.get_feature_names_out()
    else:
        counts, terms = shared
        if counts.nnz == 0:
            raise EngineError("fit: the training texts yield no word features; check the text column")
    rows = counts if first is None else counts[first]
    keep = np.flatnonzero(np.bincount(rows.indices, minlength=counts.shape[1]) >= floor)
    if shared is not None:  # first-seen order -> sorted by n-gram, as fit_transform gives them
        keep = keep[np.argsort(terms[keep].astype(str), kind="stable")]
    counts = counts[:, keep].tocsr()
    counts.sort_indices()
    return counts, terms[keep]


def _fit_features(texts: list[str], min_df: int, min_records: int) -> list[tuple[TfidfVectorizer, sparse.csr_matrix]]:
    """The word and char vectorizers fitted on `texts`, each with its training matrix, in one pass over the text.

    An n-gram is kept when it occurs in at least `min_records` distinct texts
    (and `min_df` texts): counted over distinct texts, so one record imported
    twice does not make a patient's name or member id common, and the saved
    vocabulary holds no n-gram unique to one record. The idf is then computed
    over every training text. Each text is analysed once (counting every
    n-gram, then dropping the rare columns); the result is bit-identical to
    fitting a vectorizer on the distinct texts for the vocabulary and then
    again with that vocabulary, at half the cost. Texts analysed before by
    `TfidfEngine.precompute` are not analysed again (`_SharedCounts`); the
    matrices are the same either way.
    """
    first = None
    if min_records > 1:
        index: dict[str, int] = {}
        for i, t in enumerate(texts):
            index.setdefault(t, i)
        if len(index) < min_records:
            raise EngineError(
                f"fit: min_records={min_records} but the training set has {len(index)} distinct texts; "
                "lower min_records or add records"
            )
        first = np.fromiter(index.values(), dtype=np.int64, count=len(index))
    floor = max(min_df, min_records)
    out = []
    for vec, counter in zip(_vectorizers(), _counters()):
        counts, terms = _kept_counts(counter, texts, first, floor)
        if not len(terms):
            raise EngineError(f"fit: no word is used in {floor} or more distinct training texts; lower min_records")
        p = vec.get_params()
        weighting = TfidfTransformer(norm=p["norm"], use_idf=True, smooth_idf=p["smooth_idf"],
                                     sublinear_tf=p["sublinear_tf"]).fit(counts)
        out.append((_with_vocabulary(vec, terms, weighting.idf_), weighting.transform(counts)))
    return out


def split_fields(text: str) -> tuple[dict[str, str] | None, str]:
    """`name=value name=value | free text` -> ({name: value}, free text); (None, text) when it has no such prefix.

    The format of `compare.dataset.compose_text` (`--text-fields`). A value runs to the next ` name=`, so it
    may hold spaces (`payer=Keystone Health Plan`, `modifiers=95 HO`).
    """
    prefix, sep, rest = text.partition(" | ")
    if not _FIELD_PREFIX.match(prefix):
        return None, text
    keys = list(_FIELD_KEY.finditer(prefix))
    if not keys or keys[0].start() != 0:
        return None, text
    fields = {}
    for k, nxt in zip(keys, [*keys[1:], None]):
        value = prefix[k.end(): nxt.start() if nxt is not None else len(prefix)].strip()
        if not value:
            return None, text
        fields[k.group(1)] = value
    return fields, rest if sep else ""


def field_tokens(fields: dict[str, str]) -> list[str]:
    """One-hot tokens of a record's fields: `name=value`, each word of a multi-word value, numbers by sign and size.

    An amount is rarely repeated exactly, so a number with a decimal point becomes its sign and power-of-two
    magnitude (`paid_amount:zero`, `billed_amount:2^7`), which carry over to new records; whole numbers are
    codes (CARC 197, place of service 02) and stay values.
    """
    out = []
    for name, value in fields.items():
        if _AMOUNT.match(value):
            x = float(value.replace(",", ""))
            out.append(f"{name}:{'neg' if x < 0 else 'zero' if x == 0 else 'pos'}")
            out.append(f"{name}:2^{int(math.log2(abs(x) + 1))}")
            continue
        out.append(f"{name}={value}")
        words = value.split()
        if len(words) > 1:
            out.extend(f"{name}:{w}" for w in words)
    return out


def _field_matrix(texts: list[str], vocabulary: dict[str, int]) -> sparse.csr_matrix:
    """Binary field-token features, each row scaled to unit length (like the word and char parts)."""
    rows, cols = [], []
    for i, t in enumerate(texts):
        fields, _ = split_fields(t)
        for tok in set(field_tokens(fields or {})):
            j = vocabulary.get(tok)
            if j is not None:
                rows.append(i)
                cols.append(j)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(texts), len(vocabulary)))
    norms = np.sqrt(np.asarray(x.sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags((1.0 / norms).astype(np.float32)) @ x


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

    Structured fields (`fields="auto"`): when every training text starts with
    `name=value ... | ` (the form `compare.dataset.compose_text` gives records
    whose columns are declared with `--text-fields`), each field becomes one-hot
    features next to the text's (`field_tokens`: `name=value`, the words of a
    multi-word value, numbers by sign and magnitude), kept like n-grams only when
    in `min_records` distinct texts, weighted by `field_weight`; the free text
    after ` | ` alone feeds the word and char parts. Plain texts have no such
    prefix, so nothing changes for them. `fields=False` turns it off.
    Measured by benchmarks/denials_features.py.

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
        fields: str | bool = "auto",
        field_weight: float = 1.0,
    ) -> None:
        self.C = C
        self.min_df = min_df
        self.min_records = min_records
        self.scale = scale
        self.threshold = threshold
        self.evidence_per_class = evidence_per_class
        self.fields = fields
        self.field_weight = field_weight

    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        if len(self.classes_) < 2:
            raise EngineError(f"fit: tfidf needs at least 2 categories, found {len(self.classes_)}; add examples of another category")
        if self.fields not in ("auto", True, False):
            raise EngineError(f"tfidf: fields={self.fields!r} is invalid; expected 'auto', True or False")
        self.field_vocabulary_ = self._field_vocabulary(texts) if self.fields else None
        free = self._free_texts(texts)
        (word, xw), (char, xc) = _fit_features(free, self.min_df, self.min_records)
        parts = [xw, xc]
        if self.field_vocabulary_:
            parts.append(_field_matrix(texts, self.field_vocabulary_) * np.float32(self.field_weight))
        x = sparse.hstack(parts).tocsr()
        # dual=True: sklearn's default ('auto') switches to the primal Newton solver once there are more
        # records than features (about 50,000 denials), which took 8x as long on the same problem
        # (benchmarks/tfidf_solver.py); the dual solver is liblinear's choice for sparse text.
        svm = LinearSVC(C=self.C, dual=True, random_state=0)
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

    def _field_vocabulary(self, texts: list[str]) -> dict[str, int] | None:
        """Field tokens found in at least `min_records` distinct texts, when every text carries fields; else None."""
        parsed = [split_fields(t)[0] for t in dict.fromkeys(texts)]
        if any(f is None for f in parsed):
            if self.fields is True:
                row = next(i for i, t in enumerate(texts) if split_fields(t)[0] is None)
                raise EngineError(f"fit: fields=True but text #{row} does not start with 'name=value ... | '; "
                                  "compose the texts with --text-fields or use fields='auto'")
            return None
        counts: dict[str, int] = {}
        for f in parsed:
            for tok in set(field_tokens(f)):
                counts[tok] = counts.get(tok, 0) + 1
        keep = sorted(tok for tok, c in counts.items() if c >= max(self.min_records, 1))
        return {tok: i for i, tok in enumerate(keep)} or None

    def precompute(self, texts: Sequence[str]) -> None:
        """Count the word and char n-grams of `texts` once, in memory, for the fits to come (`_SharedCounts`).

        A text with a fields prefix is counted by its free text, as a fit with fields reads it.
        """
        free = [t if self.fields is False else split_fields(t)[1] for t in texts]
        for counter in _counters():
            _shared_counts(counter).add(free)

    def _free_texts(self, texts: list[str]) -> list[str]:
        """The texts the word and char parts read: without the fields prefix when fields are features."""
        if not getattr(self, "field_vocabulary_", None):
            return texts
        return [split_fields(t)[1] for t in texts]

    def _features(self, texts: list[str]) -> sparse.csr_matrix:
        free = self._free_texts(texts)
        parts = [self.word_vectorizer_.transform(free), self.char_vectorizer_.transform(free)]
        if getattr(self, "field_vocabulary_", None):
            parts.append(_field_matrix(texts, self.field_vocabulary_) * np.float32(self.field_weight))
        return sparse.hstack(parts).tocsr()

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
        x = self._features(texts)
        # The word, char (and fields) parts are each unit length: cosine in [0, 1].
        parts = 2.0 + (float(self.field_weight) ** 2 if getattr(self, "field_vocabulary_", None) else 0.0)
        sims = np.minimum(np.asarray((x @ protos.T).todense()) / parts, 1.0)  # float32 rounding: 1.0000003
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
        return np.asarray(self._features(texts) @ self.coef_.T) + self.intercept_

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
        if getattr(self, "field_vocabulary_", None):
            vocab["fields"] = sorted(self.field_vocabulary_, key=self.field_vocabulary_.get)
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
        word, char = _vectorizers()
        for vec, key in ((word, "word"), (char, "char")):
            _with_vocabulary(vec, vocab[key], weights[f"{key}_idf"])
        self.word_vectorizer_, self.char_vectorizer_ = word, char
        self.field_vocabulary_ = {t: i for i, t in enumerate(vocab["fields"])} if vocab.get("fields") else None
        self.coef_ = weights["coef"]
        self.intercept_ = weights["intercept"]
        if "proto_shape" in weights.files and (directory / _EVIDENCE).is_file():
            self.proto_x_ = sparse.csr_matrix(
                (weights["proto_data"], weights["proto_indices"], weights["proto_indptr"]),
                shape=tuple(int(v) for v in weights["proto_shape"]),
            )
            ev = json.loads((directory / _EVIDENCE).read_text())
            self.proto_refs_, self.proto_labels_ = ev["refs"], ev["labels"]
