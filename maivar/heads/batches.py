"""Where a head's training batches come from: its rows standardized once on the device (:class:`OnDevice`), or read
from their file a batch at a time and standardized on the way (:class:`FromFile`, features past
``runtime.heads.memory_mb``: :mod:`maivar.heads.rows`). Both give :func:`~maivar.heads.training.train_head` the
same numbers, bit for bit: the same rows in the same order, standardized element for element with the model's
buffers (what :meth:`~maivar.heads.mlp.MLP.forward` computes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .mlp import MLP
from .rows import DiskRows, is_spilled


def standardized(model: MLP, x: np.ndarray | torch.Tensor, device: torch.device, columns: int | None = None,
                 rows: np.ndarray | None = None, chunk_bytes: int = 16 << 20):
    """``x`` (..., F), or its rows ``rows``, as float32 on ``device``, standardized with ``model``'s buffers (the
    first ``columns`` of them if given): element for element what :meth:`MLP.forward` computes, so
    ``model.layers`` on rows of it gives ``model`` on the raw rows, bit for bit. ``rows`` are gathered
    ``chunk_bytes`` at a time into the output: no copy of them besides it."""
    mean, std = (model.mean, model.std) if columns is None else (model.mean[:columns], model.std[:columns])
    if rows is None:
        return torch.tensor(x, dtype=torch.float32, device=device).sub_(mean).div_(std)
    out = torch.empty((len(rows), *x.shape[1:]), dtype=torch.float32, device=device)
    step = max(1, int(chunk_bytes) // max(1, 4 * int(np.prod(x.shape[1:], dtype=np.int64))))
    for i in range(0, len(rows), step):
        out[i : i + step] = torch.from_numpy(np.asarray(x[rows[i : i + step]], dtype=np.float32))
    return out.sub_(mean).div_(std)


class OnDevice:
    """The training and test rows standardized once on the device (:func:`standardized`): a step gathers rows of
    one tensor. Holds them twice (the host's features and this copy)."""

    def __init__(self, model, x_train, train_rows, x_test, test_rows, variants, device):
        self.xs = standardized(model, x_train, device, rows=train_rows)
        self.xs_test = standardized(model, x_test, device, rows=test_rows)
        self.device = device
        if variants is not None:
            self.dim = variants.shape[2]
            self.vs = standardized(model, variants, device, columns=self.dim, rows=train_rows)
            self.all = torch.arange(len(self.xs), device=device)

    def draw(self, which: torch.Tensor) -> None:
        """This epoch's flip variant of each training row (every row's first ``dim`` columns replaced)."""
        self.xs[:, : self.dim] = self.vs[self.all, which.to(self.device)]

    def order(self, order: torch.Tensor, on_device: torch.Tensor) -> torch.Tensor:
        return on_device

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.xs.index_select(0, idx)

    def test_chunks(self, size: int) -> Iterator[torch.Tensor]:
        for i in range(0, len(self.xs_test), size):
            yield self.xs_test[i : i + size]


class FromFile:
    """The rows read from their file (:class:`~maivar.heads.rows.DiskRows`) a batch at a time and standardized
    on the way to the device: nothing of the dataset's size in memory. The same numbers as :class:`OnDevice`:
    the same rows, standardized element for element with the same buffers."""

    def __init__(self, model, x_train, train_rows, x_test, test_rows, variants, device):
        self.x, self.x_test, self.variants, self.device = x_train, x_test, variants, device
        self.rows = np.arange(len(x_train)) if train_rows is None else np.asarray(train_rows)
        self.test_rows = np.arange(len(x_test)) if test_rows is None else np.asarray(test_rows)
        self.mean, self.std = model.mean, model.std
        self.which = None

    def draw(self, which: torch.Tensor) -> None:
        self.which = which.numpy()

    def order(self, order: torch.Tensor, on_device: torch.Tensor) -> torch.Tensor:
        return order  # row numbers for the host's reads

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        picked = idx.numpy()
        rows = self.x[self.rows[picked]]
        if self.variants is not None:
            rows[:, : self.variants.shape[2]] = self.variants.pick(self.rows[picked], self.which[picked])
        return torch.from_numpy(rows).to(self.device).sub_(self.mean).div_(self.std)

    def test_chunks(self, size: int) -> Iterator[torch.Tensor]:
        for i in range(0, len(self.test_rows), size):
            rows = torch.from_numpy(self.x_test[self.test_rows[i : i + size]])
            yield rows.to(self.device).sub_(self.mean).div_(self.std)


def batch_source(model: MLP, x_train: np.ndarray | DiskRows, train_rows: np.ndarray | None,
                 x_test: np.ndarray | DiskRows, test_rows: np.ndarray | None,
                 variants: np.ndarray | DiskRows | None, device: torch.device) -> OnDevice | FromFile:
    """:class:`FromFile` when any of the rows are in a file, else :class:`OnDevice`."""
    route = FromFile if any(is_spilled(a) for a in (x_train, x_test, variants)) else OnDevice
    return route(model, x_train, train_rows, x_test, test_rows, variants, device)
