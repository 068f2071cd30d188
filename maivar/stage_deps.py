"""Which project modules each DVC stage imports, and whether dvc.yaml declares them all as deps.

DVC reruns a stage only when one of its declared deps changes, so a module that a stage imports but does
not declare could change without the stage rerunning: DVC would serve a stale output. This module follows
each stage's imports from its entry point (``stages/<name>.py`` in its ``cmd``), transitively, through every
``import maivar...`` and relative import it finds (at any depth: lazy imports inside functions count too; those
under ``if TYPE_CHECKING:`` do not, since they never run),
adding each package's ``__init__.py``; then it checks that each module is a dep of the stage, itself or
through a folder that holds it (``maivar/core``). ``maivar check-deps`` runs it; a test keeps it green.

It reads the code as text (``ast``): nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

PACKAGE = "maivar"
_INTERPOLATION = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...] = ()  # outs, metrics and plots: everything the stage writes

    @property
    def paths(self) -> dict[str, str]:
        """The ``--NAME PATH`` options of the command (``{"manifest": "data/prepared/manifest.csv", ...}``)."""
        words = shlex.split(self.cmd)
        return {w[2:]: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}

    @property
    def entry(self) -> str | None:
        """The stage's entry point: the ``stages/*.py`` script its command runs (``python stages/x.py`` or
        ``python -m stages.x``)."""
        words = shlex.split(self.cmd)
        for i, word in enumerate(words):
            if word.startswith("stages/") and word.endswith(".py"):
                return word
            if word == "-m" and i + 1 < len(words) and words[i + 1].startswith("stages."):
                return words[i + 1].replace(".", "/") + ".py"
        return None


def lookup(context: dict, dotted: str):
    """``context``'s value at the dotted key ``a.b.c``; KeyError(dotted) when there is none."""
    value = context
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def interpolate(text: str, context: dict) -> str:
    """``${a.b}`` replaced from ``context`` (dvc.yaml's ``vars`` and params.yaml), as DVC does."""
    return _INTERPOLATION.sub(lambda m: str(lookup(context, m.group(1))), text)


def read_stages(root: str | Path = ".", dvc_yaml: str = "dvc.yaml") -> dict[str, Stage]:
    """The stages of ``root/dvc_yaml`` with their commands, deps and outputs interpolated."""
    root = Path(root)
    spec = yaml.safe_load((root / dvc_yaml).read_text())
    context: dict = {}
    params = root / "params.yaml"
    if params.is_file():
        context.update(yaml.safe_load(params.read_text()) or {})
    for entry in spec.get("vars", []) or []:
        if isinstance(entry, dict):
            context.update(entry)
        elif isinstance(entry, str) and (root / entry).is_file():
            context.update(yaml.safe_load((root / entry).read_text()) or {})
    stages = {}
    for name, body in (spec.get("stages") or {}).items():
        cmd = body.get("cmd", "")
        cmd = " ".join(cmd) if isinstance(cmd, list) else str(cmd)
        deps = tuple(interpolate(_path(d), context) for d in body.get("deps", []) or [])
        outs = tuple(interpolate(_path(o), context) for key in ("outs", "metrics", "plots")
                     for o in body.get(key, []) or [])
        stages[name] = Stage(name, interpolate(cmd, context), deps, outs)
    return stages


def _path(entry) -> str:
    """A deps/outs entry is a path, or a one-key mapping ``{path: options}``."""
    return str(entry if isinstance(entry, str) else next(iter(entry)))


def _module_path(root: Path, name: str) -> Path | None:
    """The file of module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), relative to ``root``."""
    base = Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    """The dotted package a module file belongs to (``maivar/audio/render.py`` -> ``maivar.audio``)."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1])


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only: never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imported_modules(root: Path, path: Path) -> set[str]:
    """The project modules (``maivar`` and below) that the file ``root/path`` imports, anywhere in it (lazy imports
    inside functions too), but for those under ``if TYPE_CHECKING:``, which never run."""
    tree = ast.parse((root / path).read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path).split(".")
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def module_closure(root: str | Path, entry: str | Path) -> set[Path]:
    """Every project module file that importing ``entry`` loads (itself and each package's ``__init__.py``
    included), relative to ``root``."""
    root = Path(root)
    todo = [Path(entry)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(root, path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                found = _module_path(root, ".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def covered(path: Path, deps: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``deps`` or inside a dep folder."""
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


def missing_deps(root: str | Path = ".", dvc_yaml: str = "dvc.yaml") -> dict[str, list[str]]:
    """For each stage of ``dvc_yaml``: the modules it imports that its deps do not cover (empty when all are).
    A stage whose command runs no ``stages/*.py`` script is reported as ``["<no stages/*.py entry point>"]``."""
    root = Path(root)
    report = {}
    for name, stage in read_stages(root, dvc_yaml).items():
        if stage.entry is None:
            report[name] = ["<no stages/*.py entry point in its cmd>"]
            continue
        modules = module_closure(root, stage.entry)
        report[name] = sorted(str(p) for p in modules if not covered(p, stage.deps))
    return report
