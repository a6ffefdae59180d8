"""kvm_walk_nested_s2: L1's stage 2 walked as nested.c does, on the arch walk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2mmu.arch.builder import s2_attrs
from s2mmu.arch.faults import Fault
from s2mmu.arch.features import FeatureSet
from s2mmu.arch.params import Granule
from s2mmu.nested.guest import GuestRegion
from s2mmu.nested.nested import NestedWalkError, check_base_s2_limits, kvm_walk_nested_s2
from s2mmu.pgtable.s2trans import KvmS2Trans, kvm_s2_trans_esr, kvm_s2_trans_output

from .helpers import l1_regs, l1_stage2, l1_vm

G4, G16, G64 = Granule.G4K, Granule.G16K, Granule.G64K


def ok(got: KvmS2Trans | NestedWalkError) -> KvmS2Trans:
    assert isinstance(got, KvmS2Trans) and got.fault is None, got
    return got


def faulted(got: KvmS2Trans | NestedWalkError) -> KvmS2Trans:
    assert isinstance(got, KvmS2Trans) and got.fault is not None, got
    return got


def test_page_translates_with_s2ap_and_xn():
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs(s2ap=0b01, xn=0b10))
    got = ok(kvm_walk_nested_s2(vm, regs, 0x8000_0123))
    assert kvm_s2_trans_output(got) == 0x4000_0123
    assert (got.readable, got.writable, got.exec_el1, got.exec_el0) == (True, False, False, False)
    assert got.level == 3 and got.block_size == 0x1000 and kvm_s2_trans_esr(got) == 0


def test_tables_are_read_in_guest_memory_not_at_host_pa():
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs())
    assert vm.host.read64(regs.VTTBR_EL2) == 0          # nothing at that host PA
    assert vm.host.pages_allocated() > 0
    ok(kvm_walk_nested_s2(vm, regs, 0x8000_0000))


@pytest.mark.parametrize("granule,level,size", [(G4, 1, 1 << 30), (G4, 2, 2 << 20),
                                                (G16, 2, 32 << 20), (G64, 2, 512 << 20)])
def test_blocks_report_their_size_and_level(granule, level, size):
    vm = l1_vm()
    t0sz, sl0 = {G4: (24, 1), G16: (24, 1), G64: (24, 1)}[granule]
    regs, b = l1_stage2(vm, granule, t0sz, sl0)
    b.map(0x8000_0000 // size * size, 0x4000_0000 // size * size, size, s2_attrs(), level=level)
    got = ok(kvm_walk_nested_s2(vm, regs, 0x8000_0000 // size * size + 0x1234))
    assert got.level == level and got.block_size == size


def test_big_endian_tables_follow_sctlr_el2_ee():
    vm = l1_vm()
    regs, b = l1_stage2(vm, big_endian=True)
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs())
    assert kvm_s2_trans_output(ok(kvm_walk_nested_s2(vm, regs, 0x8000_0000))) == 0x4000_0000


def test_access_flag_zero_always_faults_at_its_level():
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    b.map(0x8000_0000, 0x4000_0000, 2 << 20, s2_attrs(af=False), level=2)
    got = faulted(kvm_walk_nested_s2(vm, regs, 0x8000_0000))
    assert got.esr == 0b001010 and got.fault.statuscode is Fault.ACCESS_FLAG
    assert got.desc & 0xFFFF_FFFF_F000 == 0x4000_0000


def test_invalid_descriptor_is_translation_fault_at_its_level():
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs())
    got = faulted(kvm_walk_nested_s2(vm, regs, 0x8000_1000))
    assert got.esr == 0b000111 and got.level == 3


def test_block_below_first_block_level_is_translation_fault():
    vm = l1_vm()
    regs, b = l1_stage2(vm, G16, t0sz=17, sl0=2)     # 47-bit IPA, start at level 1
    b.set_entry(0, 1, 0x1 | s2_attrs())               # a level-1 block with 16KB
    got = faulted(kvm_walk_nested_s2(vm, regs, 0x1000))
    assert got.esr == 0b000101


def test_output_address_size_uses_the_smaller_of_ipa_limit_and_ps():
    vm = l1_vm(ipa_limit=40)
    regs, b = l1_stage2(vm, ps=0b101)                 # PS says 48 bits
    b.map(0x8000_0000, 1 << 41, 0x1000, s2_attrs())
    got = faulted(kvm_walk_nested_s2(vm, regs, 0x8000_0000))
    assert got.fault.statuscode is Fault.ADDRESS_SIZE and got.level == 3


def test_vttbr_base_beyond_output_size_faults_at_the_start_level():
    vm = l1_vm(regions=(GuestRegion(0, 1 << 32, 1 << 33), GuestRegion(1 << 36, 1 << 30, 1 << 34)))
    regs, b = l1_stage2(vm, ps=0b000, base=1 << 36)   # 32-bit output, tables at 64GB
    got = faulted(kvm_walk_nested_s2(vm, regs, 0))
    assert got.esr == 0b000001                          # address size, level 1 (start level)


def test_contiguous_hint_takes_the_low_bits_from_the_ipa():
    vm = l1_vm()
    regs, b = l1_stage2(vm)
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs() | (1 << 52))
    got = ok(kvm_walk_nested_s2(vm, regs, 0x8000_0000 + 0x5123 - 0x5000))
    assert got.output == 0x4000_0123
    b.map(0x8000_5000, 0x4000_0000, 0x1000, s2_attrs() | (1 << 52))
    assert ok(kvm_walk_nested_s2(vm, regs, 0x8000_5123)).output == 0x4000_5123


def test_ipa_bits_above_the_input_size_are_ignored():
    vm = l1_vm()
    regs, b = l1_stage2(vm)                              # 40-bit IPA
    b.map(0x8000_0000, 0x4000_0000, 0x1000, s2_attrs())
    assert ok(kvm_walk_nested_s2(vm, regs, (1 << 40) | 0x8000_0000)).output == 0x4000_0000


def test_descriptor_outside_memslots_refuses_the_walk():
    vm = l1_vm(regions=(GuestRegion(0, 1 << 20, 1 << 33),))
    got = kvm_walk_nested_s2(vm, l1_regs(G4, 24, 1, vttbr=0x4000_0000), 0)
    assert isinstance(got, NestedWalkError) and got.errno == "EFAULT"
    assert "is in no memslot" in got.reason


@pytest.mark.parametrize("granule,t0sz,sl0,why", [
    (G4, 40, 0, "VTCR_EL2.T0SZ=40: a 24-bit IPA is outside 25..48"),
    (G4, 24, 3, "VTCR_EL2.SL0=3: start level -1 is not allowed with 4KB"),
    (G4, 22, 2, "VTCR_EL2.SL0=2: start level 0 needs more than 42 IPA bits with 4KB"),
    (G16, 25, 2, "VTCR_EL2.SL0=2: start level 1 needs more than 40 IPA bits with 16KB"),
    (G64, 24, 0, "VTCR_EL2.SL0=0: an IPA of 40 bits cannot start at level 3"),
])
def test_kvm_refuses_walks_outside_its_limits(granule, t0sz, sl0, why):
    got = kvm_walk_nested_s2(l1_vm(), l1_regs(granule, t0sz, sl0), 0)
    assert got == NestedWalkError("EFAULT", why)


def test_base_limits_accept_concatenated_start_tables():
    assert check_base_s2_limits(G4, 1, 40) == ""        # two concatenated level-1 tables
    assert check_base_s2_limits(G4, 1, 43) == ""        # sixteen
    assert check_base_s2_limits(G4, 1, 44) == "an IPA of 44 bits cannot start at level 1"


# ---------------------------------------------------------------- differential

CONFIGS = [  # (granule, T0SZ, SL0): inside KVM's limits and the architecture's
    (G4, 24, 1), (G4, 32, 1), (G4, 16, 2), (G4, 34, 0), (G4, 28, 1),
    (G16, 24, 1), (G16, 17, 2), (G16, 30, 1), (G64, 24, 1), (G64, 16, 2), (G64, 30, 1),
]


@st.composite
def random_l1(draw):
    granule, t0sz, sl0 = draw(st.sampled_from(CONFIGS))
    ipa_limit = draw(st.sampled_from([40, 44, 48]))
    ps = draw(st.integers(0, 7))
    ia = 64 - t0sz
    leaves = []
    for _ in range(draw(st.integers(1, 6))):
        level = draw(st.integers(1 if granule is G4 else 2, 3))
        size = granule.block_size(level)
        ipa = draw(st.integers(0, (1 << ia) // size - 1)) * size
        oa = draw(st.integers(0, (1 << 44) // size - 1)) * size
        attrs = s2_attrs(s2ap=draw(st.integers(0, 3)), xn=draw(st.integers(0, 3)),
                         af=draw(st.booleans()))
        leaves.append((ipa, oa, size, attrs, level))
    junk = draw(st.lists(st.tuples(st.integers(0, (1 << ia) - 1), st.integers(0, 3),
                                   st.integers(0, (1 << 64) - 1)), max_size=2))
    probes = draw(st.lists(st.integers(0, (1 << ia) - 1), min_size=1, max_size=4))
    return granule, t0sz, sl0, ipa_limit, ps, leaves, junk, probes


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_l1(), st.booleans())
def test_nested_walk_agrees_with_the_arch_stage2_translation(case, xnx):
    from s2mmu.arch.access import acc_gpr
    from s2mmu.arch.config import ImplChoices
    from s2mmu.arch.features import NO_HW_UPDATE
    from s2mmu.arch.params import get_s2_ttw_params
    from s2mmu.arch.translate import AddressDescriptor, Env, s2_translate
    from s2mmu.nested.guest import identity_guest
    from s2mmu.nested.nested import NestedVm

    granule, t0sz, sl0, ipa_limit, ps, leaves, junk, probes = case
    fs = FeatureSet(frozenset({"FEAT_XNX"} if xnx else set()), pa_bits=ipa_limit)
    base = l1_vm()
    vm = NestedVm(fs, ipa_limit, base.host, identity_guest(base.host))
    regs, b = l1_stage2(vm, granule, t0sz, sl0, ps=ps)
    for ipa, oa, size, attrs, level in leaves:
        b.map(ipa, oa, size, attrs, level=level)
    for ipa, level, raw in junk:
        try:
            b.set_entry(ipa, max(level, b.startlevel), raw)
        except Exception:
            pass
    if t0sz < 64 - ipa_limit:
        return                      # listed difference: KVM accepts a larger IPA space
    env = Env(vm.host, fs, ImplChoices(contiguous_oa_from_ia=True), hw=NO_HW_UPDATE)
    p = get_s2_ttw_params(regs, env.fs, env.choices, NO_HW_UPDATE)
    for gipa in probes + [ipa + 0x10 for ipa, *_ in leaves]:
        got = kvm_walk_nested_s2(vm, regs, gipa)
        rd = s2_translate(p, gipa, acc_gpr(1, False), env)
        wr = s2_translate(p, gipa, acc_gpr(1, True), env)
        assert isinstance(got, KvmS2Trans), got
        if isinstance(rd, AddressDescriptor) or rd.statuscode is Fault.PERMISSION:
            assert got.fault is None, (got, rd)
            assert got.readable == isinstance(rd, AddressDescriptor)
            assert got.writable == isinstance(wr, AddressDescriptor)
            if isinstance(rd, AddressDescriptor):
                assert got.output == rd.paddress
        else:
            assert got.fault is not None, (got, rd)
            assert (got.fault.statuscode, got.level) == (rd.statuscode, rd.level), (got, rd)
