"""The one exception tree of taxonomist.

    TaxonomistError
    ├── MissingExtraError          an optional dependency is not installed
    ├── TaxonomyError              a taxonomy document or operation is invalid
    ├── RecordError                an input file or row cannot be read
    │   └── ColumnMappingError     a mapped column is absent from the file
    ├── StoreError                 the record store cannot do what was asked
    ├── EngineError                an engine cannot fit, predict, save or load
    │   └── NotFittedError         predict before fit
    ├── BackendError               an LLM backend call failed after its retries
    │   └── BudgetExceededError    the configured spending cap was reached
    └── ExperimentError            a comparison cannot run as configured (data, prices)

User-facing messages say what was found, what was expected and how to fix it.
They never contain record text (protected health information).
"""

from __future__ import annotations

__all__ = [
    "TaxonomistError",
    "MissingExtraError",
    "TaxonomyError",
    "RecordError",
    "ColumnMappingError",
    "StoreError",
    "EngineError",
    "NotFittedError",
    "BackendError",
    "BudgetExceededError",
    "ExperimentError",
]


class TaxonomistError(Exception):
    """Base of every error taxonomist raises on purpose."""


class MissingExtraError(TaxonomistError, ImportError):
    """An optional dependency is missing; the message names the pip command."""

    def __init__(self, module: str, extra: str, purpose: str = "") -> None:
        self.module = module
        self.extra = extra
        what = f" for {purpose}" if purpose else ""
        super().__init__(
            f"'{module}' is needed{what} but is not installed; "
            f"run: pip install 'taxonomist[{extra}]'"
        )


class TaxonomyError(TaxonomistError, ValueError):
    """A taxonomy document, crosswalk or operation is invalid."""


class RecordError(TaxonomistError, ValueError):
    """An input file cannot be read as records."""


class ColumnMappingError(RecordError):
    """A column named in the mapping is not in the file."""


class StoreError(TaxonomistError):
    """The record store cannot do what was asked."""


class EngineError(TaxonomistError):
    """An engine cannot fit, predict, save or load."""


class NotFittedError(EngineError, AttributeError):
    """The engine was used before `fit`."""


class BackendError(TaxonomistError):
    """An LLM backend call failed after its retries."""


class BudgetExceededError(BackendError):
    """The spending cap configured for a run was reached; the run stops cleanly."""


class ExperimentError(TaxonomistError, ValueError):
    """A comparison cannot run as configured: unusable data, a bad price table, an unknown engine."""
