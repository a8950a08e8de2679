"""A stand-in for torch in a test venv, where torch itself cannot be installed: just what
templates/smoke_torch.py uses. A tensor is a list of floats; collectives go through the
store (torch.distributed here), so ranks on different nodes really meet at the rendezvous."""

import builtins

from . import cuda  # noqa: F401
from .version import __version__  # noqa: F401

float32, float64 = "float32", "float64"


class device:
    def __init__(self, type, index=None):
        self.type, self.index = type, index


class Tensor:
    def __init__(self, values):
        self.values = [float(v) for v in values]

    def __eq__(self, other):
        return Tensor(v == other for v in self.values)

    def __getitem__(self, i):
        return Tensor([self.values[i]])

    def item(self):
        return self.values[0]


def full(shape, value, device=None):
    return Tensor([value] * shape[0])


def zeros(count, dtype=None, device=None):
    return Tensor([0.0] * count)


def tensor(values, dtype=None, device=None):
    return Tensor(values)


def all(t):
    return Tensor([builtins.all(t.values)])
