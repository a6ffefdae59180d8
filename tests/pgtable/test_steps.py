"""Stepped operations: a plain call runs the generator; .steps exposes every access."""

from s2mmu.pgtable.steps import Gen, Step, run, stepped


@stepped
def two_reads(a: int) -> Gen[int]:
    """Read twice, return a + 1."""
    yield Step("read", a)
    yield Step("read", a + 8)
    return a + 1


def test_plain_call_returns_the_generators_result() -> None:
    assert two_reads(10) == 11


def test_steps_form_yields_each_access_before_it_happens() -> None:
    gen = two_reads.steps(16)
    assert next(gen) == Step("read", 16)
    assert next(gen) == Step("read", 24)


def test_run_drives_any_generator_to_its_return_value() -> None:
    assert run(two_reads.steps(1)) == 2


def test_stepped_keeps_the_kernel_name_and_docstring() -> None:
    assert two_reads.__name__ == "two_reads"
    assert two_reads.__doc__ == "Read twice, return a + 1."


# ---------------------------------------------------------------------------------------
# Plain twins: the same source with the pauses taken out, proven equal to the generators.

import dis  # noqa: E402
import types  # noqa: E402
from collections.abc import Callable  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from s2mmu.pgtable import stage2, walk  # noqa: E402
from s2mmu.pgtable.caps import KvmCaps  # noqa: E402
from s2mmu.pgtable.env import new_env, new_stage2, pkvm_guest_mm_ops  # noqa: E402
from s2mmu.pgtable.mm import KvmMmuMemoryCache, __kvm_mmu_topup_memory_cache  # noqa: E402
from s2mmu.pgtable.profile import PROFILES  # noqa: E402
from s2mmu.pgtable.prot import KvmPgtableProt  # noqa: E402
from s2mmu.pgtable.steps import (  # noqa: E402
    Stepped,
    generator_path,
    generator_path_selected,
    plain,
    twin_is_transformed,
)


@stepped
def _reads_then_delegates(a: int, extra: int = 5) -> Gen[int]:
    """A stepped function calling another through yield from, with a default."""
    yield Step("read", a)
    got = yield from two_reads.steps(a)
    yield
    return got + extra


def _plain_returns_a_generator(a: int) -> Gen[int]:
    return two_reads.steps(a)


def _yield_as_value(a: int) -> Gen[int]:
    sent = yield Step("read", a)
    return a if sent is None else 0


def test_twin_drops_the_pauses_and_calls_the_callees_twins() -> None:
    twin = plain(_reads_then_delegates.steps)
    assert twin_is_transformed(_reads_then_delegates.steps)
    assert twin(10) == 16 and twin(10, extra=0) == 11
    assert not isinstance(twin(1), types.GeneratorType)
    assert twin.__name__ == "_reads_then_delegates"
    lines = {line for _, line in dis.findlinestarts(twin.__code__)}
    original = {line for _, line in dis.findlinestarts(_reads_then_delegates.steps.__code__)}
    assert twin.__code__.co_filename == _reads_then_delegates.steps.__code__.co_filename
    body = {line for line in original if line is not None and line > min(original)}
    assert body <= lines  # tracebacks point at the source's own lines


def test_what_the_transform_cannot_prove_is_driven_by_run() -> None:
    assert not twin_is_transformed(_plain_returns_a_generator)
    assert plain(_plain_returns_a_generator)(3) == 4
    assert not twin_is_transformed(_yield_as_value)
    assert plain(_yield_as_value)(3) == 3


def test_generator_path_is_selectable_and_restored() -> None:
    before = generator_path_selected()
    with generator_path():
        assert generator_path_selected()
        assert _reads_then_delegates(1) == 7
        with generator_path(False):
            assert not generator_path_selected()
    assert generator_path_selected() == before


def _stepped_ops(module: types.ModuleType) -> list[Stepped[..., object]]:
    return [v for v in vars(module).values() if isinstance(v, Stepped)]


@pytest.mark.parametrize(
    "op", _stepped_ops(stage2) + _stepped_ops(walk), ids=lambda op: op.__name__
)
def test_every_library_operation_gets_a_compiled_twin(op: Stepped[..., object]) -> None:
    assert twin_is_transformed(op.steps)


def test_visitors_and_bound_methods_resolve_to_twins() -> None:
    assert twin_is_transformed(stage2.stage2_map_walker)
    assert twin_is_transformed(walk.leaf_walker)
    env = new_env()
    pgt = new_stage2(env, 40)
    bound = plain(pgt.ops.free_unlinked_table)
    assert isinstance(bound, types.MethodType) and bound.__self__ is pgt.ops
    assert twin_is_transformed(pgt.ops.free_unlinked_table)


# Random operation sequences, run on the generators and on the twins.

BASE = 0x4000_0000
SZ_4K, SZ_2M = 0x1000, 0x20_0000
PROTS = [
    KvmPgtableProt.R,
    KvmPgtableProt.R | KvmPgtableProt.W,
    KvmPgtableProt.R | KvmPgtableProt.W | KvmPgtableProt.X,
    KvmPgtableProt.R | KvmPgtableProt.DEVICE,
    KvmPgtableProt.R | KvmPgtableProt.W | KvmPgtableProt.NORMAL_NC,
]
addrs = st.builds(lambda blk, page: BASE + blk * SZ_2M + page * SZ_4K,
                  st.integers(0, 3), st.sampled_from([0, 1, 2, 511]))
sizes = st.sampled_from([SZ_4K, 2 * SZ_4K, SZ_2M, 2 * SZ_2M, SZ_2M + SZ_4K])
shared = st.sampled_from([0, walk.KVM_PGTABLE_WALK_SHARED])
Op = tuple[str, tuple[int, ...]]
ops = st.one_of(
    st.tuples(st.just("map"), st.tuples(addrs, sizes, st.integers(0, 7), st.integers(0, 4),
                                        shared)),
    st.tuples(st.just("unmap"), st.tuples(addrs, sizes)),
    st.tuples(st.just("wrprotect"), st.tuples(addrs, sizes)),
    st.tuples(st.just("mkyoung"), st.tuples(addrs, shared)),
    st.tuples(st.just("young"), st.tuples(addrs, sizes, st.integers(0, 1))),
    st.tuples(st.just("relax"), st.tuples(addrs, st.integers(0, 4), shared)),
    st.tuples(st.just("split"), st.tuples(addrs, sizes)),
    st.tuples(st.just("owner"), st.tuples(addrs, sizes, st.integers(0, 3))),
    st.tuples(st.just("flush"), st.tuples(addrs, sizes)),
    st.tuples(st.just("leaf"), st.tuples(addrs,)),
)


def _apply(op: Op, pgt: object, mc: KvmMmuMemoryCache, split_mc: KvmMmuMemoryCache) -> object:
    name, a = op
    table: dict[str, Callable[[], object]] = {
        "map": lambda: stage2.kvm_pgtable_stage2_map(
            pgt, a[0], a[1], 0x8000_0000 + a[2] * SZ_2M + (a[0] & (SZ_2M - 1)),
            PROTS[a[3] % len(PROTS)], mc, a[4] if len(a) > 4 else 0),
        "unmap": lambda: stage2.kvm_pgtable_stage2_unmap(pgt, a[0], a[1]),
        "wrprotect": lambda: stage2.kvm_pgtable_stage2_wrprotect(pgt, a[0], a[1]),
        "mkyoung": lambda: stage2.kvm_pgtable_stage2_mkyoung(pgt, a[0], a[1]),
        "young": lambda: stage2.kvm_pgtable_stage2_test_clear_young(pgt, a[0], a[1],
                                                                     bool(a[2])),
        "relax": lambda: stage2.kvm_pgtable_stage2_relax_perms(
            pgt, a[0], PROTS[a[1] % len(PROTS)], a[2]),
        "split": lambda: stage2.kvm_pgtable_stage2_split(pgt, a[0], a[1], split_mc),
        "owner": lambda: stage2.kvm_pgtable_stage2_set_owner(pgt, a[0], a[1], mc, a[2]),
        "flush": lambda: stage2.kvm_pgtable_stage2_flush(pgt, a[0], a[1]),
        "leaf": lambda: walk.kvm_pgtable_get_leaf(pgt, a[0]),
    }
    return table[name]()


def _run_sequence(seq: list[Op], profile: str, caps: KvmCaps, pkvm: bool, generators: bool
                  ) -> tuple[list[object], list[object], list[bytes], dict[int, int]]:
    env = new_env(caps=caps, profile=PROFILES[profile])
    pgt = new_stage2(env, 40, mm_ops=pkvm_guest_mm_ops(env) if pkvm else None)
    mc, split_mc = KvmMmuMemoryCache(), KvmMmuMemoryCache()
    __kvm_mmu_topup_memory_cache(mc, env.pool, 40, 40)
    __kvm_mmu_topup_memory_cache(split_mc, env.pool, 8, 8)
    with generator_path(generators):
        results = [_apply(op, pgt, mc, split_mc) for op in seq]
    page = env.g.page_size
    used = [env.pool.base + i * page for i in range(env.pool.npages)
            if env.pool.base + i * page in env.pool.refcount
            or env.pool.base + i * page in env.pool.freed]
    words = [env.mem.read_bytes(p, page) for p in used]
    return results, list(env.events), words, dict(env.pool.refcount)


@settings(max_examples=60, deadline=None)
@given(seq=st.lists(ops, min_size=1, max_size=12),
       profile=st.sampled_from(sorted(PROFILES)),
       caps=st.builds(KvmCaps, stage2_fwb=st.booleans(), tlb_range=st.booleans(),
                      dic=st.booleans()),
       pkvm=st.booleans())
def test_twins_and_generators_agree_on_every_word_event_and_result(
    seq: list[Op], profile: str, caps: KvmCaps, pkvm: bool
) -> None:
    """Host KVM (RCU-deferred frees) and pKVM's guest mm_ops (immediate frees, EL2)."""
    generators = _run_sequence(seq, profile, caps, pkvm, True)
    assert generators == _run_sequence(seq, profile, caps, pkvm, False)
