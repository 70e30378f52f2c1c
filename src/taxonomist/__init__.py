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
    MissingExtraError,
    NotFittedError,
    RecordError,
    StoreError,
    TaxonomistError,
    TaxonomyError,
)
from .prediction import Alternative, Evidence, Prediction
from .taxonomy import ABSTAIN, Category, Change, ChangelogEntry, Crosswalk, Group, Taxonomy, load_crosswalk, load_taxonomy

__version__ = "0.1.0"

__all__ = [
    "ABSTAIN",
    "Alternative",
    "BackendError",
    "BudgetExceededError",
    "Category",
    "Change",
    "ChangelogEntry",
    "ColumnMappingError",
    "Crosswalk",
    "EngineError",
    "Evidence",
    "Group",
    "MissingExtraError",
    "NotFittedError",
    "Prediction",
    "RecordError",
    "StoreError",
    "TaxonomistError",
    "Taxonomy",
    "TaxonomyError",
    "__version__",
    "load_crosswalk",
    "load_taxonomy",
]
