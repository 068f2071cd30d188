import functools
import gc
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from maivar.core import parallel, rejections
from maivar.core.parallel import START_METHODS, PoolStats, guarded_imap, guarded_map, reorder_window, shared_array
from maivar.core.rejections import ClipFailure


def _work(x):
    if x == "hang":
        time.sleep(60)
    if x == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == "raise":
        raise ValueError("bad item\nsecond line")
    if x == "reject":
        raise ClipFailure(rejections.DECODE_FAILED, "bad bytes")
    return x * 2


def test_results_in_input_order():
    items = list(range(20))
    assert guarded_map(_work, items, workers=2, timeout_s=30) == [x * 2 for x in items]


def test_hung_item_is_killed_and_the_rest_complete():
    t0 = time.monotonic()
    out = guarded_map(_work, [1, "hang", 2, 3], workers=2, timeout_s=2)
    assert time.monotonic() - t0 < 30
    assert out[0] == 2 and out[2] == 4 and out[3] == 6
    assert isinstance(out[1], ClipFailure) and out[1].reason == rejections.TIMEOUT


def test_crashing_worker_fails_only_its_item():
    out = guarded_map(_work, [1, "segv", 2, 3, 4], workers=2, timeout_s=30)
    assert [out[i] for i in (0, 2, 3, 4)] == [2, 4, 6, 8]
    assert isinstance(out[1], ClipFailure) and out[1].reason == rejections.CRASHED
    assert "signal 11" in out[1].detail


def test_exception_becomes_one_line_failure():
    out = guarded_map(_work, ["raise", 5], workers=1, timeout_s=30)
    assert out[1] == 10
    assert out[0] == ClipFailure(rejections.CRASHED, "ValueError: bad item")


def test_a_clip_failure_raised_by_the_worker_keeps_its_reason():
    out = guarded_map(_work, ["reject", 1], workers=1, timeout_s=30)
    assert out == [ClipFailure(rejections.DECODE_FAILED, "bad bytes"), 2]
    assert out[0].rejection("v1") == rejections.Rejection("v1", rejections.DECODE_FAILED, "bad bytes")


def test_workers_are_recycled_and_spawn_works():
    out = guarded_map(_pid, list(range(6)), workers=1, recycle_after=2,
                      timeout_s=30, start_method="spawn")
    assert len(set(out)) == 3  # 6 items, a fresh worker every 2


def _pid(_):
    return os.getpid()


def test_empty_input():
    assert guarded_map(_work, [], timeout_s=1) == []


def test_imap_yields_in_order_while_running():
    seen = []
    for value in guarded_imap(_work, [1, 2, 3, 4], workers=2, timeout_s=30):
        seen.append(value)
    assert seen == [2, 4, 6, 8]


def test_items_queued_behind_a_hung_or_crashed_item_are_not_lost():
    """With prefetch, items wait in a worker's pipe: killing that worker must re-queue them, not fail them."""
    items = [1, "hang", 2, 3, "segv", 4, 5, 6]
    out = guarded_map(_work, items, workers=1, timeout_s=2, prefetch=3)
    assert out[1].reason == rejections.TIMEOUT and out[4].reason == rejections.CRASHED
    assert [out[i] for i in (0, 2, 3, 5, 6, 7)] == [2, 4, 6, 8, 10, 12]


def test_timeout_counts_from_when_an_item_starts_running():
    """Items queued behind slow-but-finishing ones must not time out while they wait."""
    out = guarded_map(_sleep_then_double, [0.8, 0.8, 0.8, 0.8], workers=1, timeout_s=1.5, prefetch=3)
    assert out == [1.6, 1.6, 1.6, 1.6]


def _sleep_then_double(x):
    time.sleep(x)
    return x * 2


@pytest.mark.parametrize("method", START_METHODS)
def test_every_start_method_gives_the_same_results_and_survives_hangs_and_crashes(method):
    """The pool does not rely on fork: under forkserver and spawn the workers start from scratch, and the
    failures (hung, crashed, raising items) come back the same."""
    items = [1, "hang", 2, "segv", "reject", 3]
    out = guarded_map(_work, items, workers=2, timeout_s=3, start_method=method)
    assert [out[i] for i in (0, 2, 5)] == [2, 4, 6]
    assert [out[i].reason for i in (1, 3, 4)] == [rejections.TIMEOUT, rejections.CRASHED, rejections.DECODE_FAILED]


def test_start_method_comes_from_the_environment(monkeypatch):
    from maivar.core.errors import PipelineError
    from maivar.core.parallel import default_start_method

    monkeypatch.delenv("MAIVAR_START_METHOD", raising=False)
    assert default_start_method() == "fork"  # Linux: explicit, whatever Python's own default becomes
    monkeypatch.setenv("MAIVAR_START_METHOD", "spawn")
    assert default_start_method() == "spawn"
    monkeypatch.setenv("MAIVAR_START_METHOD", "threads")
    with pytest.raises(PipelineError, match="MAIVAR_START_METHOD"):
        default_start_method()


def _finish_and_log(log: str, x):
    """Hang on "hang"; else note in ``log`` that the item finished (a record the parent cannot influence)."""
    if x == "hang":
        time.sleep(60)
    with open(log, "a") as fh:
        fh.write(f"{x}\n")
    return x


@pytest.mark.parametrize("window", [None, 1000])
def test_a_hung_item_holds_back_at_most_the_window(tmp_path, window):
    """While the oldest item hangs (until its timeout), the pool stops dispatching once ``window`` items are
    outstanding, instead of running every later item and holding all their results. Without the window (1000
    here) nearly all of the 60 fast items finish during the hang."""
    log = tmp_path / "finished.txt"
    log.touch()
    items = [0, "hang", *range(1, 61)]
    stats = PoolStats()
    finished_during_hang = None
    out = []
    for result in guarded_imap(functools.partial(_finish_and_log, str(log)), items, workers=2, timeout_s=3,
                               window=window, stats=stats):
        if isinstance(result, ClipFailure):  # the hung item, resolved: what ran meanwhile is on record
            finished_during_hang = len(log.read_text().split()) - 1  # item 0 finished before the hang began
        out.append(result)
    assert out[0] == 0 and out[1].reason == rejections.TIMEOUT and out[2:] == list(range(1, 61))
    if window is None:
        assert stats.window == reorder_window(2) == 5
        assert finished_during_hang <= stats.window - 1  # the items after the hung one, inside its window
        assert stats.max_held <= stats.window and stats.max_outstanding <= stats.window
    else:
        assert finished_during_hang >= 55 and stats.max_held >= 55  # the unbounded behavior, for contrast


def test_a_window_of_one_runs_one_item_at_a_time_in_order():
    stats = PoolStats()
    assert guarded_map(_work, [1, "hang", 2, "segv", 3], workers=3, timeout_s=2, window=1, stats=stats) [::2] \
        == [2, 4, 6]
    assert stats.max_outstanding == 1 and stats.max_held == 1


SHAPE = (3, 16, 16)


def _frames(x):
    """Arrays through shared memory: written by the pool ("copied") or straight into the slot ("in place");
    a worker that dies half-way through writing its slot ("scribble"); a result too big for a slot, or not an
    array at all, goes pickled."""
    kind, value = x
    if kind == "scribble":
        out = shared_array(SHAPE)
        out[0] = 255  # half-written ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... and killed
    if kind in ("hang", "segv", "raise", "reject"):
        return _work(kind)
    if kind == "in place":
        out = shared_array(SHAPE)
        out[...] = value
        return out
    if kind == "big":
        return np.full((2, *SHAPE), value, dtype=np.uint8)
    if kind == "text":
        return f"v{value}"
    return np.full(SHAPE, value, dtype=np.uint8)


def _frame_items():
    items = [("copied", 1), ("scribble", 0), ("in place", 2), ("hang", 0), ("copied", 3), ("segv", 0),
             ("in place", 4), ("big", 5), ("text", 6), ("reject", 0), ("raise", 0)]
    return items + [("copied" if k % 2 else "in place", 10 + k) for k in range(15)]


def _check_frames(items, out):
    for (kind, value), result in zip(items, out, strict=True):
        if kind in ("copied", "in place"):
            assert result.shape == SHAPE and result.dtype == np.uint8 and (result == value).all(), (kind, value)
        elif kind == "big":
            assert result.shape == (2, *SHAPE) and (result == value).all()
        elif kind == "text":
            assert result == f"v{value}"
        else:
            expected = {"scribble": rejections.CRASHED, "hang": rejections.TIMEOUT, "segv": rejections.CRASHED,
                        "reject": rejections.DECODE_FAILED, "raise": rejections.CRASHED}[kind]
            assert isinstance(result, ClipFailure) and result.reason == expected, (kind, result)


@pytest.mark.parametrize("method", START_METHODS)
def test_arrays_come_through_shared_memory_under_every_start_method(method):
    """Slots are reused every ``window`` items (3 here, 26 items): a worker killed while writing its slot, a
    hung one, a crashed one never spoil another item's arrays, under fork, forkserver and spawn."""
    items = _frame_items()
    stats = PoolStats()
    out = []
    for result in guarded_imap(_frames, items, workers=2, timeout_s=3, window=3, shared_bytes=int(np.prod(SHAPE)),
                               start_method=method, stats=stats):
        if isinstance(result, np.ndarray) and result.nbytes <= np.prod(SHAPE):
            assert not result.flags.writeable  # a view of the slot: read-only, valid until the next result
        out.append(np.array(result) if isinstance(result, np.ndarray) else result)  # copied out of the slot
    assert stats.shared and stats.window == 3 and stats.max_held <= 3
    _check_frames(items, out)


def test_guarded_map_copies_results_out_of_shared_memory():
    items = _frame_items()
    out = guarded_map(_frames, items, workers=2, timeout_s=3, window=2, shared_bytes=int(np.prod(SHAPE)))
    _check_frames(items, out)  # each its own array, though the 26 items shared two slots


def _ring_fds() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, gone
            pass
    return [x for x in links if "maivar-slots" in x]


def _ring_maps() -> list[str]:
    return [x for x in Path("/proc/self/maps").read_text().splitlines() if "maivar-slots" in x]


def test_the_shared_memory_is_released_and_never_named():
    """The ring is anonymous (a memfd: no name in /dev/shm or anywhere to leave behind); the parent drops its
    descriptor when the pool ends, also when the consumer stops early, and its mapping once the last view is
    gone."""
    assert not _ring_fds() and not _ring_maps()
    results = guarded_imap(_frames, [("copied", k) for k in range(8)], workers=2, timeout_s=30,
                           shared_bytes=int(np.prod(SHAPE)))
    first = next(results)
    assert (first == 0).all() and _ring_maps()
    assert _ring_fds() and all(link.startswith("/memfd:") for link in _ring_fds())
    results.close()  # left early
    assert len(_ring_fds()) <= 1 and _ring_maps()  # the view still maps it (Python's mmap holds a descriptor) ...
    del first
    gc.collect()
    assert not _ring_fds() and not _ring_maps()  # ... until it goes
    seen = [int(r[0, 0, 0]) for r in guarded_imap(_frames, [("in place", k) for k in range(8)], workers=2,
                                                   timeout_s=30, shared_bytes=int(np.prod(SHAPE)))]
    gc.collect()
    assert seen == list(range(8)) and not _ring_fds() and not _ring_maps()


def test_without_room_for_shared_memory_results_go_through_pipes(monkeypatch, caplog):
    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parallel, "SlotRing", no_room)
    stats = PoolStats()
    with caplog.at_level("WARNING"):
        out = guarded_map(_frames, [("copied", 1), ("in place", 2)], workers=1, timeout_s=30,
                          shared_bytes=int(np.prod(SHAPE)), stats=stats)
    assert not stats.shared and "results go through pipes" in caplog.text
    assert (out[0] == 1).all() and (out[1] == 2).all() and out[1].flags.writeable


ORPHAN = """import os, sys, time
import numpy as np
from maivar.core.parallel import guarded_imap
def slow(x):
    time.sleep(0.2)
    return np.full(4, os.getpid(), dtype=np.int64)  # through shared memory when the pool has it
if __name__ == "__main__":
    results = guarded_imap(slow, list(range(200)), workers=2, timeout_s=30, start_method=sys.argv[1],
                           shared_bytes=int(sys.argv[2]))
    print(" ".join(str(p) for p in {int(next(results)[0]) for _ in range(4)}), flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("shared", [False, True], ids=["pipes", "shared"])
@pytest.mark.parametrize("method", START_METHODS)
def test_workers_end_quietly_when_their_parent_is_killed(tmp_path, method, shared):
    """A SIGKILLed stage cannot stop its workers: they must notice and end by themselves, under every start
    method (under fork the pipe never reports the parent's death: sibling workers hold its other end). With
    them goes the last hold on the shared memory (anonymous: nothing to clean up, no resource tracker warning)."""
    import subprocess
    import sys

    script = tmp_path / "pool.py"
    script.write_text(ORPHAN)
    proc = subprocess.Popen([sys.executable, str(script), method, "32" if shared else "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and proc.poll() is None
        if shared:  # the workers map the ring (under spawn and forkserver: mapped again from the passed descriptor)
            assert all("maivar-slots" in Path(f"/proc/{p}/maps").read_text() for p in workers)
    finally:
        proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _running(p)], "workers outlived their killed parent"
    assert proc.stderr.read() == ""  # no traceback from a worker whose pipe broke


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _torch_in_worker(n):
    """A parallel-capable torch op (what render's STFT framing does), and the worker's torch thread count."""
    import torch

    x = torch.arange(200_000, dtype=torch.float64)  # integers: exact sums, whatever the threads
    picked = torch.index_select(x.unfold(0, 2048, 1), 0, torch.arange(0, 150_000, 97))
    return float(picked.sum()) + n * 0.0, torch.get_num_threads()


def test_forked_workers_run_torch_after_the_parent_ran_it_on_several_threads():
    """A parent that ran torch on several threads (an in-process extraction stage, then an in-process render, as
    the test suite and `maivar predict` do) forks workers whose own parallel torch op would wait forever on the
    parent's thread pool: every worker starts on one torch thread (maivar.core.parallel._one_core)."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        expected = _torch_in_worker(0)[0]  # the parent's pool is up and running
        results = guarded_map(_torch_in_worker, [0, 1, 2, 3], workers=2, timeout_s=60, desc=None,
                              start_method="fork")
        assert [r for r in results if isinstance(r, ClipFailure)] == []
        assert {value for value, _ in results} == {expected}
        assert {threads for _, threads in results} == {1}
    finally:
        torch.set_num_threads(before)
