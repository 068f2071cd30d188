"""The one place for the MMAction2 1.2.0 workarounds; import mmaction only through :func:`import_mmaction`.

MMAction2 1.2.0's wheel omits the package ``mmaction/models/localizers/drn`` (upstream issue #2714,
open-mmlab/mmaction2), while ``mmaction/models/localizers/__init__.py`` still runs
``from .drn.drn import DRN``; so ``import mmaction.models`` (and ``register_all_modules()``) fails with
``ModuleNotFoundError``. :func:`install_drn_stand_in` puts a minimal stand-in module for
``mmaction.models.localizers.drn`` (and ``.drn.drn``) into ``sys.modules`` before mmaction is imported;
its ``DRN`` class only raises when used. The DRN temporal-grounding localizer is unrelated to TSN.
The stand-in is installed only when the real package is absent, so a fixed wheel is used as it is.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings

DRN_PACKAGE = "mmaction.models.localizers.drn"


class _MissingDRN:  # pragma: no cover - only raises
    """Stand-in for MMAction2's DRN localizer, which the 1.2.0 wheel does not ship."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError("mmaction2 1.2.0's wheel lacks the DRN localizer (upstream issue #2714)")


def _drn_missing() -> bool:
    spec = importlib.util.find_spec("mmaction")
    if spec is None or not spec.submodule_search_locations:
        return False
    from pathlib import Path

    root = Path(list(spec.submodule_search_locations)[0])
    return not (root / "models" / "localizers" / "drn" / "drn.py").is_file()


def install_drn_stand_in() -> bool:
    """Put the DRN stand-in into ``sys.modules`` if the wheel lacks it; returns whether it did."""
    if DRN_PACKAGE in sys.modules or not _drn_missing():
        return False
    package = types.ModuleType(DRN_PACKAGE)
    package.__path__ = []  # a package, so that ``.drn.drn`` resolves
    package.__doc__ = "maivar stand-in: mmaction2 1.2.0's wheel lacks this package (issue #2714)"
    module = types.ModuleType(DRN_PACKAGE + ".drn")
    module.DRN = _MissingDRN
    package.drn = module
    package.DRN = _MissingDRN
    sys.modules[DRN_PACKAGE] = package
    sys.modules[DRN_PACKAGE + ".drn"] = module
    return True


_registered = False


def import_mmaction():
    """Import ``mmaction`` with the workaround installed and its registries populated; returns the module."""
    global _registered
    install_drn_stand_in()
    with warnings.catch_warnings():
        # mmcv-lite has no compiled ops; MMAction2's recognizers do not use MultiScaleDeformableAttention.
        warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
        import mmaction
        import mmaction.models

    if not _registered:
        from mmaction.utils import register_all_modules

        register_all_modules(init_default_scope=True)
        _registered = True
    return mmaction
