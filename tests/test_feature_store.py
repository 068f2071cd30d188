import h5py
import numpy as np
import pytest

from maivar.core.errors import PipelineError
from maivar.core.feature_store import LazyRows, create_store, open_store
from maivar.core.rejections import Rejection


def _write(path, n=3, attrs=None):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, 4, 5)).astype(np.float32)
    with create_store(path, data_name="features", n=n, item_shape=(4, 5), dtype=np.float32) as w:
        for i in range(n):
            w.write(i, data[i])
        w.finish([f"v{i}" for i in range(n)], list(range(n)), [Rejection("v9", "silent_audio", "peak -inf")],
                 attrs or {"backbone": "x", "params": {"a": 1}, "checkpoint": None})
    return data


def test_round_trip(tmp_path):
    data = _write(tmp_path / "f.h5")
    store = open_store(tmp_path / "f.h5", "features")
    np.testing.assert_array_equal(store.data, data)
    assert store.ids == ["v0", "v1", "v2"]
    assert store.index["v2"] == 2
    assert store.labels.tolist() == [0, 1, 2]
    assert store.rejected == [Rejection("v9", "silent_audio", "peak -inf")]
    assert store.attrs["backbone"] == "x" and store.attrs["params"] == '{"a": 1}'
    assert store.attrs["checkpoint"] == "null" and store.attrs["complete"] is True


def test_same_inputs_give_identical_bytes(tmp_path):
    _write(tmp_path / "a.h5")
    _write(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_unfinished_store_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="not finished"):
        with create_store(tmp_path / "f.h5", data_name="features", n=2, item_shape=(3,), dtype=np.float32) as w:
            w.write(0, np.zeros(3))
    assert list(tmp_path.iterdir()) == []


def test_unwritten_rows_are_refused(tmp_path):
    with pytest.raises(ValueError, match="never written"):
        with create_store(tmp_path / "f.h5", data_name="features", n=2, item_shape=(3,), dtype=np.float32) as w:
            w.write(0, np.zeros(3))
            w.finish(["a", "b"], [0, 1], [], {})
    assert list(tmp_path.iterdir()) == []


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        with create_store(tmp_path / "f.h5", data_name="features", n=2, item_shape=(3,), dtype=np.float32) as w:
            w.write_rows(0, np.zeros((2, 3)))
            w.finish(["a", "a"], [0, 1], [], {})


def test_incomplete_or_garbage_files_are_one_line_errors(tmp_path):
    with h5py.File(tmp_path / "half.h5", "w") as h5:
        h5.create_dataset("features", data=np.zeros(2))
    with pytest.raises(PipelineError, match="incomplete"):
        open_store(tmp_path / "half.h5", "features")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="not a readable HDF5"):
        open_store(tmp_path / "junk.h5", "features")
    with pytest.raises(PipelineError, match="does not exist"):
        open_store(tmp_path / "missing.h5", "features")
    _write(tmp_path / "ok.h5")
    with pytest.raises(PipelineError, match="no 'images' dataset"):
        open_store(tmp_path / "ok.h5", "images")


def test_empty_store(tmp_path):
    with create_store(tmp_path / "e.h5", data_name="images", n=0, item_shape=(8, 8, 3), dtype=np.uint8) as w:
        w.finish([], [], [Rejection("a", "unreadable_audio")], {})
    store = open_store(tmp_path / "e.h5", "images")
    assert store.data.shape == (0, 8, 8, 3) and store.ids == []


def test_lazy_rows_pickle_without_handle(tmp_path):
    import pickle

    data = _write(tmp_path / "f.h5")
    rows = LazyRows(tmp_path / "f.h5", "features")
    np.testing.assert_array_equal(rows[1], data[1])  # opens the handle
    clone = pickle.loads(pickle.dumps(rows))
    assert clone._h5 is None and len(clone) == 3
    np.testing.assert_array_equal(clone[2], data[2])
    rows.close()
    clone.close()


def test_fewer_rows_than_planned_are_trimmed(tmp_path):
    with create_store(tmp_path / "t.h5", data_name="images", n=4, item_shape=(2,), dtype=np.uint8) as w:
        w.write(0, np.array([1, 2]))
        w.write(1, np.array([3, 4]))
        w.finish(["a", "b"], [0, 1], [Rejection("c", "timeout"), Rejection("d", "crashed")], {})
    store = open_store(tmp_path / "t.h5", "images")
    assert store.data.tolist() == [[1, 2], [3, 4]] and store.ids == ["a", "b"]


def test_rows_past_the_ids_are_a_misalignment(tmp_path):
    with pytest.raises(ValueError, match="misaligned"):
        with create_store(tmp_path / "t.h5", data_name="images", n=3, item_shape=(2,), dtype=np.uint8) as w:
            w.write(0, np.array([1, 2]))
            w.write(2, np.array([3, 4]))
            w.finish(["a"], [0], [], {})


def test_lzf_is_refused_its_bytes_are_not_deterministic(tmp_path):
    """h5py's LZF leaves its hash table uninitialized: equal rows could be written as other bytes, and DVC,
    hashing bytes, would see a changed output and rerun every stage after it."""
    with pytest.raises(ValueError, match="lzf.*bytes must depend only on its contents"):
        with create_store(tmp_path / "f.h5", data_name="images", n=1, item_shape=(3,), dtype=np.uint8,
                          compression="lzf"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_gzip_store_is_smaller_reads_back_equal_and_its_bytes_do_not_depend_on_the_process(tmp_path):
    import subprocess
    import sys

    script = """
import sys, numpy as np
from maivar.core.feature_store import create_store
rng = np.random.default_rng(0)
if sys.argv[2] == "busy":  # other compression work first: nothing of it may show in the file
    with create_store(sys.argv[1] + ".other", data_name="images", n=4, item_shape=(32, 32, 3), dtype=np.uint8,
                      compression="gzip", compression_opts=1) as w:
        w.write_rows(0, rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8))
        w.finish(list("abcd"), [0] * 4, [], {})
images = np.repeat(np.arange(32, dtype=np.uint8)[None, :, None, None], 6, axis=0).repeat(32, 2).repeat(3, 3)
with create_store(sys.argv[1], data_name="images", n=6, item_shape=(32, 32, 3), dtype=np.uint8,
                  compression="gzip", compression_opts=1) as w:
    for i in range(6):
        w.write(i, images[i])
    w.finish(list("abcdef"), [0] * 6, [], {})
"""
    for name, state in (("a.h5", "fresh"), ("b.h5", "busy")):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name), state], check=True)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    store = open_store(tmp_path / "a.h5", "images")
    assert store.data.shape == (6, 32, 32, 3) and (store.data[:, :, 0, 0] == np.arange(32)).all()
    assert (tmp_path / "a.h5").stat().st_size < 6 * 32 * 32 * 3
