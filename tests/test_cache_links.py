"""DVC's cache links outputs instead of copying them (.dvc/config: cache.type hardlink,copy), so that
outputs plus cache take about the outputs' space; safe because every stage writes new files and renames them
into place (maivar.core.atomic), never edits an output in place. The cache must stay intact across parameter
changes, experiments and checkouts."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from stage_cmd import REPO, scratch_repository

SMALL = {"classes": 3, "classes_without_audio": 0, "groups": 8, "silent_clips": 0, "duration_s": 1.0, "width": 64,
         "height": 48}


def files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def disk_bytes(*roots: Path) -> int:
    """Bytes on disk under ``roots``, each inode counted once (hard links share their blocks), as du does."""
    seen, total = set(), 0
    for root in roots:
        for path in files(root):
            st = path.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def assert_cache_intact(repo: Path) -> int:
    """Every cached file's content still has the md5 its name says; returns how many were checked."""
    cache = repo / ".dvc/cache/files/md5"
    checked = 0
    for path in files(cache):
        if path.suffix == ".dir":
            continue
        assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name, f"corrupt cache: {path}"
        checked += 1
    return checked


@pytest.mark.slow
def test_linked_cache_holds_no_second_copy_and_survives_parameter_changes_and_experiments(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(SMALL)
    params["render"]["image_size"] = 32
    repo, env = scratch_repository(tmp_path / "repo", {"params.yaml": yaml.safe_dump(params, sort_keys=False)})
    dvc = [str(Path(env["PATH"].split(":")[0]) / "dvc")]

    def run(*args: str) -> str:
        proc = subprocess.run([*dvc, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    assert run("config", "cache.type").strip() == "hardlink,copy"
    run("repro", "render")
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "small run"]):  # its dvc.lock, as a user commits it
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    outputs = files(repo / "data")
    assert outputs and all(p.stat().st_nlink >= 2 for p in outputs), "outputs are copies, not links"
    linked = disk_bytes(repo / "data", repo / ".dvc/cache")
    assert linked <= 1.2 * disk_bytes(repo / "data")  # the target: outputs + cache <= 1.2 x outputs
    images = repo / "data/audio_images/images.h5"
    first = hashlib.md5(images.read_bytes()).hexdigest()

    # a parameter change reruns render: a new file replaces the linked one; the cached version is untouched
    run("exp", "run", "-n", "bigger", "-S", "render.image_size=48", "render")
    assert hashlib.md5(images.read_bytes()).hexdigest() != first
    assert assert_cache_intact(repo) > 0
    # back to the committed parameters: the first images come back from the cache, byte for byte
    subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock"], cwd=repo, env=env, check=True)
    run("checkout", "--force", "render")
    assert hashlib.md5(images.read_bytes()).hexdigest() == first
    assert "changed" not in run("status", "render")
    assert_cache_intact(repo)
    assert os.stat(images).st_nlink >= 2
