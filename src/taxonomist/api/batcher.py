"""Micro-batching: concurrent classify requests gathered into one model call, made by one worker thread.

Requests arriving within `max_wait_ms` of the first one share a call of up to
`max_batch` records; a request is never split. Other work that touches the
model (adding a reviewed example to the index, a fresh suggestion for the
review page) runs in the same thread between batches, so the model is never
used by two threads at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job:
    items: Sequence[Any] | None  # items to classify; None for a call
    future: Future = field(default_factory=Future)
    call: Callable[[], Any] | None = None


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Runs `handle(items) -> results` (one result per item, in order) for gathered submissions.

    `max_batch=1` or `enabled=False` handles each submission alone.
    """

    def __init__(self, handle: Callable[[list[T]], list[R]], *, max_batch: int = 64, max_wait_ms: float = 5.0,
                 enabled: bool = True) -> None:
        self.handle = handle
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.enabled = enabled
        self.batches = 0  # calls of `handle` so far
        self.items = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="taxonomist-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, items: Sequence[T]) -> Future:
        """A future of the results for `items`."""
        if self._thread is None:
            raise RuntimeError("the batcher is not running (start it first)")
        job = _Job(list(items))
        self._queue.put(job)
        return job.future

    def call(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` in the worker thread, between batches."""
        if self._thread is None:
            raise RuntimeError("the batcher is not running (start it first)")
        job = _Job(None, call=fn)
        self._queue.put(job)
        return job.future

    # ----- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[Any] = []  # taken from the queue while gathering, handled next
        while True:
            first = pending.pop(0) if pending else self._queue.get()
            if first is _STOP:
                self._drain_cancelled(pending)
                return
            if first.call is not None:
                self._run_call(first)
                continue
            jobs = [first]
            size = len(first.items)
            if self.enabled and self.max_batch > 1:
                deadline = time.monotonic() + self.max_wait
                while size < self.max_batch:
                    remaining = deadline - time.monotonic()
                    try:
                        nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or nxt.call is not None or size + len(nxt.items) > self.max_batch:
                        pending.append(nxt)
                        break
                    jobs.append(nxt)
                    size += len(nxt.items)
            self._run_batch(jobs)

    def _run_call(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.call())  # type: ignore[misc]
        except BaseException as exc:  # handed to the caller
            job.future.set_exception(exc)

    def _run_batch(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        items = [x for j in jobs for x in j.items]  # type: ignore[union-attr]
        try:
            results = self.handle(items)
            if len(results) != len(items):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(items)} items")
        except BaseException as exc:
            for j in jobs:
                j.future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(items)
        start = 0
        for j in jobs:
            n = len(j.items)  # type: ignore[arg-type]
            j.future.set_result(results[start : start + n])
            start += n

    def _drain_cancelled(self, pending: list[Any]) -> None:
        while True:
            try:
                pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for job in pending:
            if job is not _STOP:
                job.future.cancel()
