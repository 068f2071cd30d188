import signal
import subprocess
import sys
import textwrap

import pytest

from maivar.core.atomic import atomic_path, remove_stale_temporaries, write_json


def test_file_appears_only_on_success(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_failure_keeps_previous_version_and_removes_temporary(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_directory_replaces_previous_directory(tmp_path):
    final = tmp_path / "dir"
    final.mkdir()
    (final / "stale.txt").write_text("x")
    with atomic_path(final, directory=True) as tmp:
        (tmp / "a.txt").write_text("a")
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_nothing_written_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    final = tmp_path / "out.h5"
    (tmp_path / ".out.h5.tmp-99999").write_text("left by SIGKILL")
    (tmp_path / ".other.h5.tmp-1").write_text("not ours")
    removed = remove_stale_temporaries(final)
    assert [p.name for p in removed] == [".out.h5.tmp-99999"]
    assert (tmp_path / ".other.h5.tmp-1").exists()


def test_write_json_is_stable(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": {"y": 2, "x": 1}})
    first = (tmp_path / "m.json").read_bytes()
    write_json(tmp_path / "m.json", {"a": {"x": 1, "y": 2}, "b": 1})
    assert (tmp_path / "m.json").read_bytes() == first


def test_sigterm_mid_write_leaves_no_output(tmp_path):
    """A stage killed with SIGTERM (through run_stage) removes its temporary and leaves no final file."""
    script = tmp_path / "stage.py"
    final = tmp_path / "out.bin"
    script.write_text(textwrap.dedent(f"""
        import time
        from maivar.core.atomic import atomic_path
        from maivar.core.stage import run_stage
        def main():
            with atomic_path({str(final)!r}) as tmp:
                tmp.write_bytes(b"partial")
                print("writing", flush=True)
                time.sleep(60)
        run_stage(main)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage.py"]
