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
    onnx = get_embedder("minilm-onnx", cache=False)
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


def test_torch_fp32_matches_onnx_and_bf16_is_close_but_cached_apart():
    onnx = get_embedder("minilm-onnx", cache=False).encode(TEXTS[:2])
    torch32 = get_embedder("minilm-torch", cache=False)
    bf16 = get_embedder("minilm-bf16", cache=False)
    np.testing.assert_allclose(torch32.encode(TEXTS[:2]), onnx, atol=1e-5)
    assert torch32.model_id == get_embedder("minilm-onnx", cache=False).model_id  # the same vectors share a cache
    v = bf16.encode(TEXTS)
    assert v.shape == (3, 384) and v.dtype == np.float32 and bf16.n_encoded == 2
    cosine = (v[:2] * onnx).sum(axis=1)
    assert (cosine > 0.999).all() and (cosine < 1 - 1e-7).all()  # bf16 rounding: close, not equal
    assert bf16.model_id.endswith("@bf16") and bf16.model_id != torch32.model_id


def test_default_minilm_is_fp32_and_bf16_only_when_asked(monkeypatch):
    from taxonomist import embed

    monkeypatch.delenv("TAXONOMIST_EMBED_PRECISION", raising=False)
    monkeypatch.setattr(embed, "cpu_flags", lambda: frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert type(embed.fastest_minilm()) is embed.OnnxEmbedder  # reproducible vectors by default, even with AMX
    monkeypatch.setenv("TAXONOMIST_EMBED_PRECISION", "bf16")
    chosen = embed.fastest_minilm()
    assert isinstance(chosen, embed.TorchEmbedder) and chosen.precision == "bf16"
    monkeypatch.setenv("TAXONOMIST_EMBED_PRECISION", "auto")  # bf16 where the CPU has AMX bf16, else fp32
    assert isinstance(embed.fastest_minilm(), embed.TorchEmbedder)
    monkeypatch.setattr(embed, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))  # no AMX
    assert type(embed.fastest_minilm()) is embed.OnnxEmbedder
    monkeypatch.setenv("TAXONOMIST_EMBED_PRECISION", "fp16")
    with pytest.raises(EngineError, match="TAXONOMIST_EMBED_PRECISION='fp16'"):
        embed.fastest_minilm()
    with pytest.raises(EngineError, match="unknown precision 'int4'"):
        embed.TorchEmbedder(precision="int4")


def test_predict_one_does_not_rebuild_the_manifest(monkeypatch, isolated_state, tmp_path):
    """The API path asks for the model id with every prediction: the manifest is built once, not per call."""
    import importlib.metadata

    from taxonomist.engines import base
    from taxonomist.engines.base import Engine, create_engine, load_engine

    calls = {"manifest": 0, "versions": 0}
    core, version = Engine._manifest_core, importlib.metadata.version

    def counting_core(self, **extra):
        calls["manifest"] += 1
        return core(self, **extra)

    def counting_version(name):
        calls["versions"] += 1
        return version(name)

    monkeypatch.setattr(Engine, "_manifest_core", counting_core)
    monkeypatch.setattr(base.importlib.metadata, "version", counting_version)
    texts = ["my card has not arrived", "where is my new card", "top up by bank transfer", "how do I top up"] * 2
    labels = ["card_arrival", "card_arrival", "top_up", "top_up"] * 2
    engine = create_engine("head", embedder="minilm-onnx").fit(texts, labels)
    first = engine.predict_one("card not here yet")
    for text in ["still no card", "top up failed", "my card", "bank transfer top up"]:
        assert engine.predict_one(text).model_id == first.model_id
    assert calls == {"manifest": 1, "versions": 0}
    engine.set_params(C=5.0)  # a changed parameter is a different model: its id is rebuilt once
    assert engine.model_id != first.model_id and engine.predict_one("my card").model_id == engine.model_id
    assert calls["manifest"] == 2
    engine.save(tmp_path / "m")
    served = load_engine(tmp_path / "m")
    calls.update(manifest=0, versions=0)
    ids = {served.predict_one(t).model_id for t in ["still no card", "top up failed", "my card"]}
    assert ids == {served.model_id} and calls == {"manifest": 0, "versions": 0}


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


# ----- the cache key is keyed (issue 11): no model needed -------------------------------------
class _CountingEmbedder:
    """A tiny real Embedder: vectors from character counts, so the cache is exercised without a model."""

    @staticmethod
    def make(cache):
        from taxonomist.embed import Embedder

        class Counting(Embedder):
            model_id, dim = "counting", 4

            def _encode(self, texts):
                return np.array([[len(t), t.count("a") + 1, t.count("e") + 1, 1] for t in texts], dtype=np.float32)

        return Counting(cache=cache)


def test_cache_keys_are_hmac_under_a_private_installation_secret(tmp_path, isolated_state):
    import hashlib
    import hmac
    import stat

    from taxonomist.embed import cache_secret

    guess = "PATIENT JANE ROE member W123456789"
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    embedder = _CountingEmbedder.make(cache)
    embedder.encode([guess, "another note", guess])
    assert embedder.n_encoded == 2
    secret_file = isolated_state / "cache.key"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "e.sqlite").stat().st_mode) == 0o600
    secret = cache_secret()
    assert len(secret) == 32 and cache_secret() == secret  # created once, then read back
    keys = {k for (k,) in sqlite3.connect(tmp_path / "e.sqlite").execute("SELECT text_key FROM vectors")}
    plain = hashlib.sha256(guess.encode()).hexdigest()
    assert plain not in keys  # a guess cannot be checked by hashing it
    assert hmac.new(secret, guess.encode(), hashlib.sha256).hexdigest() in keys
    dump = "\n".join(sqlite3.connect(tmp_path / "e.sqlite").iterdump())
    assert "JANE" not in dump and plain not in dump
    # Another installation (another secret) does not find this one's entries.
    other = _CountingEmbedder.make(EmbeddingCache(tmp_path / "e.sqlite", secret=b"x" * 32))
    other.encode([guess])
    assert other.n_encoded == 1


def test_a_cache_with_plain_hash_keys_is_dropped(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE embeddings (model_id TEXT, text_hash TEXT, dim INTEGER, vector BLOB)")
    conn.execute("INSERT INTO embeddings VALUES ('counting', 'abc', 4, x'00')")
    conn.commit()
    conn.close()
    EmbeddingCache(path).close()
    tables = {t for (t,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"vectors"}


def test_processes_starting_together_share_one_secret(tmp_path):
    import subprocess

    code = "from taxonomist.embed import cache_secret; print(cache_secret().hex())"
    env = {**__import__("os").environ, "TAXONOMIST_HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, text=True) for _ in range(4)]
    outs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(outs) == 1 and len(outs.pop()) == 64
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["cache.key"]  # no temporary file left
