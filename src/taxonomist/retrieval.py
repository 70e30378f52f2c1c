"""Hybrid retrieval: a lexical index with label-weighted n-grams beside dense embeddings, mixed by cross-validation.

The `knn` engine scores its labelled points with these; the `llm` engine takes its
few-shot examples and label shortlist from that engine, so both retrieve the same way.

- Lexical side (`LexicalIndex`): hashed word 1-2 grams and char_wb 2-5 grams (no vocabulary is
  stored), sublinear term frequency, each n-gram weighted by the square of its information gain
  about the category (`1 - H(category | n-gram) / H(category)`, counted over the points' own
  labels). Codes such as `CO-197` or `90837-95` that mark a category weigh much; n-grams every
  category shares (`CPT`, `POS`, payer names) weigh almost nothing. Word and char parts are each
  unit length: the similarity is the mean of their cosines, in [0, 1].
- Dense side: cosine of the sentence embeddings.
- Mix: `mix * dense + (1 - mix) * lexical`. `choose_mix` picks `mix` and the vote temperature by
  leave-one-out kNN accuracy on the training points (a fixed grid, the same for every data set).

`recall_at_k` measures whether the true category is among the first k retrieved examples or shortlisted categories.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse

__all__ = [
    "MIX_GRID",
    "TEMPERATURE_GRID",
    "LexicalIndex",
    "choose_mix",
    "knn_vote",
    "recall_at_k",
    "rows_per_chunk",
]

N_FEATURES = 1 << 20
#: Candidate dense shares and vote temperatures tried by `choose_mix`.
MIX_GRID = tuple(round(0.1 * i, 1) for i in range(11))
TEMPERATURE_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: Leave-one-out queries `choose_mix` samples from the training points (fixed seed).
CV_QUERIES = 2000
#: Similarity cells (queries x points) computed at once: bounds memory on large indexes.
CHUNK_CELLS = 1 << 24
#: Pseudo-points, spread as the class prior, added to each n-gram's class counts.
SMOOTHING = 1.0
#: n-grams whose weight is below this share of 1 are dropped from the index (speed; they barely count).
MIN_WEIGHT = 1e-3


def rows_per_chunk(n_points: int, cap: int | None = None) -> int:
    """How many query rows to score against `n_points` points at once: `CHUNK_CELLS` cells, at least 1, at most `cap`."""
    step = max(1, CHUNK_CELLS // max(1, n_points))
    return step if cap is None else min(cap, step)


def _vectorizers():
    from sklearn.feature_extraction.text import HashingVectorizer

    common = {"n_features": N_FEATURES, "alternate_sign": False, "norm": None, "lowercase": True, "dtype": np.float32}
    return (HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common))


def count_ngrams(texts: Sequence[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Hashed (word, char) n-gram counts of `texts`: stateless, so points can be added at any time."""
    word, char = _vectorizers()
    texts = list(texts)
    return word.transform(texts).tocsr(), char.transform(texts).tocsr()


def information_gain(counts: sparse.csr_matrix, point_class: np.ndarray, n_classes: int) -> np.ndarray:
    """Per n-gram, the share of the category entropy its presence removes (0..1), over points with class >= 0.

    Class frequencies among the points holding an n-gram are smoothed towards the overall
    class prior with one pseudo-point, so an n-gram seen once is not taken as decisive.
    """
    active = np.flatnonzero(point_class >= 0)
    gain = np.zeros(counts.shape[1], dtype=np.float64)
    if len(active) == 0 or n_classes < 2:
        return gain
    present = counts[active]
    present = sparse.csr_matrix((np.ones_like(present.data, dtype=np.float64), present.indices, present.indptr),
                                shape=present.shape)
    y = point_class[active]
    prior = np.bincount(y, minlength=n_classes) / len(y)
    h0 = float(-(prior[prior > 0] * np.log(prior[prior > 0])).sum())
    if h0 <= 0:
        return gain
    onehot = sparse.csr_matrix((np.ones(len(y)), (np.arange(len(y)), y)), shape=(len(y), n_classes))
    by_class = (present.T @ onehot).tocoo()  # n-gram x class counts (sparse)
    df = np.asarray(present.sum(axis=0)).ravel()
    alpha = SMOOTHING
    cols = np.flatnonzero(df > 0)
    # H = -sum_c p log p with p_c = (n_c + alpha prior_c) / (df + alpha). Classes with n_c = 0 share
    # one closed form (s * prior_c, s = alpha / (df + alpha)); the classes seen are corrected sparsely.
    s = alpha / (df[cols] + alpha)
    plogp_prior = float((prior[prior > 0] * np.log(prior[prior > 0])).sum())
    all_zero = s * (plogp_prior + np.log(s))  # sum_c q_c log q_c with q_c = s * prior_c
    f, c, n = by_class.row, by_class.col, by_class.data
    denom = df[f] + alpha
    p_seen = (n + alpha * prior[c]) / denom
    q_seen = alpha * prior[c] / denom
    with np.errstate(divide="ignore", invalid="ignore"):
        seen = p_seen * np.log(p_seen) - np.where(q_seen > 0, q_seen * np.log(np.maximum(q_seen, 1e-300)), 0.0)
    correction = np.bincount(f, weights=seen, minlength=counts.shape[1])
    entropy = -(all_zero + correction[cols])
    gain[cols] = np.clip(1.0 - entropy / h0, 0.0, 1.0)
    return gain


def _weighted(counts: sparse.csr_matrix, weights: np.ndarray) -> sparse.csr_matrix:
    """Sublinear tf times the n-gram weight, rows scaled to unit length (an all-zero row stays zero)."""
    x = counts.astype(np.float32, copy=True)
    x.data = np.log1p(x.data) * weights[x.indices]
    x.eliminate_zeros()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.csr_matrix(sparse.diags(1.0 / norms).astype(np.float32) @ x)


class LexicalIndex:
    """The points' hashed n-gram counts and (from `reweighted`) their label-weighted unit vectors.

    Counts are kept (and saved) so weights can be recomputed when points or labels change,
    without the texts' vocabulary ever being stored.
    """

    def __init__(self, word: sparse.csr_matrix | None = None, char: sparse.csr_matrix | None = None) -> None:
        empty = sparse.csr_matrix((0, N_FEATURES), dtype=np.float32)
        self.word = empty if word is None else word.tocsr()
        self.char = empty if char is None else char.tocsr()
        self.weights: tuple[np.ndarray, np.ndarray] | None = None
        self._points: tuple[sparse.csr_matrix, sparse.csr_matrix] | None = None

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> LexicalIndex:
        return cls(*count_ngrams(texts))

    def __len__(self) -> int:
        return self.word.shape[0]

    def extended(self, texts: Sequence[str]) -> LexicalIndex:
        """A new index with `texts` appended (the old one is left as it was)."""
        word, char = count_ngrams(texts)
        return LexicalIndex(sparse.vstack([self.word, word]).tocsr(), sparse.vstack([self.char, char]).tocsr())

    def subset(self, idx: np.ndarray) -> LexicalIndex:
        return LexicalIndex(self.word[idx], self.char[idx])

    def reweighted(self, point_class: np.ndarray, n_classes: int) -> LexicalIndex:
        """A new index over the same counts, n-gram weights learnt from the points' classes (-1: not counted)."""
        out = LexicalIndex(self.word, self.char)
        weights = []
        for counts in (self.word, self.char):
            w = information_gain(counts, point_class, n_classes) ** 2
            w[w < MIN_WEIGHT] = 0.0
            weights.append(w.astype(np.float32))
        out.weights = (weights[0], weights[1])
        out._points = (_weighted(self.word, weights[0]).T.tocsr(), _weighted(self.char, weights[1]).T.tocsr())
        return out

    def query_vectors(self, texts: Sequence[str]) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
        word, char = count_ngrams(texts)
        return _weighted(word, self.weights[0]), _weighted(char, self.weights[1])

    def similarities(self, texts: Sequence[str] | None = None, *, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine similarity (mean of word and char parts) of `texts`, or of the index's own `rows`, to every point."""
        if self._points is None:
            raise RuntimeError("LexicalIndex.reweighted must give the index before similarities")
        if texts is not None:
            word, char = self.query_vectors(texts)
        else:
            word, char = _weighted(self.word[rows], self.weights[0]), _weighted(self.char[rows], self.weights[1])
        out = np.empty((word.shape[0], len(self)), dtype=np.float32)
        # The sparse products are nearly dense (char n-grams are shared widely): a few rows at a time.
        step = rows_per_chunk(len(self))
        for i in range(0, word.shape[0], step):
            block = (word[i : i + step] @ self._points[0]).toarray()
            block += (char[i : i + step] @ self._points[1]).toarray()
            out[i : i + step] = 0.5 * block
        return out

    # ----- persistence (npz arrays; no pickle) ------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for name, m in (("word", self.word), ("char", self.char)):
            m = m.tocsr()
            out.update({f"{name}_data": m.data.astype(np.float32), f"{name}_indices": m.indices.astype(np.int32),
                        f"{name}_indptr": m.indptr.astype(np.int64)})
        return out

    @classmethod
    def from_arrays(cls, arrays, n_points: int) -> LexicalIndex:
        parts = [sparse.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
                                   shape=(n_points, N_FEATURES)) for name in ("word", "char")]
        return cls(*parts)


def knn_vote(sims: np.ndarray, point_class: np.ndarray, n_classes: int, k: int, temperature: float) -> np.ndarray:
    """Class probabilities from a similarity-weighted vote of the top-k points (`point_class` < 0: never counted).

    Classes with no point in the top k keep a small score from their nearest point, so every
    class has a non-zero probability.
    """
    return _vote(_neighbours(sims, point_class, n_classes, k), n_classes, temperature)


def _neighbours(sims: np.ndarray, point_class: np.ndarray, n_classes: int, k: int) -> tuple[np.ndarray, ...]:
    """What the vote needs whatever its temperature: per-class best similarity, the top k's similarities and classes."""
    sims = np.where(point_class[None, :] >= 0, sims, -np.inf)
    active = np.flatnonzero(point_class >= 0)
    k = max(1, min(k, len(active)))
    by_class = active[np.argsort(point_class[active], kind="stable")]
    starts = np.searchsorted(point_class[by_class], np.arange(n_classes))
    best = np.maximum.reduceat(sims[:, by_class], starts, axis=1)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return best, np.take_along_axis(sims, top, axis=1), point_class[top]


def _vote(neighbours: tuple[np.ndarray, ...], n_classes: int, temperature: float) -> np.ndarray:
    best, top_sims, top_class = neighbours
    shift = best.max(axis=1, keepdims=True)
    weights = np.exp((top_sims - shift) / temperature)
    vote = np.zeros((len(best), n_classes))
    rows = np.repeat(np.arange(len(best)), top_sims.shape[1])
    np.add.at(vote, (rows, top_class.ravel()), weights.ravel())
    fallback = np.exp((best - shift) / temperature)
    scores = np.where(vote > 0, vote, fallback)
    return scores / scores.sum(axis=1, keepdims=True)


def choose_mix(
    similarities: Callable[[np.ndarray], tuple[np.ndarray | None, np.ndarray | None]],
    queries: np.ndarray,
    point_class: np.ndarray,
    n_classes: int,
    *,
    k: int,
    mixes: Sequence[float] = MIX_GRID,
    temperatures: Sequence[float] = TEMPERATURE_GRID,
) -> tuple[float, float, float]:
    """(mix, temperature, accuracy) with the best leave-one-out kNN accuracy for the query points `queries`.

    `similarities(rows)` gives the (dense, lexical) similarities of points `rows` to every
    point (None: that side is not used); it is called on chunks of `queries`, so memory stays
    bounded on large indexes. Each query's own entry is masked. Ties go to the smaller mean log-loss.
    """
    mixes, temperatures = list(mixes), list(temperatures)
    correct = np.zeros((len(mixes), len(temperatures)))
    loss = np.zeros((len(mixes), len(temperatures)))
    step = rows_per_chunk(len(point_class))
    for start in range(0, len(queries), step):
        chunk = queries[start : start + step]
        dense, lexical = similarities(chunk)
        rows, truth = np.arange(len(chunk)), point_class[chunk]
        for i, mix in enumerate(mixes):
            sims = np.zeros((len(chunk), len(point_class)), dtype=np.float32)
            if dense is not None and mix > 0.0:
                sims += mix * dense
            if lexical is not None and mix < 1.0:
                sims += (1.0 - mix) * lexical
            sims[rows, chunk] = -np.inf  # leave one out
            neighbours = _neighbours(sims, point_class, n_classes, k)
            for j, temperature in enumerate(temperatures):
                proba = _vote(neighbours, n_classes, temperature)
                correct[i, j] += float((proba.argmax(axis=1) == truth).sum())
                loss[i, j] += float(-np.log(np.maximum(proba[rows, truth], 1e-12)).sum())
    # Best accuracy; among equals the smaller log-loss (lexsort: last key first).
    flat = np.lexsort((loss.ravel(), -correct.ravel()))[0]
    i, j = np.unravel_index(flat, correct.shape)
    return float(mixes[i]), float(temperatures[j]), float(correct[i, j] / max(1, len(queries)))


def cv_queries(point_class: np.ndarray, candidates: np.ndarray, n: int = CV_QUERIES, seed: int = 0) -> np.ndarray:
    """Up to `n` leave-one-out query points drawn from `candidates` whose class has another point."""
    counts = np.bincount(point_class[point_class >= 0], minlength=1)
    ok = [i for i in candidates if point_class[i] >= 0 and counts[point_class[i]] > 1]
    rng = np.random.default_rng(seed)
    if len(ok) > n:
        ok = rng.choice(ok, size=n, replace=False)
    return np.sort(np.asarray(ok, dtype=np.int64))


def recall_at_k(truth: Sequence[str], ranked: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 10, 20)) -> dict[int, float]:
    """Share of queries whose true category is among the first k entries of its ranked list.

    `ranked[i]` is query i's retrieved examples' categories (best first; recall@k of
    examples) or its category shortlist (recall@k of the shortlist).
    """
    if len(truth) != len(ranked):
        raise ValueError(f"recall_at_k: {len(truth)} labels but {len(ranked)} ranked lists")
    if not truth:
        return {k: 0.0 for k in ks}
    out = {}
    for k in ks:
        hits = sum(1 for y, r in zip(truth, ranked) if y in list(r)[:k])
        out[k] = hits / len(truth)
    return out
