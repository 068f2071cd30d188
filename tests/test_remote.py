"""DVC-level checks on the tiny run. A checkpoint replaced in place reruns exactly the extraction and what follows it
(stage weights_audio). A DVC remote round trip (README, "Share results"): the tiny run (conftest.py's ``tiny_run``,
the one tests/test_predict.py uses) is pushed to a local-path remote; a fresh ``git clone`` pulls it; there nothing
is stale (``dvc repro`` runs only the always-changed stages, listing and weights_*, which keep what was pulled), and
``maivar predict`` gives the test clips' rows of predictions.csv. The same round trip over a real SSH remote: a
private sshd on localhost (skipped where OpenSSH's server or dvc-ssh is absent, required when
``MAIVAR_REQUIRE_SSH=1``: CI installs openssh-server and sets it, see .ci/run)"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from test_predict import _dvc, _expected, _git, _rows, _test_videos

from maivar.cli import main

from stage_cmd import run_stage_in_process

SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
RAN = re.compile(r"Running stage '([^']+)'")
ALWAYS = {"listing", "weights_audio", "weights_video"}  # always_changed: they run on every dvc repro


def _cached_outputs(repo: Path, env: dict) -> list[str]:
    """Every output the run's dvc.lock records that git does not hold (DVC's cache does): what `dvc push`
    sends. (metrics/ and dvclive/ are `cache: false` outputs: committed to git.)"""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    in_git = set(_git(repo, env, "ls-files").split("\n"))
    outs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    return sorted(o for o in outs if o not in in_git and not any(f.startswith(o + "/") for f in in_git))


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_push_to_a_remote_and_pull_into_a_fresh_clone_runs_nothing_and_predicts(tiny_run, tmp_path, monkeypatch,
                                                                                capsys):
    repo, env = tiny_run
    storage = tmp_path / "dvc-storage"
    _dvc(repo, env, "remote", "add", "-d", "shared", str(storage))
    _git(repo, env, "commit", "-qm", "a DVC remote", "--", ".dvc/config")
    pushed = _dvc(repo, env, "push")
    assert pushed.returncode == 0 and storage.is_dir(), pushed.stdout
    outputs = _cached_outputs(repo, env)
    assert {o.split("/")[0] for o in outputs} == {"data", "models"}, outputs

    clone = tmp_path / "laptop"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, capture_output=True)
    assert not any((clone / o).exists() for o in outputs)  # git carries code, params, dvc.lock, metrics only
    _dvc(clone, env, "pull")
    assert all((clone / o).exists() for o in outputs)
    for o in ("data/features/audio.h5", "data/features/video.h5", "models/fusion_mlp.pt"):
        assert (clone / o).read_bytes() == (repo / o).read_bytes(), o

    # `dvc repro` checks what `dvc status` does (every stage's deps and outs), then would run the changed stages;
    # the always-changed stages run (listing: the pulled dataset's files hash to the same listing; the weights
    # stages find the pulled weights files current and keep them), so nothing after them runs
    weights = {n: (clone / n).read_bytes() for n in ("data/weights/audio.safetensors",
                                                     "data/weights/video.safetensors")}
    repro = _dvc(clone, env, "repro")
    assert sorted(RAN.findall(repro.stdout)) == sorted(ALWAYS), repro.stdout
    assert (repro.stdout + repro.stderr).count("is current (random") == 2, repro.stdout + repro.stderr
    assert {n: (clone / n).read_bytes() for n in weights} == weights
    stages = {s for s in (repro.stdout + repro.stderr).split("\n") for s in SKIPPED.findall(s)}
    everything = set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    assert stages == everything - ALWAYS, repro.stdout
    assert not _git(clone, env, "status", "--porcelain", "--", "dvc.lock")  # nothing recorded anew

    # the laptop predicts the test clips' videos (its own pulled copies) exactly as the GPU node's run recorded
    monkeypatch.chdir(clone)
    clips = _test_videos(clone, 2)
    assert all(not Path(p).is_absolute() and (clone / p).is_file() for p in clips["video_path"])
    assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1", "--device", "cpu"]) == 0
    got = _rows(capsys.readouterr().out)
    expected = _expected((clone / "metrics/predictions.csv").read_text(), clips["id"])
    assert {p: got[p] for p in clips["video_path"]} == {v: expected[i] for i, v in zip(clips["id"],
                                                                                       clips["video_path"],
                                                                                       strict=True)}


def _predicts_a_test_clip_as_recorded(clone: Path, monkeypatch, capsys) -> None:
    """``maivar predict`` in ``clone`` on one test clip's video gives that clip's row of metrics/predictions.csv."""
    monkeypatch.chdir(clone)
    clips = _test_videos(clone, 1)
    capsys.readouterr()
    assert main(["predict", *clips["video_path"], "--format", "csv", "-k", "1", "--device", "cpu"]) == 0
    got = _rows(capsys.readouterr().out)
    expected = _expected((clone / "metrics/predictions.csv").read_text(), clips["id"])
    assert got[clips["video_path"].iloc[0]] == expected[clips["id"].iloc[0]]


def _ran(proc: subprocess.CompletedProcess) -> set[str]:
    return set(RAN.findall(proc.stdout))


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_a_checkpoint_replaced_in_place_reruns_exactly_the_extraction_and_what_follows(tiny_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """extract_audio.checkpoint keeps its path while its file gets other weights: DVC cannot see that from
    params.yaml, but stage weights_audio (always run) hashes the file, rewrites data/weights/audio.safetensors,
    and so extract_audio and everything after it rerun; nothing else does. `maivar predict` then needs no
    checkpoint: it loads the run's weights file."""
    from safetensors.torch import load_file, save_file

    repo, env = tiny_run
    clone = tmp_path / "swap"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, capture_output=True)
    _dvc(clone, env, "config", "--local", "cache.dir", str(repo / ".dvc/cache"))
    _dvc(clone, env, "checkout", "-q")
    state = load_file(clone / "data/weights/audio.safetensors")  # the run's (random) weights, as a checkpoint
    ckpt = clone / "ckpt/audio.safetensors"
    ckpt.parent.mkdir()
    save_file(state, str(ckpt))
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["extract_audio"]["checkpoint"] = "ckpt/audio.safetensors"
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the run with that checkpoint: its two stages in this process (seconds cheaper than dvc repro), then recorded
    assert run_stage_in_process("extract_audio", clone) == 0  # weights_audio first, as dvc repro runs it
    _dvc(clone, env, "commit", "-f", "-q")
    before = (clone / "data/features/audio.h5").read_bytes()

    save_file({k: v * 1.5 if v.is_floating_point() else v for k, v in state.items()}, str(ckpt))  # in place
    swapped = _dvc(clone, env, "repro")
    assert _ran(swapped) == ALWAYS | {"extract_audio", "train_audio", "train_fusion", "evaluate"}, swapped.stdout
    assert set(SKIPPED.findall(swapped.stdout)) == {"synthesize", "prepare", "render", "extract_video",
                                                    "train_video"}, swapped.stdout
    assert "ckpt/audio.safetensors changed (sha256" in swapped.stderr
    assert (clone / "data/features/audio.h5").read_bytes() != before
    # (with nothing changed, `dvc repro` runs the two weights stages and nothing else: the remote test shows it)
    ckpt.unlink()  # a laptop without the checkpoint: predict uses data/weights/audio.safetensors
    _predicts_a_test_clip_as_recorded(clone, monkeypatch, capsys)


# ------------------------------------------------------------------------------------------- a real SSH remote
SSH_TOOLS_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"  # sshd is in sbin, often not on PATH


@pytest.fixture(scope="session")
def ssh_tools() -> tuple[str, str]:
    """(sshd, ssh-keygen), absolute paths; skips the test where one of them or dvc-ssh is absent, or fails it
    instead when ``MAIVAR_REQUIRE_SSH=1`` (CI). Session-scoped, and named first, so that it comes before
    ``tiny_run`` (pytest sets up the wider scopes first): a skip costs no pipeline run."""
    sshd, keygen = (shutil.which(n, path=SSH_TOOLS_PATH) for n in ("sshd", "ssh-keygen"))
    dvc_ssh = importlib.util.find_spec("dvc_ssh")
    missing = [how for how, found in (("OpenSSH's sshd (apt-get install openssh-server)", sshd),
                                      ("ssh-keygen (apt-get install openssh-client)", keygen),
                                      ("dvc-ssh (pip install -r requirements.txt)", dvc_ssh)) if not found]
    if missing:
        why = f"not installed: {'; '.join(missing)}"
        if os.environ.get("MAIVAR_REQUIRE_SSH") == "1":
            pytest.fail(f"MAIVAR_REQUIRE_SSH=1 but {why}")
        pytest.skip(why)
    return str(sshd), str(keygen)


@dataclass
class Sshd:
    port: int
    user: str
    key: Path  # the client's private key (its public key is the server's only authorized key)
    home: Path  # a HOME for the DVC processes: .ssh/known_hosts holds the server's host key, and nothing else
    log: Path

    def logins(self) -> int:
        return self.log.read_text(errors="replace").count(f"Accepted publickey for {self.user} from 127.0.0.1")


@pytest.fixture
def sshd(ssh_tools, tmp_path):
    """A private OpenSSH server on 127.0.0.1 (a free port), for this test's user only, by key: as root (CI) or as
    an unprivileged user (sshd then accepts only that user, which is the one the test logs in as)."""
    server, keygen = ssh_tools
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run([keygen, "-t", "ed25519", "-N", "", "-q", "-f", str(d / name)], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    with socket.socket() as s:  # a free port (a race with another process taking it meanwhile is unlikely)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {d / "host"}
AuthorizedKeysFile {d / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {d / "sshd.pid"}
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
""")  # StrictModes no: pytest's tmp folders; PermitRootLogin: CI runs as root; DVC's remote speaks SFTP
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)  # root's sshd: its privilege separation dir
    home = tmp_path / "ssh-home"
    (home / ".ssh").mkdir(parents=True)
    host_key = " ".join((d / "host.pub").read_text().split()[:2])
    (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    log = d / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([server, "-D", "-e", "-f", str(d / "sshd_config")], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not start listening on port {port}:\n{log.read_text(errors='replace')}")
                time.sleep(0.05)
        user = pwd.getpwuid(os.geteuid()).pw_name
        ssh = shutil.which("ssh", path=SSH_TOOLS_PATH)
        if ssh:  # a login this sshd refuses (e.g. a user whose password is locked, with UsePAM no) is the machine's
            probe = subprocess.run([ssh, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                                    "-o", f"UserKnownHostsFile={home / '.ssh/known_hosts'}", "-i", str(d / "client"),
                                    "-p", str(port), f"{user}@127.0.0.1", "true"], capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL, timeout=30)
            if probe.returncode != 0:
                why = f"this machine's sshd refuses a key login for {user}: {probe.stderr.strip()[-300:]}"
                if os.environ.get("MAIVAR_REQUIRE_SSH") == "1":
                    pytest.fail(f"MAIVAR_REQUIRE_SSH=1 but {why}\n{log.read_text(errors='replace')}")
                pytest.skip(why)
        yield Sshd(port, user, d / "client", home, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # the fixture runs the whole pipeline (tiny) and DVC
def test_an_ssh_remote_round_trip(ssh_tools, sshd, tiny_run, tmp_path, monkeypatch, capsys):
    """The README's SSH remote, for real: ``dvc push -r ssh-shared`` sends the run to a folder that a private sshd
    serves (SFTP, key login, the keyfile in .dvc/config.local as the README says); a fresh clone pulls it with
    ``dvc pull -r ssh-shared`` and the pull is shown to have gone over SSH: the sshd log records a key login for
    it (the clone names that remote explicitly, and the files arrive). There nothing is stale (``dvc status``:
    only the always-changed stages; the local-remote test above shows that ``dvc repro`` then runs nothing else),
    and ``maivar predict`` gives a test clip's row of predictions.csv.

    Host keys: DVC does not check the server's (dvc-ssh 4.3.0 uses sshfs, which passes ``known_hosts=None`` to
    asyncssh; a wrong key in ~/.ssh/known_hosts does not stop a push). The DVC processes get a HOME of their own
    anyway, whose ~/.ssh/known_hosts holds the right key: the user's ~/.ssh stays out of the test, and the test
    holds should DVC start checking."""
    repo, env = tiny_run
    ssh_env = {**env, "HOME": str(sshd.home)}  # for the DVC processes that connect
    storage = tmp_path / "ssh-storage"
    _dvc(repo, env, "remote", "add", "ssh-shared", f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{storage}")
    _git(repo, env, "commit", "-qm", "an SSH remote", "--", ".dvc/config")
    _dvc(repo, env, "remote", "modify", "--local", "ssh-shared", "keyfile", str(sshd.key))  # git ignores it
    pushed = _dvc(repo, ssh_env, "push", "-r", "ssh-shared")
    assert storage.is_dir() and any(p.is_file() for p in storage.rglob("*")), pushed.stdout + pushed.stderr
    logins = sshd.logins()
    assert logins >= 1, sshd.log.read_text()
    outputs = _cached_outputs(repo, env)
    assert {o.split("/")[0] for o in outputs} == {"data", "models"}, outputs

    clone = tmp_path / "laptop"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], env=env, check=True, capture_output=True)
    assert not any((clone / o).exists() for o in outputs)
    _dvc(clone, env, "remote", "modify", "--local", "ssh-shared", "keyfile", str(sshd.key))  # the laptop's key
    pulled = _dvc(clone, ssh_env, "pull", "-r", "ssh-shared")
    assert sshd.logins() > logins, sshd.log.read_text()  # the pull logged in over SSH
    assert all((clone / o).exists() for o in outputs), pulled.stdout
    for o in ("data/features/audio.h5", "data/features/video.h5", "models/fusion_mlp.pt",
              "data/weights/audio.safetensors", "data/weights/video.safetensors"):
        assert (clone / o).read_bytes() == (repo / o).read_bytes(), o

    # every stage's deps and outs match dvc.lock; the always-changed stages are reported as such, whatever the files
    status = _dvc(clone, env, "status", "--json")
    assert json.loads(status.stdout) == {s: ["always changed"] for s in ALWAYS}, status.stdout

    _predicts_a_test_clip_as_recorded(clone, monkeypatch, capsys)
