"""L1's TLBIs on the shadow stage 2s: TTL decoding for each granule, the range encoding,
the feature checks KVM makes (FEAT_TTL, FEAT_TLBIRANGE), VMALLE1IS."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.builder import s2_attrs
from s2mmu.arch.state import SysRegs
from s2mmu.nested.mmu import (
    MAX_INVAL_SIZE,
    SZ_1G,
    SZ_2M,
    SZ_4K,
    SZ_16K,
    SZ_32M,
    SZ_64K,
    SZ_512M,
    TLBI_TTL_TG_4K,
    TLBI_TTL_TG_16K,
    TLBI_TTL_TG_64K,
    NestedKvm,
    NestedMmu,
    ShadowS1Tlbi,
    ShadowUnmap,
    compute_tlb_inval_range,
    decode_range_tlbi,
    encode_ipas2_xt,
    encode_range_xt,
    get_guest_mapping_ttl,
    get_s2_mmu_nested,
    handle_ipas2e1is,
    handle_ripas2e1is,
    handle_tlbi_el1,
    kvm_nested_handle_guest_abort,
    kvm_vcpu_load_hw_mmu,
    ttl_to_size,
    vtcr_ttl_granule,
)
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from tests.kvm.helpers import RAM_IPA, dabt

from .test_mmu import FSC_TRANS_L3, L2_IPA, setup

VTCR_TG0 = {SZ_4K: 0b00 << 14, SZ_16K: 0b10 << 14, SZ_64K: 0b01 << 14}


@pytest.mark.parametrize(("tg", "level", "size"), [
    (TLBI_TTL_TG_4K, 0, 0), (TLBI_TTL_TG_4K, 1, SZ_1G), (TLBI_TTL_TG_4K, 2, SZ_2M),
    (TLBI_TTL_TG_4K, 3, SZ_4K),
    (TLBI_TTL_TG_16K, 0, 0), (TLBI_TTL_TG_16K, 1, 0), (TLBI_TTL_TG_16K, 2, SZ_32M),
    (TLBI_TTL_TG_16K, 3, SZ_16K),
    (TLBI_TTL_TG_64K, 0, 0), (TLBI_TTL_TG_64K, 1, 0), (TLBI_TTL_TG_64K, 2, SZ_512M),
    (TLBI_TTL_TG_64K, 3, SZ_64K),
    (0, 3, 0), (0, 1, 0)])
def test_ttl_to_size_for_every_granule_and_level(tg: int, level: int, size: int) -> None:
    assert ttl_to_size(tg << 2 | level) == size


@pytest.mark.parametrize(("tg0", "tg"), [(0b00, TLBI_TTL_TG_4K), (0b10, TLBI_TTL_TG_16K),
                                         (0b01, TLBI_TTL_TG_64K), (0b11, TLBI_TTL_TG_64K)])
def test_vtcr_tg0_reads_as_kvm_reads_it_reserved_is_64k(tg0: int, tg: int) -> None:
    assert vtcr_ttl_granule(tg0 << 14) == tg


@pytest.mark.parametrize(("tg", "shift"), [(0, 16), (1, 12), (2, 14), (3, 16)])
def test_range_tlbi_decodes_tg_scale_num_and_base(tg: int, shift: int) -> None:
    xt = tg << 46 | 2 << 44 | 3 << 39 | 0b11 << 37 | 0x1234
    base, size = decode_range_tlbi(xt)
    assert base == 0x1234 << shift
    assert size == (3 + 1) << (5 * 2 + 1) << shift  # TTL [38:37] ignored


@given(st.sampled_from([SZ_4K, SZ_16K, SZ_64K]), st.integers(0, (1 << 36) - 1),
       st.integers(0, 3), st.integers(0, 31), st.integers(0, 3))
def test_range_encoding_round_trips(granule: int, pages: int, scale: int, num: int,
                                    ttl: int) -> None:
    base = pages * granule
    if base >> (granule.bit_length() - 1) >> 37:
        return
    got = decode_range_tlbi(encode_range_xt(base, granule, scale, num, ttl))
    assert got == (base, (num + 1) << (5 * scale + 1) << (granule.bit_length() - 1))


def test_range_encoding_refuses_a_misaligned_base_and_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="not a multiple of the 16K granule"):
        encode_range_xt(0x1000, SZ_16K, 0, 0)
    with pytest.raises(ValueError, match="SCALE 4"):
        encode_range_xt(0, SZ_4K, 4, 0)


@pytest.mark.parametrize("granule", [SZ_4K, SZ_16K, SZ_64K])
def test_ipas2_encoding_puts_the_ttl_in_47_44(granule: int) -> None:
    xt = encode_ipas2_xt(0x8020_0000, granule, 3)
    assert xt & ((1 << 36) - 1) == 0x80200
    assert ttl_to_size(xt >> 44) == granule
    assert encode_ipas2_xt(0x8020_0000) >> 44 == 0


@pytest.mark.parametrize("granule", [SZ_4K, SZ_16K, SZ_64K])
def test_no_ttl_and_no_hint_invalidates_the_granules_largest_block(granule: int) -> None:
    nk, regs, _ = setup()
    mmu = get_s2_mmu_nested(nk, regs)
    mmu.tlb_vtcr = (mmu.tlb_vtcr & ~(3 << 14)) | VTCR_TG0[granule]
    want = MAX_INVAL_SIZE[vtcr_ttl_granule(mmu.tlb_vtcr)]
    assert want == {SZ_4K: SZ_1G, SZ_16K: SZ_32M, SZ_64K: SZ_512M}[granule]
    assert compute_tlb_inval_range(mmu, L2_IPA >> 12, True) == want


def test_the_ttl_is_ignored_without_feat_ttl() -> None:
    nk, regs, _ = setup()
    mmu = get_s2_mmu_nested(nk, regs)
    xt = encode_ipas2_xt(L2_IPA, SZ_4K, 3)
    assert compute_tlb_inval_range(mmu, xt, True) == SZ_4K
    assert compute_tlb_inval_range(mmu, xt, False) == SZ_1G
    nk.vm = replace(nk.vm, fs=nk.vm.fs.with_features(remove=("FEAT_TTL",)))
    assert handle_ipas2e1is(nk, regs, xt) == [ShadowUnmap(5, L2_IPA, SZ_1G)]


def filled(granule_tg0: int) -> tuple[NestedKvm, SysRegs, NestedMmu]:
    """Return a pool whose shadow holds L1's 2M block, its key's TG0 replaced."""
    nk, regs, b = setup()
    vcpu = nk.kvm.vcpus[0]
    b.map(L2_IPA, RAM_IPA, 2 << 20, s2_attrs(), level=2)
    kvm_vcpu_load_hw_mmu(nk, vcpu, regs)
    kvm_nested_handle_guest_abort(nk, vcpu, regs, dabt(FSC_TRANS_L3, L2_IPA + 0x3000))
    mmu = get_s2_mmu_nested(nk, regs)
    mmu.tlb_vtcr = (mmu.tlb_vtcr & ~(3 << 14)) | granule_tg0
    return nk, regs, mmu


def test_the_hint_from_the_software_bits_uses_the_shadows_granule() -> None:
    _, _, mmu = filled(VTCR_TG0[SZ_4K])
    assert get_guest_mapping_ttl(mmu, L2_IPA + 0x3000) == TLBI_TTL_TG_4K << 2 | 2
    # The same leaf under a 16K key: level 2 is a 32M block, the 32M-aligned lookup finds it.
    _, _, mmu16 = filled(VTCR_TG0[SZ_16K])
    assert get_guest_mapping_ttl(mmu16, L2_IPA + 0x3000) == TLBI_TTL_TG_16K << 2 | 2
    assert ttl_to_size(get_guest_mapping_ttl(mmu16, L2_IPA + 0x3000)) == SZ_32M
    _, _, mmu64 = filled(VTCR_TG0[SZ_64K])
    assert ttl_to_size(get_guest_mapping_ttl(mmu64, L2_IPA + 0x3000)) == SZ_512M


def test_a_range_tlbi_drops_exactly_its_range() -> None:
    nk, regs, _ = setup()
    get_s2_mmu_nested(nk, regs)
    xt = encode_range_xt(L2_IPA, SZ_16K, 1, 0)
    assert handle_ripas2e1is(nk, regs, xt) == [ShadowUnmap(5, L2_IPA, 1 << 6 << 14)]


def test_a_range_tlbi_is_undefined_without_feat_tlbirange() -> None:
    nk, regs, _ = setup()
    get_s2_mmu_nested(nk, regs)
    nk.vm = replace(nk.vm, fs=nk.vm.fs.with_features(remove=("FEAT_TLBIRANGE",)))
    assert handle_ripas2e1is(nk, regs, encode_range_xt(L2_IPA, SZ_4K, 0, 0)) is None


def test_vmalle1is_repeats_on_the_shadows_and_keeps_their_stage2() -> None:
    nk, regs, _ = filled(VTCR_TG0[SZ_4K])
    mmu = get_s2_mmu_nested(nk, regs)
    got = handle_tlbi_el1(nk, regs)
    assert got == [ShadowS1Tlbi(5, mmu.pgt.s2_mmu.vmid)]
    assert kvm_pgtable_get_leaf(mmu.pgt, L2_IPA).pte
