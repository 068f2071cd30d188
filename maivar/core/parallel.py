"""A process pool for per-file work that a bad file cannot stop.

``guarded_imap(fn, items, ...)`` runs ``fn(item)`` in worker processes over all cores and yields the
results in input order as they become ready (``guarded_map`` collects them in a list). Unlike
``multiprocessing.Pool`` it watches each item on its own, and hands back a
:class:`~maivar.core.rejections.ClipFailure` (yielded, not raised) instead of a result when:

- ``fn`` raises a ``ClipFailure`` (a per-clip problem it recognized): that failure, as raised;
- an item runs longer than ``timeout_s``: its worker is killed, ``ClipFailure(TIMEOUT)``;
- an item's worker dies (a segfault in a decoder, ``os._exit``, the OOM killer): ``ClipFailure(CRASHED)``;
- ``fn`` raises any other exception: ``ClipFailure(CRASHED)`` with the exception in the detail.

Dead and killed workers are replaced (the items queued behind the one that failed go to another worker), and
every worker is recycled after ``recycle_after`` items so that leaks in native decoders stay bounded.

Memory. Items are dispatched in input order, and never more than ``window`` past the oldest item not yet
yielded (:func:`reorder_window`: by default each worker's running and prefetched items plus one). A result
that finishes before an earlier, slower item is held until that one is yielded, so at most ``window`` results
are held at once, whatever the number of items and however long an item hangs: when the oldest item hangs, the
workers finish what they hold and wait (up to ``timeout_s``, counted from when it started) instead of
piling up results behind it. The consumer sets the pace too: nothing is dispatched or collected while it
works on a result (the generator is suspended), beyond what the workers already hold.

Shared memory. With ``shared_bytes``, a result that is a numpy array of at most that many bytes does not travel
pickled through the worker's pipe: the worker writes it into the item's slot of a :class:`SlotRing`
(``window`` slots, one per item in the window: item ``i`` owns slot ``i % window`` from its dispatch until the
consumer asks for the item after it) and sends only its shape and dtype; the consumer gets a read-only view of
the slot, valid until it asks for the next result (copy what it keeps). ``fn`` can also write its array
straight into the slot: :func:`shared_array`. A worker killed while it writes (a crash, a timeout) damages only
its own item's slot, whose item is then a failure and whose slot is given out again only after that worker is
dead and the item yielded. See :mod:`maivar.core.shared_slots` for what happens to the memory when the parent
is killed (nothing is left behind).

Workers are started with an explicit multiprocessing start method (:func:`default_start_method`): ``fork`` where
the platform has it (the workers inherit the parent's imports and warm-up instead of paying for them
again), else ``spawn``; ``MAIVAR_START_METHOD=fork|forkserver|spawn`` chooses another. The results do not
depend on it: the pool is tested under all three. ``fn`` and the items must be picklable (module-level
functions, ``functools.partial`` of them) for ``spawn`` and ``forkserver``. Workers end by themselves when
their parent dies.
"""

from __future__ import annotations

import faulthandler
import heapq
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import numpy as np
from tqdm import tqdm

from . import rejections
from .errors import PipelineError
from .rejections import ClipFailure
from .shared_slots import SlotRing

log = logging.getLogger(__name__)

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


def reorder_window(workers: int, *, prefetch: int = 1, batch: int = 1) -> int:
    """The default ``window`` of :func:`guarded_imap`: what the workers hold (each its running item and
    ``prefetch`` more) plus ``batch`` (a consumer that gathers results into batches passes its batch size)."""
    return max(1, workers) * (max(0, prefetch) + 1) + max(1, batch)


@dataclass
class PoolStats:
    """What a :func:`guarded_imap` run held at most (pass one as ``stats`` to have it filled)."""

    max_held: int = 0  # results received and not yet yielded, at once
    max_outstanding: int = 0  # items dispatched and not yet yielded (the window), at once
    window: int = 0
    shared: bool = False  # results traveled through shared memory


@dataclass(frozen=True)
class _InSlot:
    """A result that the worker left in its item's slot."""

    shape: tuple[int, ...]
    dtype: str


# In a worker, while an item runs: the ring and that item's slot (see shared_array).
_current: tuple[SlotRing, int] | None = None
_handed_out: np.ndarray | None = None


def shared_array(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    """An uninitialized array for ``fn``'s result. In a :func:`guarded_imap` worker with ``shared_bytes`` room
    for it, it lies in the running item's shared-memory slot, so that returning it costs no copy; anywhere
    else, a plain ``np.empty``."""
    global _handed_out
    if _current is not None:
        ring, slot = _current
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if np.dtype(dtype) != object and nbytes <= ring.slot_bytes:
            _handed_out = ring.array(slot, tuple(shape), dtype)
            return _handed_out
    return np.empty(shape, dtype=dtype)


def _to_slot(result: Any, ring: SlotRing | None, slot: int | None) -> Any:
    """A worker's result as it travels: an array that fits the item's slot is left there (written, unless
    ``fn`` wrote it there itself through :func:`shared_array`); anything else goes pickled."""
    if ring is None or slot is None or not isinstance(result, np.ndarray) or result.dtype == object \
            or result.nbytes > ring.slot_bytes:
        return result
    if result is not _handed_out:
        ring.array(slot, result.shape, result.dtype)[...] = result
    return _InSlot(tuple(result.shape), result.dtype.str)


def _parent_alive(parent_pid: int, method: str) -> bool:
    if method == "forkserver":
        # The fork server is this process's parent; the pipe the pool's process opened to start it stays
        # open while that process lives (no sibling holds it: they are forked from the server).
        parent = mp.parent_process()
        return parent is None or parent.is_alive()
    # fork and spawn: a process whose parent died is re-parented. (Under fork the start pipe cannot tell:
    # sibling workers forked later inherited its other end.)
    return os.getppid() == parent_pid


def _one_core() -> None:
    """A worker is one process on one core: torch's intra-op pool to one thread, whatever the parent set.

    Under fork this is also what keeps the worker alive: a parent that already ran a parallel torch op (an
    OpenMP team of several threads) hands its children a pool they cannot use, and the child's first parallel
    op then waits forever on a lock of a thread that does not exist in it. With one thread torch never enters
    that pool. (torch is only configured where it is already imported: importing it costs a worker seconds.)"""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _worker_loop(conn, parent_end, fn, parent_pid: int, method: str, ring: SlotRing | None = None) -> None:
    global _current, _handed_out
    # A crash is reported as this item's failure; a faulthandler dump per crashed file would only be noise.
    faulthandler.disable()
    _one_core()
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
        index, item, slot = task
        _current = (ring, slot) if ring is not None and slot is not None else None
        try:
            result = (index, True, _to_slot(fn(item), ring, slot))
        except ClipFailure as failure:  # a per-clip problem that fn recognized: passed on as it is
            result = (index, False, (failure.reason, failure.detail))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as this item's failure
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            result = (index, False, (rejections.CRASHED, detail))
        finally:
            _current = _handed_out = None
        try:
            conn.send(result)
        except OSError:  # the parent is gone
            return


class _Worker:
    """One worker process and the items sent to it, in order: the first is running, the rest wait in its pipe."""

    def __init__(self, ctx, fn, ring: SlotRing | None):
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_loop,
                                args=(child, parent, fn, os.getpid(), ctx.get_start_method(), ring), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.tasks: deque[int] = deque()
        self.started = 0.0  # when the running item started (when the one before it finished)
        self.done = 0

    def send(self, index: int, item: Any, slot: int | None) -> None:
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(index)
        self.conn.send((index, item, slot))

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


def _make_ring(n_slots: int, slot_bytes: int) -> SlotRing | None:
    try:
        return SlotRing(n_slots, slot_bytes)
    except OSError as exc:  # no room for it: the results go pickled through the pipes, as without shared_bytes
        log.warning("no shared memory for %d x %d bytes (%s): results go through pipes", n_slots, slot_bytes, exc)
        return None


def guarded_imap(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    *,
    workers: int | None = None,
    timeout_s: float = 120.0,
    recycle_after: int = 1000,
    prefetch: int = 1,
    window: int | None = None,
    shared_bytes: int = 0,
    start_method: str | None = None,
    desc: str | None = None,
    stats: PoolStats | None = None,
) -> Iterator[Any]:
    """Yield ``fn(item)`` or a :class:`ClipFailure` for each item, in the order of ``items``, as soon as each is ready.

    Each worker holds up to ``prefetch`` items beyond the one it runs, so that it never waits for the
    parent (which may be busy, e.g. running a model on the previous results). ``timeout_s`` counts from
    when an item starts running. No item is dispatched ``window`` or more places after the oldest one not yet
    yielded (default :func:`reorder_window`), so at most ``window`` results are held however long an item
    hangs. With ``shared_bytes``, array results of at most that many bytes come through shared memory as
    read-only views valid until the next result is asked for (see the module docstring). ``stats``, when
    given, is filled with what was held at most.
    """
    items = list(items)
    recycle_after = max(1, recycle_after)
    n_workers = max(1, min(workers or default_workers(), len(items) or 1))
    window = max(1, min(window or reorder_window(n_workers, prefetch=prefetch), len(items) or 1))
    ctx = mp.get_context(start_method or default_start_method())
    stats = stats if stats is not None else PoolStats()
    stats.window = window
    ring = _make_ring(window, shared_bytes) if shared_bytes > 0 and items else None
    stats.shared = ring is not None
    ready: dict[int, Any] = {}
    next_out = 0
    pending = list(range(len(items)))  # a heap: the earliest item goes first, re-queued ones included
    dispatched = 0  # one past the latest item dispatched
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=desc is None, mininterval=1.0)

    def drop(w: _Worker, failure: ClipFailure) -> None:
        """The running item fails; the worker is killed; the items queued behind it go back to be dispatched."""
        ready[w.tasks.popleft()] = failure
        for i in w.tasks:
            heapq.heappush(pending, i)
        w.stop(kill=True)  # joined: it writes no slot any more
        pool.remove(w)

    try:
        while True:
            stats.max_held = max(stats.max_held, len(ready))
            while next_out in ready:
                result = ready.pop(next_out)
                if isinstance(result, _InSlot):
                    result = ring.array(next_out % window, result.shape, result.dtype, writable=False)
                yield result
                next_out += 1  # the slot of the item just yielded is free again
            if next_out >= len(items):
                break
            while len(pool) < n_workers and pending:
                pool.append(_Worker(ctx, fn, ring))
            for w in list(pool):
                while (pending and pending[0] < next_out + window and len(w.tasks) <= prefetch
                       and w.done + len(w.tasks) < recycle_after):
                    i = heapq.heappop(pending)
                    try:
                        w.send(i, items[i], i % window if ring is not None else None)
                    except OSError:  # the worker died since the last look (BrokenPipeError)
                        w.tasks.pop()
                        heapq.heappush(pending, i)
                        if not w.tasks:  # nothing ran there to blame: replace it
                            w.stop(kill=True)
                            pool.remove(w)
                        break  # else its death is seen below and blamed on its running item
                    dispatched = max(dispatched, i + 1)
                    stats.max_outstanding = max(stats.max_outstanding, dispatched - next_out)
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
    finally:
        for w in pool:
            w.stop(kill=bool(w.tasks))
        if ring is not None:
            ring.close()
        bar.close()


def guarded_map(fn: Callable[[Any], Any], items: Iterable[Any], **kwargs) -> list[Any]:
    """Return ``[fn(item) or ClipFailure, ...]`` in the order of ``items``; the arguments of :func:`guarded_imap`
    (results that came through shared memory are copied out of it)."""
    if kwargs.get("shared_bytes"):
        return [np.array(r) if isinstance(r, np.ndarray) else r for r in guarded_imap(fn, items, **kwargs)]
    return list(guarded_imap(fn, items, **kwargs))
