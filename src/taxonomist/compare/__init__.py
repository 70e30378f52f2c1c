"""The decision harness: run every engine through the same experiments and write the report.

`run_compare` answers, with the user's own data, how many examples each approach
needs, how accuracy holds up over time, what taxonomy changes cost, and what
each approach costs per month at a given volume.
"""

from .costs import CostModel, PriceTable, break_even_volume, load_prices
from .dataset import Dataset, load_dataset
from .experiments import ALL, Comparison, EngineSpec, Settings
from .harness import RESULTS, run_compare
from .report import write_report
from .runlog import EvalRun, RunLog

__all__ = [
    "ALL",
    "Comparison",
    "CostModel",
    "Dataset",
    "EngineSpec",
    "EvalRun",
    "PriceTable",
    "RESULTS",
    "RunLog",
    "Settings",
    "break_even_volume",
    "load_dataset",
    "load_prices",
    "run_compare",
    "write_report",
]
