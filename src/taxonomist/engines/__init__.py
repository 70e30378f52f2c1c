"""Classification engines: one contract, many implementations."""

from .base import ENGINES, Engine, Manifest, create_engine, load_engine, register_engine

__all__ = ["ENGINES", "Engine", "Manifest", "create_engine", "load_engine", "register_engine"]
