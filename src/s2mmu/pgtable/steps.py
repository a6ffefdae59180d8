"""Operations as generators that pause at every descriptor access.

Every function that reads, writes or compare-and-swaps a descriptor is written as a
generator that yields a :data:`Step` just before the access. The sequential path drives
the generator to completion with :func:`run` (no scheduling, no copies); the concurrency
explorer (``s2mmu.pgtable.concurrency``) instead resumes several such generators in a
chosen order, one access at a time.

Public operations are declared with :func:`stepped`, which gives the kernel-named plain
function (``kvm_pgtable_stage2_map(pgt, ...) -> int``) and keeps the generator form as
its ``.steps`` attribute (``kvm_pgtable_stage2_map.steps(pgt, ...)``).
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Generator
from typing import Generic, NamedTuple, ParamSpec, TypeVar

from s2mmu.arch.reprs import hex_repr

T = TypeVar("T")
P = ParamSpec("P")

READ = "read"
WRITE = "write"
CAS = "cas"


@hex_repr()
class Step(NamedTuple):
    """One pending descriptor access: its kind (read, write, cas) and physical address."""

    access: str
    pa: int


Gen = Generator[Step, None, T]


def _capture(gen: Gen[T], box: list[T]) -> Generator[Step, None, None]:
    box.append((yield from gen))


def run(gen: Gen[T]) -> T:
    """Drive a stepped operation to completion and return its result.

    The generator is exhausted by deque() in C; the extra delegation level costs one
    frame per access instead of a Python-level loop.
    """
    box: list[T] = []
    deque(_capture(gen, box), maxlen=0)
    return box[0]


class Stepped(Generic[P, T]):
    """A kernel-named operation: call it for the result, or use .steps for its generator."""

    def __init__(self, fn: Callable[P, Gen[T]]) -> None:
        self.steps = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return run(self.steps(*args, **kwargs))


def stepped(fn: Callable[P, Gen[T]]) -> Stepped[P, T]:
    """Declare a generator function as a stepped operation (see module docstring)."""
    return Stepped(fn)
