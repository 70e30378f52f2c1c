"""Import every engine module so that each registers itself."""

# Each engine module imports its heavy dependencies lazily, inside fit/load, so
# importing them here stays cheap. Add new engine modules to this list.
import importlib

for _module in ("tfidf", "knn", "head", "finetune", "ensemble", "llm", "cascade"):
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as exc:  # module not written yet
        if exc.name != f"{__package__}.{_module}":
            raise
