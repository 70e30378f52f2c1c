"""The public surface: pinned names, and a core that imports no heavy library."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import taxonomist

PUBLIC = {
    "ABSTAIN", "Alternative", "BackendError", "BudgetExceededError", "Category", "Change", "ChangelogEntry",
    "ColumnMappingError", "Crosswalk", "EngineError", "Evidence", "Group", "MissingExtraError", "NotFittedError",
    "Prediction", "RecordError", "StoreError", "TaxonomistError", "Taxonomy", "TaxonomyError", "__version__",
    "load_crosswalk", "load_taxonomy",
}

HEAVY = ("torch", "transformers", "sentence_transformers", "llama_cpp", "openai", "onnxruntime", "fastapi")

BLOCKER = textwrap.dedent(
    f"""
    import sys, importlib.abc
    HEAVY = {HEAVY!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named '{{name}}'", name=name)
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_all_is_pinned():
    assert set(taxonomist.__all__) >= PUBLIC
    for name in taxonomist.__all__:
        assert hasattr(taxonomist, name), name


def run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_core_imports_without_heavy_extras():
    result = run_blocked(
        """
        import taxonomist, taxonomist.engines, taxonomist.cli
        from taxonomist.cli import build_app
        build_app()
        loaded = [m for m in sys.modules if m.split('.')[0] in HEAVY]
        assert not loaded, loaded
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_extra_names_the_pip_command():
    result = run_blocked(
        """
        from taxonomist._extras import require
        from taxonomist.errors import MissingExtraError
        try:
            require("sentence_transformers", "embed", "MiniLM embeddings")
        except MissingExtraError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'taxonomist[embed]'" in result.stdout
