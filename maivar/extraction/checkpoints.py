"""A frozen backbone's weights: the checkpoint files users have, read without running code from them.

The backbones are built where their modality lives (:func:`maivar.audio.backbone.build_audio_backbone`, a timm
model; :func:`maivar.video.tsn.build_video_backbone`, an MMAction2 TSN) and prepared for inference by
:mod:`maivar.extraction.inference`. Their weights come from here, as timm's ``_helpers.py`` does it for timm:

- :class:`Weights` (where the weights came from), :func:`load_checkpoint_into` (a checkpoint that is
  missing, unreadable, or whose keys or shapes do not fit the model is a one-line
  :class:`~maivar.core.errors.PipelineError`) and :func:`warn_random_weights` (a seeded random
  initialization is reproducible, and logged as a WARNING);
- :func:`load_state_dict_file` reads the checkpoints users have without running code from them:
  safetensors files, ``torch.save`` state dicts (``module.`` / ``_orig_mod.`` prefixes removed), and whole
  trainer checkpoints such as mmengine's (numpy scalars, ``HistoryBuffer`` objects and the like are
  replaced by inert placeholders, see :func:`_load_pickle_safely`);
- :func:`weights_sha256` hashes a model's state (names, shapes, dtypes, values) so that the outputs
  record exactly which weights made them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maivar.core.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Weights:
    """Where a model's weights came from, as recorded in the output's attributes."""

    source: str  # random | timm-pretrained | checkpoint:<path>
    pretrained: bool
    sha256: str

    def attrs(self) -> dict:
        return {"weights": self.source, "pretrained": self.pretrained, "weights_sha256": self.sha256}


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (:func:`state_dict_sha256`)."""
    return state_dict_sha256(model.state_dict())


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict: every entry's name, shape, dtype and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tuple(state[name].shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# Where trainers put the weights in a checkpoint dict, in the order they are looked for: mmengine, MMAction2,
# timm's train.py and most scripts use ``state_dict``; DeiT-style scripts ``model``; timm's EMA copies (only
# when nothing else is there: the trained weights, as before, win over their EMA).
STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")
# Wrapper prefixes of a key, stripped in this order (timm's ``clean_state_dict``): torch.compile's
# ``_orig_mod.`` around DataParallel/DistributedDataParallel's ``module.``, around ``_orig_mod.`` again.
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "_orig_mod.")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file, without running any code from it.

    Reads ``.safetensors`` files (recognized by their name or their header) with safetensors, and
    ``torch.save`` files (zip or legacy format) with :func:`torch.load`'s ``weights_only`` unpickler
    (:func:`_load_pickle_safely`): a bare state dict, or one under ``state_dict`` / ``model`` /
    ``state_dict_ema`` / ``model_ema`` (:data:`STATE_DICT_KEYS`) as trainers save them, e.g. a whole
    mmengine runner checkpoint (``meta``, ``message_hub``, ``optimizer``, ...). ``module.`` (DataParallel,
    DDP) and ``_orig_mod.`` (``torch.compile``) key prefixes are removed, as timm's ``clean_state_dict`` does.
    A file that is missing, unreadable, truncated, holds no state dict of tensors or an empty one is a
    one-line :class:`PipelineError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist: fix the checkpoint path in params.yaml or set it to "
                            "null")
    if _is_safetensors(path):
        return _checked(_load_safetensors(path), path)
    obj, not_loaded = _load_pickle_safely(path)
    state = _find_state_dict(obj, path)
    if not_loaded:
        log.info("checkpoint %s: read its state_dict; %d pickled classes/functions in it were not loaded (%s)", path,
                 len(not_loaded), ", ".join(not_loaded))
    return _checked(state, path)


def _checked(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    if not state:
        raise PipelineError(f"checkpoint {path} holds an empty state_dict (no tensors): save the trained "
                            "model's state_dict()")
    keys = [_unwrapped(k) for k in state]
    if len(set(keys)) < len(keys):
        raise PipelineError(f"checkpoint {path} holds the same weights twice (with and without a module./_orig_mod. "
                            "prefix): save the unwrapped model's state_dict()")
    return dict(zip(keys, state.values(), strict=True))


def _unwrapped(key: str) -> str:
    """``key`` without the prefixes model wrappers add, as timm's ``clean_state_dict`` removes them."""
    for prefix in WRAPPER_PREFIXES:
        key = key.removeprefix(prefix)
    return key


def _is_safetensors(path: Path) -> bool:
    """``.safetensors`` by name, or by header: 8 bytes of little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors (SafetensorError, OSError, ...)
        raise PipelineError(f"checkpoint {path} cannot be read as safetensors ({_reason(exc)}): is the file "
                            "complete?") from None


def _not_a_pickle(path: Path) -> str | None:
    """Why a file torch cannot load is no checkpoint at all, when it plainly is not one (else None)."""
    with path.open("rb") as f:
        head = f.read(2)
    if not head:
        return "the file is empty"
    if head[:1] != b"\x80" and head != b"PK":  # torch.save writes a zip archive, or (legacy) pickles
        return "neither a torch.save zip archive, nor a pickle, nor safetensors"
    return None


def _reason(exc: BaseException) -> str:
    """The line of a loader's error that says what is wrong (torch's weights_only errors wrap it in advice)."""
    if isinstance(exc, EOFError):
        return "the file ends early"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Please file an issue", "Check the documentation")
    lines = [line for line in lines if not line.startswith(boilerplate)]
    lines = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines]
    lines = [line for line in lines if line]
    reason = lines[0] if lines else type(exc).__name__
    reason = reason.split(". This is an internal miniz error")[0]  # the rest is torch's advice on corrupt files
    return reason[:200]


class NotLoaded:
    """Stands in for a pickled class or function that :func:`_load_pickle_safely` does not load.

    Calling it, creating it (``__new__``) and giving it state (``__setstate__``) only record the arguments:
    no code from the file, and no module it names, is ever imported or run. :func:`_placeholder` makes one
    subclass per pickled name.
    """

    __slots__ = ("args", "state")
    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        object.__setattr__(self, "args", (args, kwargs))
        object.__setattr__(self, "state", None)
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        object.__setattr__(self, "state", state)

    def __setattr__(self, name, value) -> None:
        raise AttributeError(f"{self.pickled_name} was not loaded from the checkpoint")

    def __repr__(self) -> str:
        return f"<{self.pickled_name}, not loaded>"


def _placeholder(name: str) -> type[NotLoaded]:
    return type(f"NotLoaded[{name}]", (NotLoaded,), {"__slots__": (), "pickled_name": name, "__module__": __name__})


def _harmless_globals() -> list[tuple[object, str]]:
    """What mmengine and trainers pickle besides tensors that is safe to rebuild for real: numpy scalars
    (``numpy.float64(0.5)`` pickles as ``multiarray.scalar(dtype, bytes)``) and dtypes (``numpy.dtype('f8')``
    and the dtype classes), under numpy 2's module names and numpy 1's. These are the entries PyTorch's
    ``torch.load`` documentation suggests allowlisting for numpy; they build values, never call user code.
    NumPy arrays are not among them (an object array rebuilds arbitrary pickled objects)."""
    import importlib

    import numpy as np

    try:
        scalar = importlib.import_module("numpy._core.multiarray").scalar
    except ImportError:  # numpy < 2
        scalar = importlib.import_module("numpy.core.multiarray").scalar
    harmless: list[tuple[object, str]] = [(scalar, "numpy._core.multiarray.scalar"),
                                          (scalar, "numpy.core.multiarray.scalar"), (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25
    for name in getattr(dtypes, "__all__", ()):
        cls = getattr(dtypes, name, None)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            harmless.append((cls, f"numpy.dtypes.{name}"))
    return harmless


def _load_pickle_safely(path: Path) -> tuple[object, list[str]]:
    """A ``torch.save`` file's object, and the pickled names that were replaced by inert :class:`NotLoaded`.

    Why this is safe: all the unpickling is PyTorch's own ``weights_only`` unpickler
    (``torch._weights_only_unpickler``), which only knows a few pickle opcodes and calls, creates or builds
    nothing that is not in its allowlist: tensors and their rebuild functions, ``OrderedDict``, torch
    dtypes/devices, builtin containers, plus what is added with ``torch.serialization.safe_globals``. We add
    two kinds of entries:

    1. :func:`_harmless_globals` (numpy scalars and dtypes), real, as torch's documentation suggests;
    2. only if the file still needs other names (mmengine's ``HistoryBuffer`` in ``message_hub``, the
       ``getattr`` and numpy arrays it pickles, ``argparse.Namespace`` in timm's ``args``, a whole pickled
       ``nn.Module``, or an attacker's ``builtins.exec``): each name the file's pickle refers to (read
       statically, without running it) is allowlisted as a fresh :class:`NotLoaded` subclass registered
       under that name, never the real object. Calling one (``REDUCE``), creating one (``NEWOBJ``) or
       setting its state (``BUILD``) only stores the arguments, so the file's classes and functions are
       neither imported nor run. Names torch already allowlists keep torch's real objects (they are looked
       up first); names in modules torch blocks outright (``os``, ``posix``, ``nt``, ``sys``) stay blocked,
       so such a file is refused.

    That is the restricted unpickler of the ``pickle`` documentation ("Restricting Globals"), with
    placeholders instead of refusals, on top of torch's vetted unpickler: the state dict's tensors load,
    everything else becomes inert data. (mmengine's own loader calls ``torch.load`` with
    ``weights_only=False``, which would run the file's code; open-mmlab/mmengine#1655.)
    """
    import pickle

    harmless = _harmless_globals()
    try:
        with torch.serialization.safe_globals(harmless):
            return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as exc:  # a global torch does not allowlist, or not a pickle at all
        first_error = exc
    except Exception as exc:  # noqa: BLE001 - truncated, not a zip, ...: the same user-facing error
        raise PipelineError(f"checkpoint {path} cannot be read ({_not_a_pickle(path) or _reason(exc)}): is it a "
                            "complete PyTorch or safetensors checkpoint file?") from None
    known = {name for _, name in harmless}
    names = sorted(n for n in _pickled_names(path) if n not in known)
    if not names:
        raise PipelineError(f"checkpoint {path} cannot be read ({_not_a_pickle(path) or _reason(first_error)}): is "
                            "it a complete PyTorch or safetensors checkpoint file?") from None
    # Names torch allowlists keep torch's real objects (looked up before these): only the others are inert.
    try:
        with torch.serialization.safe_globals(harmless + [(_placeholder(n), n) for n in names]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PipelineError(f"checkpoint {path} cannot be read safely ({_reason(exc)}): is it from a source you "
                            "trust?") from None
    return obj, sorted(_not_loaded_in(obj))


def _not_loaded_in(obj: object) -> set[str]:
    """The pickled names that :class:`NotLoaded` placeholders stand for anywhere in ``obj``."""
    found: set[str] = set()
    seen: set[int] = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, (torch.Tensor, str, bytes, int, float)):
            continue
        seen.add(id(item))
        if isinstance(item, type) and issubclass(item, NotLoaded):
            found.add(item.pickled_name)
        elif isinstance(item, NotLoaded):
            found.add(item.pickled_name)
            todo.extend([item.args, item.state])
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
    return found


def _pickled_names(path: Path) -> set[str]:
    """Every ``module.name`` the pickle of a ``torch.save`` file refers to (as written, and as Python 3 names),
    read without unpickling it (``pickletools``); empty for a file that is not a readable pickle."""
    import io
    import pickletools
    import zipfile
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

    names: set[str] = set()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                records = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                streams = [io.BytesIO(archive.read(records[0]))] if records else []
                count = 1
        else:  # legacy format: magic number, protocol, system info, then the object
            streams = [path.open("rb")]
            count = 4
        for stream in streams:
            with stream:
                for _ in range(count):
                    for opcode, arg, _pos in pickletools.genops(stream):
                        if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str) and " " in arg:
                            module, name = arg.split(" ", 1)
                            names.add(f"{module}.{name}")
                            # protocol 2 writes Python 2 names (subprocess.call as commands.call), which the
                            # unpickler maps back (torch to a subset of these): placeholders for both
                            module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module),
                                                                               name))
                            names.add(f"{module}.{name}")
    except Exception:  # noqa: BLE001 - not a pickle (or a truncated one): torch.load's error says why
        return set()
    return names


def _find_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        found = [key for key in STATE_DICT_KEYS if isinstance(obj.get(key), dict)]
        if found:
            if len(found) > 1:
                log.info("checkpoint %s: loading its %r (it also holds %s, not used)", path, found[0],
                         ", ".join(map(repr, found[1:])))
            obj = obj[found[0]]
    if isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    if isinstance(obj, NotLoaded):
        what = f"a pickled {obj.pickled_name} (not loaded: only tensors are)"
    elif isinstance(obj, dict):
        bad = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        what = f"a dict whose {str(bad)[:60]!r} is not a tensor but {_type_name(obj[bad])}"
    else:
        what = f"a {_type_name(obj)}"
    raise PipelineError(f"checkpoint {path} holds no state_dict of tensors (it holds {what}; looked for one under "
                        f"{'/'.join(STATE_DICT_KEYS)} too): save model.state_dict()")


def _type_name(value: object) -> str:
    return value.pickled_name if isinstance(value, NotLoaded) else type(value).__name__


def load_checkpoint_into(model: nn.Module, path: str | Path, *, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a checkpoint strictly (except keys under ``ignore_prefixes``); a mismatch is a one-line error."""
    state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith(ignore_prefixes)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {what} (e.g. {keys[0]})")
        raise PipelineError(f"checkpoint {path} does not fit the model: {', '.join(parts)}; is it for this backbone?")
    model.load_state_dict(state, strict=False)


def warn_random_weights(what: str, seed: int) -> None:
    log.warning(
        "%s: RANDOM weights (seed %d), no checkpoint or pretrained weights: its features are NOT the paper's; "
        "set a checkpoint / pretrained in params.yaml for real results", what, seed,
    )
