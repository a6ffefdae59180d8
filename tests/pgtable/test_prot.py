"""KVM's prot set <-> stage-2 and hyp stage-1 descriptor bits, with and without FWB.

Expected encodings are the Arm ARM's: stage-2 MemAttr[3:0] (0b1111 Normal WB, 0b0101
Normal NC, 0b0001 Device-nGnRE; with FEAT_S2FWB 0b110 forced WB, 0b101 forced NC,
0b001 Device-nGnRE), S2AP[1:0] at bits 7:6, XN[1:0] at 54:53 (FEAT_XNX: 00 both, 01 EL0
only, 10 none, 11 EL1 only), SH at 9:8 (0b11 Inner), AF at 10.
"""

import itertools

import pytest

from s2mmu.arch.bits import bits
from s2mmu.pgtable.caps import KvmCaps
from s2mmu.pgtable.env import new_env, new_stage2
from s2mmu.pgtable.errno import EINVAL
from s2mmu.pgtable.prot import (
    KvmPgtableProt,
    hyp_set_prot_attr,
    kvm_pgtable_hyp_pte_prot,
    kvm_pgtable_stage2_pte_prot,
    stage2_set_prot_attr,
)
from s2mmu.pgtable.pte import granule, kvm_init_valid_leaf_pte
from s2mmu.pgtable.table import KVM_PGTABLE_S2_NOFWB, KvmPgtable

P = KvmPgtableProt


def stage2(fwb: bool = False, xnx: bool = False, flags: int = 0) -> KvmPgtable:
    return new_stage2(new_env(caps=KvmCaps(stage2_fwb=fwb, xnx=xnx)), 40, flags=flags)


def attr_of(pgt: KvmPgtable, prot: int) -> int:
    ret, attr = stage2_set_prot_attr(pgt, prot)
    assert ret == 0
    return attr


@pytest.mark.parametrize(
    ("prot", "fwb", "memattr"),
    [
        (P.R, False, 0b1111),
        (P.R | P.NORMAL_NC, False, 0b0101),
        (P.R | P.DEVICE, False, 0b0001),
        (P.R, True, 0b0110),
        (P.R | P.NORMAL_NC, True, 0b0101),
        (P.R | P.DEVICE, True, 0b0001),
    ],
)
def test_stage2_memattr_follows_the_memory_type_and_fwb(prot: int, fwb: bool, memattr: int) -> None:
    assert bits(attr_of(stage2(fwb=fwb), prot), 5, 2) == memattr


def test_nofwb_flag_keeps_the_non_fwb_encoding_on_an_fwb_host() -> None:
    assert bits(attr_of(stage2(fwb=True, flags=KVM_PGTABLE_S2_NOFWB), P.R), 5, 2) == 0b1111


def test_stage2_leaf_is_inner_shareable_and_accessed() -> None:
    attr = attr_of(stage2(), P.R)
    assert bits(attr, 9, 8) == 0b11
    assert bits(attr, 10, 10) == 1


@pytest.mark.parametrize(("prot", "s2ap"), [(0, 0b00), (P.R, 0b01), (P.W, 0b10), (P.R | P.W, 0b11)])
def test_s2ap_bits_6_and_7_are_read_and_write(prot: int, s2ap: int) -> None:
    assert bits(attr_of(stage2(), prot), 7, 6) == s2ap


@pytest.mark.parametrize(
    ("prot", "xn"), [(P.PX | P.UX, 0b00), (P.UX, 0b01), (0, 0b10), (P.PX, 0b11)]
)
def test_xn_field_encodes_el1_and_el0_execute_with_xnx(prot: int, xn: int) -> None:
    assert bits(attr_of(stage2(xnx=True), P.R | prot), 54, 53) == xn


@pytest.mark.parametrize("prot", [P.PX, P.UX])
def test_split_execute_permission_needs_feat_xnx(prot: int) -> None:
    assert stage2_set_prot_attr(stage2(xnx=False), P.R | prot) == (-EINVAL, 0)


@pytest.mark.parametrize(
    "prot",
    [
        P.R | P.DEVICE | P.NORMAL_NC,
        P.R | P.DEVICE | P.X,
        P.R | P.NORMAL_NC | P.X,
        P.R | P.DEVICE | P.PX,
    ],
)
def test_device_and_nc_exclude_each_other_and_execution(prot: int) -> None:
    assert stage2_set_prot_attr(stage2(xnx=True), prot)[0] == -EINVAL


@pytest.mark.parametrize(
    "perms",
    [sum(c, P(0)) for n in range(5) for c in itertools.combinations([P.R, P.W, P.PX, P.UX], n)],
)
@pytest.mark.parametrize("sw", [P(0), P.SW0 | P.SW3])
def test_stage2_prot_round_trips_through_a_leaf(perms: P, sw: P) -> None:
    g = granule(12)
    pte = kvm_init_valid_leaf_pte(0x1000, attr_of(stage2(xnx=True), perms | sw), 3, g)
    assert kvm_pgtable_stage2_pte_prot(pte) == perms | sw


def test_invalid_entry_reports_only_software_bits() -> None:
    assert kvm_pgtable_stage2_pte_prot(1 << 55) == P.SW0


# Hyp stage 1: AP[2:1] at 7:6 (nVHE: 0b01 RW at EL2, 0b11 RO; with E2H the EL2&0 encoding
# 0b00 RW, 0b10 RO), XN at 54, GP at 50, AttrIndx at 4:2.


@pytest.mark.parametrize(
    ("hvhe", "prot", "ap"),
    [(False, P.R | P.W, 0b01), (False, P.R, 0b11), (True, P.R | P.W, 0b00), (True, P.R, 0b10)],
)
def test_hyp_ap_encoding_depends_on_hvhe(hvhe: bool, prot: int, ap: int) -> None:
    ret, attr = hyp_set_prot_attr(prot, KvmCaps(hvhe=hvhe))
    assert ret == 0
    assert bits(attr, 7, 6) == ap


@pytest.mark.parametrize("prot", [P.W, P.R | P.W | P.X, P.R | P.X | P.DEVICE, P(0)])
def test_hyp_mappings_must_be_readable_and_never_writable_executable_or_device_exec(
    prot: int,
) -> None:
    assert hyp_set_prot_attr(prot, KvmCaps()) == (-EINVAL, 0)


def test_hyp_executable_mapping_gets_gp_only_with_bti() -> None:
    assert bits(hyp_set_prot_attr(P.R | P.X, KvmCaps(bti_kernel=True))[1], 50, 50) == 1
    assert bits(hyp_set_prot_attr(P.R | P.X, KvmCaps())[1], 50, 50) == 0
    assert bits(hyp_set_prot_attr(P.R, KvmCaps())[1], 54, 54) == 1


@pytest.mark.parametrize("hvhe", [False, True])
@pytest.mark.parametrize("prot", [P.R, P.R | P.W, P.R | P.X, P.R | P.SW1])
def test_hyp_prot_round_trips(hvhe: bool, prot: P) -> None:
    caps = KvmCaps(hvhe=hvhe)
    pte = kvm_init_valid_leaf_pte(0x1000, hyp_set_prot_attr(prot, caps)[1], 3, granule(12))
    assert kvm_pgtable_hyp_pte_prot(pte, caps) == prot
