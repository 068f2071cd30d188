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


PARENT_CHECK_S = 0.5  # how often an idle worker checks that its parent is still alive


@dataclass(frozen=True)
class Failure:
    reason: str
    detail: str


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _worker_loop(conn, parent_end, fn) -> None:
    # A crash is reported as this item's Failure; a faulthandler dump per crashed file would only be noise.
    faulthandler.disable()
    # Forked with both ends of its pipe: close the parent's, or a result sent after the parent died could
    # block forever on a full pipe that this very process keeps open.
    parent_end.close()
    parent = os.getppid()
    while True:
        try:
            # A SIGKILLed parent never closes the pipe for good (the sibling workers inherited its end), so an
            # idle worker would wait forever as an orphan: watch the parent instead of blocking in recv().
            while not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent:
                    return
            task = conn.recv()
        except EOFError:
            return
        if task is None or os.getppid() != parent:  # no more work, or queued work for a parent now dead
            return
        index, item = task
        try:
            result = (index, True, fn(item))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this item's failure
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            result = (index, False, (detail, traceback.format_exc(limit=3)))
        try:
            conn.send(result)
        except OSError:  # the parent is gone
            return


class _Worker:
    """One worker process and the items sent to it, in order: the first is running, the rest wait in its pipe."""

    def __init__(self, ctx, fn):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, args=(child, parent, fn), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.tasks: deque[int] = deque()
        self.started = 0.0  # when the running item started (when the one before it finished)
        self.done = 0

    def send(self, index: int, item: Any) -> None:
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(index)
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
    prefetch: int = 1,
    start_method: str | None = None,
    desc: str | None = None,
) -> Iterator[Any]:
    """Yield ``fn(item)`` or a ``Failure`` for each item, in the order of ``items``, as soon as each is ready.

    Each worker holds up to ``prefetch`` items beyond the one it runs, so that it never waits for the
    parent (which may be busy, e.g. running a model on the previous results). ``timeout_s`` counts from
    when an item starts running. Only results that wait for an earlier, slower item are held, so memory
    stays bounded by the work in flight, not by the number of items (see the module docstring).
    """
    items = list(items)
    n_workers = max(1, min(workers or default_workers(), len(items) or 1))
    ctx = mp.get_context(start_method)
    ready: dict[int, Any] = {}
    next_out = 0
    pending = deque(range(len(items)))
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=desc is None, mininterval=1.0)

    def drop(w: _Worker, failure: Failure) -> None:
        """The running item fails; the worker is killed; the items queued behind it go back to the front."""
        ready[w.tasks.popleft()] = failure
        pending.extendleft(reversed(w.tasks))
        w.stop(kill=True)
        pool.remove(w)

    try:
        while pending or any(w.tasks for w in pool):
            while len(pool) < n_workers and pending:
                pool.append(_Worker(ctx, fn))
            for w in list(pool):
                while pending and len(w.tasks) <= prefetch and w.done + len(w.tasks) < recycle_after:
                    i = pending.popleft()
                    try:
                        w.send(i, items[i])
                    except OSError:  # the worker died since the last look (BrokenPipeError)
                        w.tasks.pop()
                        pending.appendleft(i)
                        if not w.tasks:  # nothing ran there to blame: replace it
                            w.stop(kill=True)
                            pool.remove(w)
                        break  # else its death is seen below and blamed on its running item
            busy = [w for w in pool if w.tasks]
            if not busy:
                continue  # a dead worker was replaced before it got work: fill again
            now = time.monotonic()
            wait_s = max(0.0, min(w.started + timeout_s - now for w in busy))
            signalled = set(wait([x for w in busy for x in (w.conn, w.proc.sentinel)], timeout=wait_s))
            for w in busy:
                finished = False
                if w.conn in signalled:
                    try:
                        index, ok, payload = w.conn.recv()
                        assert index == w.tasks[0], "a worker answered out of order"
                        w.tasks.popleft()
                        w.started = time.monotonic()
                        ready[index] = payload if ok else Failure(rejections.CRASHED, payload[0])
                        finished = True
                        w.done += 1
                    except (EOFError, OSError):
                        pass  # the worker died; handled below
                if not finished and (w.conn in signalled or w.proc.sentinel in signalled) and not w.proc.is_alive():
                    code = w.proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    drop(w, Failure(rejections.CRASHED, f"worker process died ({how})"))
                    finished = True
                elif not finished and time.monotonic() - w.started >= timeout_s:
                    drop(w, Failure(rejections.TIMEOUT, f"no result after {timeout_s:g} s; worker killed"))
                    finished = True
                if finished:
                    bar.update(1)
                    if w in pool and not w.tasks and w.done >= recycle_after:
                        w.stop()
                        pool.remove(w)
            while next_out in ready:
                yield ready.pop(next_out)
                next_out += 1
    finally:
        for w in pool:
            w.stop(kill=bool(w.tasks))
        bar.close()


def guarded_map(fn: Callable[[Any], Any], items: Iterable[Any], **kwargs) -> list[Any]:
    """Return ``[fn(item) or Failure, ...]`` in the order of ``items``; the arguments of :func:`guarded_imap`."""
    return list(guarded_imap(fn, items, **kwargs))
