"""The fault path on the plain twins and on the stepped generators: identical outcomes.

Random guest accesses (reads, writes, fetches) and host events (dirty logging on and off,
KVM_GET_DIRTY_LOG, munmap under the slot) drive kvm_handle_guest_abort twice, once with
every kernel-named page-table call driving its generator (s2mmu.pgtable.steps
generator_path) and once on the twins; every outcome, every event and every stage-2
table word must match.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s2mmu.kvm.dirty import kvm_get_dirty_log_protect
from s2mmu.kvm.fault import AbortOutcome
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import KvmError, set_slot_flags
from s2mmu.pgtable.steps import generator_path
from tests.kvm.helpers import NO_FWB, RAM_HVA, RAM_IPA, add_ram, new_vm, touch

SZ_4K, SZ_2M = 0x1000, 0x20_0000
RAM = 8 << 20

pages = st.builds(lambda blk, page: blk * SZ_2M + page * SZ_4K,
                  st.integers(0, RAM // SZ_2M - 1), st.sampled_from([0, 1, 7, 511]))
Event = tuple[str, int]
events = st.one_of(
    st.tuples(st.sampled_from(["read", "write", "exec"]), pages),
    st.tuples(st.sampled_from(["log_on", "log_off", "get_log"]), st.just(0)),
    st.tuples(st.just("munmap"), st.integers(0, RAM // SZ_2M - 1)),
)


def _run(seq: list[Event], thp: bool, fwb: bool, generators: bool
         ) -> tuple[list[AbortOutcome | bytes | None], list[object], list[bytes]]:
    kvm, vcpu = new_vm() if fwb else new_vm(NO_FWB)
    add_ram(kvm, size=RAM, thp=thp)
    out: list[AbortOutcome | bytes | None] = []
    with generator_path(generators):
        for what, arg in seq:
            if what in ("read", "write", "exec"):
                out.append(touch(kvm, vcpu, RAM_IPA + arg, what))
            elif what == "log_on":
                set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
            elif what == "log_off":
                set_slot_flags(kvm, 0, 0)
            elif what == "get_log":
                try:
                    out.append(kvm_get_dirty_log_protect(kvm, 0))
                except KvmError as e:  # not logging: refused, the same way both times
                    out.append(str(e).encode())
            else:
                kvm.host.munmap(RAM_HVA + arg * SZ_2M, SZ_2M)
    env = kvm.env
    page = env.g.page_size
    used = [env.pool.base + i * page for i in range(env.pool.npages)
            if env.pool.base + i * page in env.pool.refcount]
    return out, list(env.events), [env.mem.read_bytes(p, page) for p in used]


@settings(max_examples=40, deadline=None)
@given(seq=st.lists(events, min_size=1, max_size=14), thp=st.booleans(), fwb=st.booleans())
def test_fault_path_twins_match_the_generators(seq: list[Event], thp: bool, fwb: bool) -> None:
    assert _run(seq, thp, fwb, True) == _run(seq, thp, fwb, False)
