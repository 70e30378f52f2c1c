"""The project's one stratified hold-out split (calibration, fine-tuning's validation, the ensemble's weights)."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_split", "stratified_folds"]


def stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator | int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) indices: about `fraction` of each class held out; a class keeps at least one kept example.

    A class with two or more members holds out at least one. Both index arrays
    are sorted. `rng` is a numpy Generator or a seed.
    """
    y = np.asarray(y)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    if fraction <= 0:
        return np.arange(len(y)), np.array([], dtype=int)
    train, val = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_val = min(len(members) - 1, int(round(len(members) * fraction)))
        if len(members) >= 2:
            n_val = max(1, n_val)
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(val, dtype=int))


def stratified_folds(y: np.ndarray, k: int, rng: np.random.Generator | int) -> np.ndarray:
    """The fold (0..k-1) of every example: each class dealt round-robin over the folds from a random start."""
    y = np.asarray(y)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    fold = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        fold[members] = (np.arange(len(members)) + int(rng.integers(k))) % k
    return fold
