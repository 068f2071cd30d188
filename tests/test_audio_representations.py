"""The representation table: the one list of audio images, light to import, with a one-line error for others."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maivar.audio.representations import KINDS, NAMES, REPRESENTATIONS, Representation, get_representation, of_kind
from maivar.core.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
PAPER = ("waveplot", "spectral_centroid", "spectral_rolloff", "mfcc", "mfcc_scaled", "chromagram")  # Fig. 5, Table II


def test_importing_the_table_loads_neither_librosa_nor_matplotlib_nor_torch():
    """A settings validator imports the table: it must stay cheap (the features load their libraries when run)."""
    code = ("import sys, maivar.audio.representations; "
            "print(sorted(m for m in ('librosa', 'matplotlib', 'torch', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_papers_six_come_first_in_its_order():
    assert NAMES[: len(PAPER)] == PAPER and NAMES == tuple(REPRESENTATIONS)
    assert [r.title for r in REPRESENTATIONS.values()][: len(PAPER)] == [
        "Waveplot", "Spectral Centroids", "Spectral Rolloff", "MFCCs", "MFCCs Feature Scaling", "Chromagram"]


@pytest.mark.parametrize("name", NAMES)
def test_each_entry_is_consistent(name):
    r = get_representation(name)
    assert r.name == name and r.kind in KINDS and r.title
    assert (r.feature is None) == (r.kind == "wave") and (r.colormap is not None) == (r.kind == "matrix")
    assert r in of_kind(r.kind)


def test_an_inconsistent_entry_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        Representation("x", "image", None, None, "X")
    with pytest.raises(ValueError, match="only a matrix has a colormap"):
        Representation("x", "curve", len, "magma", "X")


@pytest.mark.parametrize("name", ["spectrogram", "", None, ["mfcc"]])
def test_an_unknown_name_is_a_one_line_error_listing_the_table(name):
    with pytest.raises(PipelineError) as err:
        get_representation(name)
    message = str(err.value)
    assert message.startswith(f"unknown representation {name!r}: choose one of ") and "\n" not in message
    assert message.endswith(", ".join(NAMES))


def test_the_readme_table_and_the_params_comment_list_every_representation():
    readme = (REPO / "README.md").read_text(encoding="utf8")
    comment = (REPO / "params.yaml").read_text(encoding="utf8").partition("\nrepresentation:")[0]
    for name in NAMES:
        assert f"| `{name}` |" in readme, name
        assert f" {name}" in comment.rsplit("# The audio image", 1)[1], name
