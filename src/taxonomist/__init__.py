"""taxonomist: sort free-text records into your own taxonomy, and measure whether prompting or fine-tuning pays.

`import taxonomist` needs only the core dependencies. Engines that need torch,
sentence-transformers or llama.cpp import them when used, and say which extra
to install when they are missing.
"""

from .errors import (
    BackendError,
    BudgetExceededError,
    ColumnMappingError,
    EngineError,
    ExperimentError,
    MissingExtraError,
    NotFittedError,
    RecordError,
    StoreError,
    TaxonomistError,
    TaxonomyError,
)
from .prediction import Alternative, Evidence, Prediction
from .records import ColumnMapping, ImportResult, Record, Reject, read_records, write_rejects
from .taxonomy import ABSTAIN, Category, Change, ChangelogEntry, Crosswalk, Group, Taxonomy, load_crosswalk, load_taxonomy

__version__ = "0.1.0"


def __getattr__(name: str):
    # The store pulls in SQLAlchemy's ORM (~0.7 s); load it on first use so the CLI starts fast.
    if name == "Store":
        from .store import Store

        return Store
    raise AttributeError(f"module 'taxonomist' has no attribute {name!r}")

__all__ = [
    "ABSTAIN",
    "Alternative",
    "BackendError",
    "BudgetExceededError",
    "Category",
    "Change",
    "ChangelogEntry",
    "ColumnMapping",
    "ColumnMappingError",
    "Crosswalk",
    "EngineError",
    "ExperimentError",
    "Evidence",
    "Group",
    "ImportResult",
    "MissingExtraError",
    "NotFittedError",
    "Prediction",
    "Record",
    "RecordError",
    "Reject",
    "Store",
    "StoreError",
    "TaxonomistError",
    "Taxonomy",
    "TaxonomyError",
    "__version__",
    "load_crosswalk",
    "load_taxonomy",
    "read_records",
    "write_rejects",
]
