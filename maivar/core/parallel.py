"""A process pool for per-file work that a bad file cannot stop.

``guarded_imap(fn, items, ...)`` runs ``fn(item)`` in worker processes over all cores and yields the
results in input order as they become ready (``guarded_map`` collects them in a list). Unlike
``multiprocessing.Pool`` it watches each item on its own, and hands back a
:class:`~maivar.core.rejections.ClipFailure` (yielded, not raised) instead of a result when:

- ``fn`` raises a ``ClipFailure`` (a per-clip problem it recognised): that failure, as raised;
- an item runs longer than ``timeout_s``: its worker is killed, ``ClipFailure(TIMEOUT)``;
- an item's worker dies (a segfault in a decoder, ``os._exit``, the OOM killer): ``ClipFailure(CRASHED)``;
- ``fn`` raises any other exception: ``ClipFailure(CRASHED)`` with the exception in the detail.

Dead and killed workers are replaced, and every worker is recycled after ``recycle_after`` items so that
leaks in native decoders stay bounded.

Workers are started with an explicit multiprocessing start method (:func:`default_start_method`): ``fork`` where
the platform has it (the workers inherit the parent's imports and warm-up instead of paying for them
again), else ``spawn``; ``MAIVAR_START_METHOD=fork|forkserver|spawn`` chooses another. The results do not
depend on it: the pool is tested under all three. ``fn`` and the items must be picklable (module-level
functions, ``functools.partial`` of them) for ``spawn`` and ``forkserver``.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any

from tqdm import tqdm

from . import rejections
from .errors import PipelineError
from .rejections import ClipFailure

PARENT_CHECK_S = 0.5  # how often an idle worker checks that its parent is still alive
START_METHODS = ("fork", "forkserver", "spawn")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_start_method() -> str:
    """The multiprocessing start method for worker processes: ``MAIVAR_START_METHOD`` when set, else ``fork``
    where the platform has it, else ``spawn``. A machine setting: it never changes a result."""
    chosen = os.environ.get("MAIVAR_START_METHOD", "").strip()
    available = mp.get_all_start_methods()
    if chosen:
        if chosen not in START_METHODS or chosen not in available:
            raise PipelineError(f"MAIVAR_START_METHOD is {chosen!r}: this platform offers {', '.join(available)}")
        return chosen
    return "fork" if "fork" in available else "spawn"


def _parent_alive(parent_pid: int, method: str) -> bool:
    if method == "forkserver":
        # The fork server is this process's parent; the pipe the pool's process opened to start it stays
        # open while that process lives (no sibling holds it: they are forked from the server).
        parent = mp.parent_process()
        return parent is None or parent.is_alive()
    # fork and spawn: a process whose parent died is re-parented. (Under fork the start pipe cannot tell:
    # sibling workers forked later inherited its other end.)
    return os.getppid() == parent_pid


def _worker_loop(conn, parent_end, fn, parent_pid: int, method: str) -> None:
    # A crash is reported as this item's failure; a faulthandler dump per crashed file would only be noise.
    faulthandler.disable()
    # Under fork the worker holds both ends of its pipe: close the parent's, or a result sent after the
    # parent died could block forever on a full pipe that this very process keeps open.
    parent_end.close()
    while True:
        try:
            # A SIGKILLed parent never closes the pipe for good under fork (the sibling workers inherited its
            # end), so an idle worker would wait forever as an orphan: watch the parent instead of blocking.
            while not conn.poll(PARENT_CHECK_S):
                if not _parent_alive(parent_pid, method):
                    return
            task = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe, or died (ConnectionResetError)
            return
        if task is None or not _parent_alive(parent_pid, method):  # no more work, or work for a dead parent
            return
        index, item = task
        try:
            result = (index, True, fn(item))
        except ClipFailure as failure:  # a per-clip problem that fn recognised: passed on as it is
            result = (index, False, (failure.reason, failure.detail))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this item's failure
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            result = (index, False, (rejections.CRASHED, detail))
        try:
            conn.send(result)
        except OSError:  # the parent is gone
            return


class _Worker:
    """One worker process and the items sent to it, in order: the first is running, the rest wait in its pipe."""

    def __init__(self, ctx, fn):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop, args=(child, parent, fn, os.getpid(), ctx.get_start_method()),
                                daemon=True)
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
    """Yield ``fn(item)`` or a :class:`ClipFailure` for each item, in the order of ``items``, as soon as each is ready.

    Each worker holds up to ``prefetch`` items beyond the one it runs, so that it never waits for the
    parent (which may be busy, e.g. running a model on the previous results). ``timeout_s`` counts from
    when an item starts running. Only results that wait for an earlier, slower item are held, so memory
    stays bounded by the work in flight, not by the number of items (see the module docstring).
    """
    items = list(items)
    n_workers = max(1, min(workers or default_workers(), len(items) or 1))
    ctx = mp.get_context(start_method or default_start_method())
    ready: dict[int, Any] = {}
    next_out = 0
    pending = deque(range(len(items)))
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=desc is None, mininterval=1.0)

    def drop(w: _Worker, failure: ClipFailure) -> None:
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
                        ready[index] = payload if ok else ClipFailure(*payload)
                        finished = True
                        w.done += 1
                    except (EOFError, OSError):
                        pass  # the worker died; handled below
                if not finished and (w.conn in signalled or w.proc.sentinel in signalled) and not w.proc.is_alive():
                    code = w.proc.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    drop(w, ClipFailure(rejections.CRASHED, f"worker process died ({how})"))
                    finished = True
                elif not finished and time.monotonic() - w.started >= timeout_s:
                    drop(w, ClipFailure(rejections.TIMEOUT, f"no result after {timeout_s:g} s; worker killed"))
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
    """Return ``[fn(item) or ClipFailure, ...]`` in the order of ``items``; the arguments of :func:`guarded_imap`."""
    return list(guarded_imap(fn, items, **kwargs))
