"""Embedders: one seam, normalised float32 vectors, the (model id, text hash) cache, missing extras."""

from __future__ import annotations

import sqlite3
import sys

import numpy as np
import pytest

from taxonomist.embed import EmbeddingCache, OnnxEmbedder, StaticEmbedder, get_embedder, minilm_path
from taxonomist.errors import EngineError, MissingExtraError

pytestmark = pytest.mark.slow

TEXTS = ["My card has not arrived yet.", "How do I top up by bank transfer?", "My card has not arrived yet."]


def test_onnx_vectors_are_normalised_float32_and_match_sentence_transformers():
    onnx = get_embedder("minilm", cache=False)
    v = onnx.encode(TEXTS)
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v[0], v[2])
    assert onnx.n_encoded == 2  # duplicates are embedded once
    reference = get_embedder("minilm-st", cache=False).encode(TEXTS[:2])
    np.testing.assert_allclose(v[:2], reference, atol=1e-4)
    assert float(v[0] @ v[1]) < 0.9  # different texts, different vectors


def test_int8_copy_is_close_to_fp32_and_cached_apart():
    int8 = get_embedder("minilm-int8", cache=False)
    v = int8.encode(TEXTS[:2])
    fp32 = get_embedder("minilm", cache=False).encode(TEXTS[:2])
    assert v.shape == (2, 384) and v.dtype == np.float32
    cosine = (v * fp32).sum(axis=1)
    assert (cosine > 0.99).all() and (cosine < 1 - 1e-6).all()  # close, but not the same vectors
    assert int8.model_id != get_embedder("minilm", cache=False).model_id


def test_cache_embeds_nothing_twice_and_stores_no_text(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    first = get_embedder("minilm", cache=cache)
    a = first.encode(TEXTS)
    assert first.n_encoded == 2 and cache.count(first.model_id) == 2
    again = get_embedder("minilm", cache=EmbeddingCache(tmp_path / "e.sqlite"))  # a re-run: new process, same file
    b = again.encode(list(reversed(TEXTS)) + ["a new sentence"])
    assert again.n_encoded == 1
    np.testing.assert_array_equal(b[:3], a[::-1])
    dump = "\n".join(sqlite3.connect(tmp_path / "e.sqlite").iterdump())
    assert "arrived" not in dump  # keyed by hash; record text (PHI) never stored


def test_default_cache_lives_under_taxonomist_home(isolated_state):
    e = get_embedder("minilm")
    e.encode(["hello"])
    assert e.cache.path.is_relative_to(isolated_state) and e.cache.path.is_file()


def test_empty_input_and_unknown_name():
    assert get_embedder("minilm", cache=False).encode([]).shape == (0, 384)
    with pytest.raises(EngineError, match="unknown embedder 'nope'"):
        get_embedder("nope")


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'taxonomist\[embed\]'"):
        OnnxEmbedder()


def test_static_embedder_averages_token_vectors(tmp_path):
    # A made-up table exercises the inference path; the real one is distilled by the benchmark.
    table = np.random.default_rng(0).normal(size=(30522, 256)).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    e = StaticEmbedder(table_path=tmp_path / "t.npy")
    v = e.encode(["card", "card card", ""])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(v[:2], axis=1), 1.0, atol=1e-5)
    assert not v[2].any()  # no tokens: zero vector, not NaN
    assert minilm_path().is_dir()
