import os
import signal
import time

from maivar import rejections
from maivar.parallel import Failure, guarded_map


def _work(x):
    if x == "hang":
        time.sleep(60)
    if x == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == "raise":
        raise ValueError("bad item\nsecond line")
    return x * 2


def test_results_in_input_order():
    items = list(range(20))
    assert guarded_map(_work, items, workers=2, timeout_s=30) == [x * 2 for x in items]


def test_hung_item_is_killed_and_the_rest_complete():
    t0 = time.monotonic()
    out = guarded_map(_work, [1, "hang", 2, 3], workers=2, timeout_s=2)
    assert time.monotonic() - t0 < 30
    assert out[0] == 2 and out[2] == 4 and out[3] == 6
    assert isinstance(out[1], Failure) and out[1].reason == rejections.TIMEOUT


def test_crashing_worker_fails_only_its_item():
    out = guarded_map(_work, [1, "segv", 2, 3, 4], workers=2, timeout_s=30)
    assert [out[i] for i in (0, 2, 3, 4)] == [2, 4, 6, 8]
    assert isinstance(out[1], Failure) and out[1].reason == rejections.CRASHED
    assert "signal 11" in out[1].detail


def test_exception_becomes_one_line_failure():
    out = guarded_map(_work, ["raise", 5], workers=1, timeout_s=30)
    assert out[1] == 10
    assert out[0] == Failure(rejections.CRASHED, "ValueError: bad item")


def test_workers_are_recycled_and_spawn_works():
    out = guarded_map(_pid, list(range(6)), workers=1, recycle_after=2,
                      timeout_s=30, start_method="spawn")
    assert len(set(out)) == 3  # 6 items, a fresh worker every 2


def _pid(_):
    return os.getpid()


def test_empty_input():
    assert guarded_map(_work, [], timeout_s=1) == []


def test_imap_yields_in_order_while_running():
    from maivar.parallel import guarded_imap

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
