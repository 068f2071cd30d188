"""Fault injection, resources (issue 6, part 6): bounded memory and file handles over many files, and stores
opened lazily inside DataLoader workers under ``fork``, ``forkserver`` and ``spawn``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from maivar.core.feature_store import LazyRows, create_store
from maivar.core.parallel import guarded_map
from maivar.core.rejections import ClipFailure
from maivar.data.media import probe_video
from maivar.video.frames import decode_segments

from faults import make_avi

MB = 1 << 20


def rss() -> int:
    """Resident memory of this process in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_avi(tmp_path_factory.mktemp("res") / "clip.avi", seconds=0.4)


def test_probing_and_decoding_many_files_closes_every_container(clip):
    def work():
        probe_video(clip, "decode")
        out = decode_segments(str(clip), num_segments=4, expected_frames=10, short_side=40, crop_size=32,
                              timeout_s=30)
        assert isinstance(out, np.ndarray)

    for _ in range(20):  # warm-up: codecs, caches, allocator pools
        work()
    fds, mem = open_fds(), rss()
    for _ in range(300):
        work()
    assert open_fds() == fds  # no container, file or pipe left open
    assert rss() - mem < 30 * MB


_LEAK: list[bytes] = []


def _leaky_probe(path: str):
    """A decoder that leaks 256 KiB per file (as native decoders do), and reports its process and memory."""
    probe_video(path)
    _LEAK.append(os.urandom(256 * 1024))
    return os.getpid(), rss()


def test_a_thousand_files_with_a_leaky_decoder_stay_bounded_by_worker_recycling(clip):
    """1,000 files through the guarded pool: each worker is recycled after ``recycle_after`` files, so a leak
    per file costs at most recycle_after x leak per worker (without recycling: 500 x 256 KiB = 125 MiB)."""
    parent = rss()
    results = guarded_map(_leaky_probe, [str(clip)] * 1000, workers=2, timeout_s=60, recycle_after=50)
    assert not [r for r in results if isinstance(r, ClipFailure)]
    pids = {pid for pid, _ in results}
    assert len(pids) >= 1000 // 50
    first = min(m for _, m in results)
    assert max(m for _, m in results) - first < 40 * MB
    assert rss() - parent < 20 * MB  # the parent holds only results, not the workers' garbage


@pytest.mark.parametrize("start_method", ["fork", "forkserver", "spawn"])
def test_lazy_store_rows_open_inside_dataloader_workers(tmp_path, start_method):
    import torch
    from torch.utils.data import DataLoader

    from maivar.audio.features import _Rows

    rows = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    with create_store(tmp_path / "images.h5", data_name="images", n=10, item_shape=rows.shape[1:],
                      dtype=np.uint8) as w:
        w.write_rows(0, rows)
        w.finish([f"v{i}" for i in range(10)], [0] * 10, [], {})
    lazy = LazyRows(tmp_path / "images.h5", "images")
    assert np.array_equal(lazy[0], rows[0])  # the parent holds an open handle now: it must not travel
    loader = DataLoader(_Rows(lazy), batch_size=3, num_workers=2, multiprocessing_context=start_method)
    got = torch.cat(list(loader)).numpy()
    assert np.array_equal(got, rows)
    lazy.close()
