"""`taxonomist classify --executor ray`: the same decisions as in-process, made by Ray Data on a laptop or a cluster.

Ray Data reads the input (a .csv, .jsonl or .parquet file, or a folder of them)
in blocks; `map_batches` hands them to a pool of `_Classifier` actors
(`concurrency=(1, N)`: Ray adds actors while there is work, up to N) that each
load the model once and call `Engine.predict_batch` (the one decision path).
The driver takes the decisions as they come and writes them as Parquet parts
and, with a store, to its decision log in batches through `service.ClassifyRun`,
the bookkeeping the in-process path uses. Record text never leaves the
workers' batches: the driver sees ids and decisions only.

Ray's token authentication stays on: a local Ray is started with
RAY_AUTH_MODE=token (Ray makes a token in ~/.ray/auth_token), and a run with
RAY_AUTH_MODE=disabled is refused, because the workers receive record text (PHI).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._extras import require
from .errors import EngineError, RecordError

if TYPE_CHECKING:
    from .service import Classification, LoadedModel
    from .store import Store

__all__ = ["classify_on_ray", "RAY_FORMATS", "PART_ROWS"]

#: Readers of Ray Data by input suffix.
RAY_FORMATS = {".csv": "csv", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet", ".pq": "parquet"}
#: Rows per Parquet part the driver writes (parts stay a few MB; a part is written once it is full).
PART_ROWS = 65_536


def classify_on_ray(
    loaded: LoadedModel,
    input: Path,
    output: Path,
    *,
    store: Store | None = None,
    address: str | None = None,
    text_col: str = "text",
    id_col: str | None = None,
    batch_size: int = 256,
    top_k: int = 3,
    to_review: bool = True,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    progress: Callable[[int], None] = lambda _n: None,
    say: Callable[[str], None] = lambda _m: None,
    warn: Callable[[str], None] = lambda _m: None,
) -> Classification:
    """Classify `input` on Ray into a new folder `output` of Parquet parts; with `store`, log every decision there.

    A Ray already initialised in this process is used as it is; otherwise Ray
    is started at `address` ('auto', 'ray://HOST:PORT') or, with none, locally
    on this machine's CPUs, and shut down at the end. The input needs an id
    column (`id_col`, else 'id'): an id derived from a row needs the whole file
    in one process.
    """
    from .service import ClassifyRun

    kind = _input_kind(input)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise RecordError(f"--output '{output}' exists; --executor ray writes a new folder of Parquet parts: "
                          "choose another --output or delete it")
    _keep_token_auth()
    ray = require("ray", "ray", "classifying with --executor ray")
    require("ray.data", "ray", "classifying with --executor ray")
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 **({} if address else {"num_cpus": os.cpu_count()}))
    try:
        _check_token_auth()
        ray.data.DataContext.get_current().enable_progress_bars = False  # the command reports progress itself
        dataset = _read(ray, input, kind, text_col, id_col or "id")
        cpus = float(ray.cluster_resources().get("CPU", 1))
        most = workers or max(1, int(cpus // cpus_per_worker))
        say(f"classifying {input} on Ray ({'local' if not address else address}, {cpus:g} CPUs): "
            f"up to {most} model copies of {cpus_per_worker:g} CPU each")
        with ClassifyRun(loaded.engine, store=store, to_review=to_review, warn=warn, params={"executor": "ray"}) as run:
            decided = dataset.map_batches(
                _Classifier,
                fn_constructor_kwargs={"model": _pack(loaded.path), "model_id": loaded.model_id, "code_map": run.code_map,
                                       "text_col": text_col, "id_col": id_col or "id", "top_k": top_k,
                                       "keep": store is not None},
                batch_size=batch_size, batch_format="pyarrow", concurrency=(1, most), num_cpus=cpus_per_worker,
            )
            _collect(decided, output, run, progress)
        return run.result
    finally:
        if started_here:
            ray.shutdown()


def _keep_token_auth() -> None:
    """Ask for token authentication before Ray is imported (Ray reads RAY_AUTH_MODE once, on import)."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if mode == "disabled":
        raise EngineError("RAY_AUTH_MODE=disabled: taxonomist sends record text (PHI) to Ray's workers and keeps Ray's "
                          "token authentication on; unset RAY_AUTH_MODE (or set it to 'token') and give the cluster's "
                          "token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    if "ray" not in sys.modules:
        os.environ["RAY_AUTH_MODE"] = "token"
    # Ray imported earlier without it: a local ray.init() turns token authentication on by itself (Ray >= 2.60),
    # and _check_token_auth refuses the run otherwise.


def _check_token_auth() -> None:
    """Refuse to send records to a Ray that runs without token authentication."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:
        raise EngineError("this Ray has no token authentication (Ray >= 2.52 has it); "
                          "run: pip install --upgrade 'taxonomist[ray]'") from None
    if get_authentication_mode() != AuthenticationMode.TOKEN:
        raise EngineError("the Ray this command reaches runs without token authentication; start it with "
                          "RAY_AUTH_MODE=token (see `ray get-auth-token --generate`): the workers receive record text")


def _input_kind(input: Path) -> str:
    if not input.exists():
        raise RecordError(f"input '{input}' does not exist")
    files = [input] if input.is_file() else sorted(p for p in input.rglob("*") if p.is_file() and not p.name.startswith("."))
    kinds = {RAY_FORMATS.get(p.suffix.lower()) for p in files} - {None}
    if len(kinds) != 1:
        found = "none" if not kinds else ", ".join(sorted(k for k in kinds if k))
        raise RecordError(f"--executor ray reads one format per input: .csv, .jsonl or .parquet files (found: {found} "
                          f"in '{input}'); put one format in the folder, or use --executor inprocess for .835")
    return kinds.pop()


def _read(ray: Any, input: Path, kind: str, text_col: str, id_col: str) -> Any:
    import pyarrow as pa

    path = str(input)
    if kind == "csv":
        from pyarrow import csv as pacsv

        # Ids and text stay strings as written ('00123' is not 123); quoted fields may span lines.
        dataset = ray.data.read_csv(
            path, file_extensions=["csv"], parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={text_col: pa.string(), id_col: pa.string()},
                                                 strings_can_be_null=False),
        )
    elif kind == "json":
        dataset = ray.data.read_json(path, file_extensions=["jsonl", "ndjson"])
    else:
        dataset = ray.data.read_parquet(path, file_extensions=["parquet", "pq"])
    columns = list(dataset.schema().names)
    missing = [c for c in (text_col, id_col) if c not in columns]
    if missing:
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise RecordError(
            f"'{input}': column(s) {', '.join(missing)} not found (columns: {shown}); name the text with --text-col and "
            "the ids with --id-col (--executor ray needs an id column: a derived id needs the whole file in one process)"
        )
    return dataset.select_columns([id_col, text_col])


def _pack(model_dir: Path) -> dict[str, bytes]:
    """The model directory's files, so that a worker on another machine loads the same model."""
    return {str(p.relative_to(model_dir)): p.read_bytes() for p in sorted(model_dir.rglob("*")) if p.is_file()}


class _Classifier:
    """One model copy in a Ray actor: rows of a batch become records as the file readers make them, then decisions."""

    def __init__(self, *, model: dict[str, bytes], model_id: str, code_map: Any, text_col: str, id_col: str,
                 top_k: int, keep: bool) -> None:
        from ._private import private_dir, private_file
        from .engines import load_engine

        self._dir = tempfile.TemporaryDirectory(prefix="taxonomist-model-")
        root = private_dir(Path(self._dir.name))
        for name, data in model.items():
            path = root / name
            private_dir(path.parent)
            private_file(path).write_bytes(data)
        self.engine = load_engine(root)
        if self.engine.model_id != model_id:
            raise EngineError(f"the model shipped to a Ray worker loads as {self.engine.model_id}, not {model_id}")
        self.code_map, self.top_k, self.keep = code_map, top_k, keep
        self.roles = {"text": text_col, "id": id_col, "label": None, "date": None, "source": None}

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        from .records import Record, row_to_record
        from .service import output_row

        records: list[Record] = []
        skipped = 0
        for row in batch.to_pylist():
            rec = row_to_record(row, self.roles)
            if isinstance(rec, Record) and rec.id:
                records.append(rec)
            else:
                skipped += 1
        preds = self.engine.predict_batch([r.text for r in records], ids=[r.id for r in records], top_k=self.top_k,
                                          code_map=self.code_map, evidence=self.keep) if records else []
        out: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
        for rec, p in zip(records, preds):
            for k, v in output_row(rec.id, p).items():
                out[k].append(v)
            out["decision"].append(pickle.dumps(p) if self.keep else b"")
        # A batch whose rows were all skipped still says so: one row with an empty id carries the count.
        out["skipped"] = [0] * len(records)
        if skipped:
            for c in _COLUMNS:
                out[c].append(None if c != "decision" else b"")
            out["skipped"].append(skipped)
        return out


_COLUMNS = ("id", "category", "confidence", "reason", "alternatives", "model_id", "taxonomy_version", "decision")


def _collect(decided: Any, output: Path, run: Any, progress: Callable[[int], None]) -> None:
    """Take decisions as Ray makes them: Parquet parts of PART_ROWS rows, and the decision log batch by batch."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ._private import private_dir

    private_dir(output)
    pending: list[pa.Table] = []
    rows = parts = 0
    skipped = 0

    def flush() -> None:
        nonlocal parts, rows
        if pending:
            pq.write_table(pa.concat_tables(pending), output / f"part-{parts:05d}.parquet")
            parts += 1
            pending.clear()
            rows = 0

    for batch in decided.iter_batches(batch_format="pyarrow", batch_size=None):
        skipped += sum(batch.column("skipped").to_pylist())
        batch = batch.filter(pc.is_valid(batch.column("id")))
        if batch.num_rows == 0:
            continue
        ids = batch.column("id").to_pylist()
        if run.store is not None:
            run.log(ids, [pickle.loads(b) for b in batch.column("decision").to_pylist()])
        else:
            run.count(batch.column("category").to_pylist(), batch.column("reason").to_pylist())
        pending.append(batch.drop_columns(["decision", "skipped"]))
        rows += batch.num_rows
        if rows >= PART_ROWS:
            flush()
        progress(run.result.records)
    flush()
    run.result.skipped = skipped
