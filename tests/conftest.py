"""Shared test fixtures: every test runs with its state isolated in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def isolated_session_state(tmp_path_factory: pytest.TempPathFactory):
    """The same for module- and session-scoped fixtures, which run before `isolated_state` (no ~/.cache writes)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("session-home")
    mp.setenv("TAXONOMIST_HOME", str(home))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    yield home
    mp.undo()


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every default location (store, caches) into tmp_path and keep model hubs offline."""
    home = tmp_path / "taxonomist-home"
    monkeypatch.setenv("TAXONOMIST_HOME", str(home))
    monkeypatch.delenv("TAXONOMIST_DB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


# ----- the record store -----------------------------------------------------------------
# Store tests run on a SQLite file in tmp_path, and also on the database named by
# TAXONOMIST_TEST_DB_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/taxonomist_test)
# when it is set. That database is emptied before each test.
_DB_PARAMS = ["sqlite"] + (["env"] if os.environ.get("TAXONOMIST_TEST_DB_URL") else [])


@pytest.fixture(params=_DB_PARAMS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return "sqlite:///" + str(tmp_path / "store.db")
    import sqlalchemy as sa

    url = os.environ["TAXONOMIST_TEST_DB_URL"]
    engine = sa.create_engine(url)
    md = sa.MetaData()
    md.reflect(engine)
    md.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def store(db_url: str):
    from taxonomist.store import Store

    with Store.open(db_url) as s:
        yield s


@pytest.fixture(scope="session")
def small_taxonomy():
    from taxonomist.taxonomy import load_taxonomy

    return load_taxonomy(DATA / "taxonomy_small.yaml")
