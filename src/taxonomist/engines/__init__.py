"""Classification engines: one contract, many implementations."""

from .base import ENGINES, Engine, Manifest, create_engine, load_engine, register_engine
from .calibration import Calibrator, calibrate
from .tfidf import TfidfEngine

__all__ = [
    "ENGINES",
    "Engine",
    "Manifest",
    "create_engine",
    "load_engine",
    "register_engine",
    "Calibrator",
    "calibrate",
    "TfidfEngine",
    "KnnEngine",
    "HeadEngine",
]

# Engines over embeddings load on first use (their modules are light, their models are not).
_LAZY = {"KnnEngine": ".knn", "HeadEngine": ".head"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
