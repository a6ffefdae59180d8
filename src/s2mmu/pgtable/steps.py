"""Operations as generators that pause at every descriptor access, and their plain twins.

Every function that reads, writes or compare-and-swaps a descriptor is written as a
generator that yields a :data:`Step` just before the access. The concurrency explorer
(``s2mmu.pgtable.concurrency``) resumes several such generators in a chosen order, one
access at a time.

When nothing schedules the walk, stepping costs a generator frame per call level and a
resumption per access. The sequential path therefore calls each stepped function's
*plain twin*: the same source, compiled a second time by :func:`plain` with the pauses
taken out (an AST transform, so there is one source of truth and no hand-written copy):

- a statement ``yield Step(...)`` (or a bare ``yield``) is dropped;
- ``yield from f(args)`` becomes ``twin(f)(args)``: the plain twin of whatever ``f``
  evaluates to at run time (a module function, a ``.steps`` attribute, a visitor taken
  from a walker record, a bound method), found through the :data:`TWINS` table;
- ``yield from expr`` where expr is not a call becomes ``run(expr)``.

Anything the transform cannot prove equivalent (a yield used as a value, a yield of
something else than a Step, a function with free variables, a non-generator callable
that returns a generator) gets a twin that simply drives the generator with :func:`run`:
slower, never different. ``tests/pgtable/test_steps.py`` runs random operation
sequences both ways and compares every descriptor word, event and return value.

Public operations are declared with :func:`stepped`, which gives the kernel-named plain
function (``kvm_pgtable_stage2_map(pgt, ...) -> int``) and keeps the generator form as
its ``.steps`` attribute (``kvm_pgtable_stage2_map.steps(pgt, ...)``). Calling the
kernel-named function uses the plain twin, or drives the generator when the generator
path is selected (environment ``S2MMU_STEPS=generator``, or :func:`generator_path`),
which is how the benchmarks print both figures side by side.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import os
import textwrap
import types
from collections import deque
from collections.abc import Callable, Generator, Iterator
from typing import Any, Generic, NamedTuple, ParamSpec, TypeVar

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


# ---------------------------------------------------------------------------------------
# Plain twins.

_TWIN_MARK = "__s2mmu_twin_of__"


class TwinError(Exception):
    """The transform cannot prove the plain form equivalent (the twin falls back to run)."""


class _Twins(dict[Any, Callable[..., Any]]):
    """Plain twin per stepped callable, built on first use.

    Bound methods are not cached (the table would keep their objects alive): their
    function's twin is bound again per call.
    """

    def __missing__(self, fn: Any) -> Callable[..., Any]:
        if isinstance(fn, types.MethodType):
            return types.MethodType(self[fn.__func__], fn.__self__)
        twin = _make_twin(fn)
        self[fn] = twin
        return twin


TWINS = _Twins()


def plain(fn: Callable[P, Gen[T]]) -> Callable[P, T]:
    """Return the plain twin of a stepped callable (see the module docstring)."""
    return TWINS[fn]


def twin_is_transformed(fn: Callable[..., Any]) -> bool:
    """Return whether fn's twin is compiled from its source (not the run() fallback)."""
    twin = plain(fn)
    if isinstance(twin, types.MethodType):
        twin = twin.__func__
    return getattr(twin, _TWIN_MARK, None) is not None


def _make_twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(fn):
        try:
            return _compile_twin(fn)
        except TwinError:
            pass

    def driven(*args: Any, **kwargs: Any) -> Any:
        return run(fn(*args, **kwargs))

    return driven


class _StripSteps(ast.NodeTransformer):
    """Rewrite one generator function's body into its plain form (module docstring)."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node  # a nested def keeps its own yields

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        raise TwinError("async def")

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        value = node.value
        if isinstance(value, ast.Yield):
            if value.value is not None and not _is_step(value.value):
                raise TwinError("yield of something else than a Step")
            return ast.copy_location(ast.Pass(), node)
        return self.generic_visit(node)

    def visit_Yield(self, node: ast.Yield) -> ast.AST:
        raise TwinError("yield used as a value")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> ast.AST:
        self.generic_visit(node)
        value = node.value
        if isinstance(value, ast.Call):
            twin = ast.Subscript(ast.Name("__s2_twins", ast.Load()), value.func, ast.Load())
            new: ast.expr = ast.Call(twin, value.args, value.keywords)
        else:
            new = ast.Call(ast.Name("__s2_run", ast.Load()), [value], [])
        return ast.copy_location(new, node)


def _is_step(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "Step"
        and all(isinstance(a, (ast.Name, ast.Attribute, ast.Constant)) for a in node.args)
        and not node.keywords
    )


def _compile_twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Compile fn's source with the pauses taken out, in fn's own module namespace."""
    code = fn.__code__
    if code.co_freevars:
        raise TwinError("free variables")
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as e:
        raise TwinError("no source") from e
    tree = ast.parse(source)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef) or fdef.name != code.co_name:
        raise TwinError("source is not one def")
    fdef.decorator_list = []
    fdef.returns = None  # annotations are not evaluated: names may be TYPE_CHECKING-only
    arguments = fdef.args
    for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
              arguments.vararg, arguments.kwarg]:
        if a is not None:
            a.annotation = None
    fdef.name = "__s2_twin__"
    fdef.body = [_StripSteps().visit(s) for s in fdef.body]
    maker = ast.FunctionDef(
        name="__s2_make__",
        args=ast.arguments(
            posonlyargs=[],
            args=[ast.arg("__s2_twins"), ast.arg("__s2_run")],
            kwonlyargs=[],
            kw_defaults=[],
            defaults=[],
        ),
        body=[fdef, ast.Return(ast.Name("__s2_twin__", ast.Load()))],
        decorator_list=[],
        lineno=1,
    )
    module = ast.Module([maker], type_ignores=[])
    ast.fix_missing_locations(module)
    ast.increment_lineno(module, code.co_firstlineno - 1)
    compiled = compile(module, code.co_filename, "exec", dont_inherit=True)
    namespace: dict[str, Any] = {}
    exec(compiled, fn.__globals__, namespace)  # noqa: S102 - the module's own source
    twin = namespace["__s2_make__"](TWINS, run)
    twin.__code__ = twin.__code__.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    twin.__defaults__ = fn.__defaults__
    twin.__kwdefaults__ = fn.__kwdefaults__
    functools.update_wrapper(twin, fn)
    setattr(twin, _TWIN_MARK, fn)
    return twin  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------
# Stepped operations and the choice of path.

_generator_path = os.environ.get("S2MMU_STEPS", "") == "generator"


def generator_path_selected() -> bool:
    """Return whether kernel-named calls drive the generators instead of the twins."""
    return _generator_path


@contextlib.contextmanager
def generator_path(selected: bool = True) -> Iterator[None]:
    """Within the block, kernel-named calls drive the generators (or not, if False)."""
    global _generator_path
    saved, _generator_path = _generator_path, selected
    try:
        yield
    finally:
        _generator_path = saved


class Stepped(Generic[P, T]):
    """A kernel-named operation: call it for the result, or use .steps for its generator."""

    def __init__(self, fn: Callable[P, Gen[T]]) -> None:
        self.steps = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        if _generator_path:
            return run(self.steps(*args, **kwargs))
        return TWINS[self.steps](*args, **kwargs)  # type: ignore[no-any-return]


def stepped(fn: Callable[P, Gen[T]]) -> Stepped[P, T]:
    """Declare a generator function as a stepped operation (see module docstring)."""
    return Stepped(fn)
