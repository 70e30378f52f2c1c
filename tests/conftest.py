"""Shared test fixtures: every test runs with its state isolated in a temporary directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# An engine from outside the package, found through its entry point like an installed plugin:
# the contract suite runs it and `taxonomist engines list` shows it.
sys.path.insert(0, str(Path(__file__).parent / "plugins"))


@pytest.fixture(scope="session", autouse=True)
def isolated_session_state(tmp_path_factory: pytest.TempPathFactory):
    """The same for module- and session-scoped fixtures, which run before `isolated_state` (no ~/.cache writes)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("session-home")
    mp.setenv("TAXONOMIST_HOME", str(home))
    # MiniLM's ONNX export (derived from the packaged weights, no record data) is made once per session,
    # not once per test: each test's home is fresh, and the export costs seconds.
    mp.setenv("TAXONOMIST_ONNX_DIR", str(home / "onnx"))
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
# when it is set; `.ci/run` starts a throwaway PostgreSQL cluster and sets it. That database is
# shared: each test holds a lock on it for its whole run (parallel workers or two pytest sessions
# take turns) and starts from an empty schema.
_DB_PARAMS = ["sqlite"] + (["env"] if os.environ.get("TAXONOMIST_TEST_DB_URL") else [])


@contextlib.contextmanager
def _exclusive_use_of(url: str) -> Iterator[None]:
    import fcntl

    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"taxonomist-test-db-{key}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def empty_database(url: str) -> None:
    """Drop everything in the test database (tables, indexes, sequences) so a test starts from nothing."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # A connection an earlier test left open (an unclosed Store, an unfinished
                # generator) can hold a lock that DROP would wait on for ever.
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"
                ))
                conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
                conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(sa.text("CREATE SCHEMA public"))
            else:
                md = sa.MetaData()
                md.reflect(conn)
                md.drop_all(conn)
    finally:
        engine.dispose()


@pytest.fixture(params=_DB_PARAMS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLAlchemy URL of an empty database: a SQLite file in tmp_path, or TAXONOMIST_TEST_DB_URL's."""
    if request.param == "sqlite":
        yield "sqlite:///" + str(tmp_path / "store.db")
        return
    url = os.environ["TAXONOMIST_TEST_DB_URL"]
    with _exclusive_use_of(url):
        empty_database(url)
        yield url


@pytest.fixture
def store(db_url: str):
    from taxonomist.store import Store

    with Store.open(db_url) as s:
        yield s


@pytest.fixture(scope="session")
def small_taxonomy():
    from taxonomist.taxonomy import load_taxonomy

    return load_taxonomy(DATA / "taxonomy_small.yaml")
