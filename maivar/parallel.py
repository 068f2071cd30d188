"""A process pool for per-file work that a bad file cannot stop.

``guarded_imap(fn, items, ...)`` runs ``fn(item)`` in worker processes over all cores and yields the
results in input order as they become ready (``guarded_map`` collects them in a list). Unlike ``multiprocessing.Pool`` it watches each item on its own:

- an item that runs longer than ``timeout_s`` has its worker killed and becomes ``Failure(TIMEOUT)``;
- an item whose worker dies (a segfault in a decoder, ``os._exit``, the OOM killer) becomes
  ``Failure(CRASHED)``;
- an item whose ``fn`` raises becomes ``Failure(CRASHED)`` with the exception in the detail.

Dead and killed workers are replaced, and every worker is recycled after ``recycle_after`` items so that
leaks in native decoders stay bounded. ``fn`` should catch the errors it expects and return a value
that records them; ``Failure`` is for what it could not catch.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from . import rejections


@dataclass(frozen=True)
class Failure:
    reason: str
    detail: str


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_loop(conn, fn) -> None:
    # A crash is reported as this item's Failure; a faulthandler dump per crashed file would only be noise.
    faulthandler.disable()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        index, item = task
        try:
            conn.send((index, True, fn(item)))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this item's failure
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            tb = traceback.format_exc(limit=3)
            conn.send((index, False, (detail, tb)))


class _Worker:
    def __init__(self, ctx, fn):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, args=(child, fn), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.task: int | None = None
        self.started = 0.0
        self.done = 0

    def send(self, index: int, item: Any) -> None:
        self.task, self.started = index, time.monotonic()
        self.conn.send((index, item))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                self.proc.kill()
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def guarded_imap(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    timeout_s: float = 120.0,
    recycle_after: int = 1000,
    start_method: str | None = None,
    desc: str | None = None,
) -> Iterator[Any]:
    """Yield ``fn(item)`` or a ``Failure`` for each item, in the order of ``items``, as soon as each is ready.

    Only results that wait for an earlier, slower item are held, so memory stays bounded by the work in
    flight, not by the number of items (see the module docstring for timeouts and crashes).
    """
    items = list(items)
    n_workers = max(1, min(workers or default_workers(), len(items) or 1))
    ctx = mp.get_context(start_method)
    ready: dict[int, Any] = {}
    next_out = 0
    pending = deque(range(len(items)))
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=desc is None, mininterval=1.0)
    try:
        while pending or any(w.task is not None for w in pool):
            while len(pool) < n_workers and pending:
                pool.append(_Worker(ctx, fn))
            for w in pool:
                if w.task is None and pending:
                    i = pending.popleft()
                    w.send(i, items[i])
            busy = [w for w in pool if w.task is not None]
            now = time.monotonic()
            wait_s = max(0.0, min(w.started + timeout_s - now for w in busy))
            signalled = set(wait([x for w in busy for x in (w.conn, w.proc.sentinel)], timeout=wait_s))
            for w in busy:
                finished = False
                if w.conn in signalled:
                    try:
                        index, ok, payload = w.conn.recv()
                        ready[index] = payload if ok else Failure(rejections.CRASHED, payload[0])
                        finished = True
                        w.done += 1
                        w.task = None
                    except (EOFError, OSError):
                        pass  # the worker died; handled below
                if not finished and (w.conn in signalled or w.proc.sentinel in signalled) and not w.proc.is_alive():
                    code = w.proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    ready[w.task] = Failure(rejections.CRASHED, f"worker process died ({how})")
                    w.stop(kill=True)
                    pool.remove(w)
                    finished = True
                elif not finished and time.monotonic() - w.started >= timeout_s:
                    ready[w.task] = Failure(rejections.TIMEOUT, f"no result after {timeout_s:g} s; worker killed")
                    w.stop(kill=True)
                    pool.remove(w)
                    finished = True
                if finished:
                    bar.update(1)
                    if w in pool and w.done >= recycle_after:
                        w.stop()
                        pool.remove(w)
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1
    finally:
        for w in pool:
            w.stop(kill=w.task is not None)
        bar.close()


def guarded_map(fn: Callable[[Any], Any], items: Iterable[Any], **kwargs) -> list[Any]:
    """Return ``[fn(item) or Failure, ...]`` in the order of ``items``; the arguments of :func:`guarded_imap`."""
    return list(guarded_imap(fn, items, **kwargs))
