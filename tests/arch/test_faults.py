"""Faults as values and their encodings: FSC per (kind, level), PAR_EL1, ESR, HPFAR."""

import pytest

from s2mmu.arch.access import AccessDescriptor as Acc
from s2mmu.arch.access import AccessType, acc_at, acc_gpr, acc_ifetch
from s2mmu.arch.faults import (
    FSC_NAMES,
    Fault,
    FaultRecord,
    as_stage2,
    decode_fsc,
    esr_abort,
    esr_undefined,
    fsc,
    hpfar,
    make_fault,
    par_fault,
    reports_hpfar,
)

READ = acc_gpr(1, False)

# The Arm ARM's DFSC/IFSC table (ESR_ELx ISS encoding for a Data Abort), by hand.
FSC_TABLE = [
    (Fault.ADDRESS_SIZE, -1, 0b101001), (Fault.ADDRESS_SIZE, 0, 0b000000),
    (Fault.ADDRESS_SIZE, 1, 0b000001), (Fault.ADDRESS_SIZE, 2, 0b000010),
    (Fault.ADDRESS_SIZE, 3, 0b000011),
    (Fault.TRANSLATION, -1, 0b101011), (Fault.TRANSLATION, 0, 0b000100),
    (Fault.TRANSLATION, 1, 0b000101), (Fault.TRANSLATION, 2, 0b000110),
    (Fault.TRANSLATION, 3, 0b000111),
    (Fault.ACCESS_FLAG, 0, 0b001000), (Fault.ACCESS_FLAG, 1, 0b001001),
    (Fault.ACCESS_FLAG, 2, 0b001010), (Fault.ACCESS_FLAG, 3, 0b001011),
    (Fault.PERMISSION, 0, 0b001100), (Fault.PERMISSION, 1, 0b001101),
    (Fault.PERMISSION, 2, 0b001110), (Fault.PERMISSION, 3, 0b001111),
    (Fault.SYNC_EXTERNAL_ON_WALK, -1, 0b010011), (Fault.SYNC_EXTERNAL_ON_WALK, 0, 0b010100),
    (Fault.SYNC_EXTERNAL_ON_WALK, 1, 0b010101), (Fault.SYNC_EXTERNAL_ON_WALK, 2, 0b010110),
    (Fault.SYNC_EXTERNAL_ON_WALK, 3, 0b010111),
    (Fault.SYNC_EXTERNAL, 0, 0b010000), (Fault.ALIGNMENT, 0, 0b100001),
    (Fault.TLB_CONFLICT, 0, 0b110000),
]


@pytest.mark.parametrize(("kind", "level", "code"), FSC_TABLE)
def test_fsc_for_kind_and_level(kind, level, code):
    assert fsc(FaultRecord(kind, level, READ)) == code


@pytest.mark.parametrize("kind", [Fault.ACCESS_FLAG, Fault.PERMISSION])
def test_fsc_rejects_leaf_only_kinds_at_level_minus_1(kind):
    with pytest.raises(ValueError, match="fault cannot be reported at level -1"):
        fsc(FaultRecord(kind, -1, READ))


def test_fsc_rejects_level_out_of_range():
    with pytest.raises(ValueError, match="fault level 4 out of range"):
        fsc(FaultRecord(Fault.TRANSLATION, 4, READ))


def test_fsc_names_cover_the_table():
    assert {code for _, _, code in FSC_TABLE} <= set(FSC_NAMES)


def test_fsc_names_use_arm_wording():
    assert FSC_NAMES[0b000111] == "Translation fault, level 3"
    assert FSC_NAMES[0b101001] == "Address size fault, level -1"
    assert FSC_NAMES[0b001000] == "Access flag fault, level 0"
    assert FSC_NAMES[0b100001] == "Alignment fault"


def test_par_stage1_permission_level3():
    # F=1, FST=0b001111, bit 11 RES1.
    assert par_fault(make_fault(Fault.PERMISSION, 3, READ, "")) == 0x81F


def test_par_stage1_access_flag_level3():
    assert par_fault(make_fault(Fault.ACCESS_FLAG, 3, READ, "")) == 0x817


def test_par_translation_level_minus_1():
    assert par_fault(make_fault(Fault.TRANSLATION, -1, READ, "")) == 0x857


def test_par_stage2_fault_on_stage1_walk_sets_s_and_ptw():
    f = as_stage2(FaultRecord(Fault.TRANSLATION, 3, READ), 0x10003008, s1ptw=True)
    assert (f.secondstage, f.s2fs1walk, f.ipaddress) == (True, True, 0x10003008)
    assert par_fault(f) == 0xB0F


def test_par_stage2_fault_not_on_walk_sets_only_s():
    f = as_stage2(FaultRecord(Fault.PERMISSION, 2, READ), 0x4000, s1ptw=False)
    assert par_fault(f) == 0x800 | 0x200 | (0b001110 << 1) | 1


def test_par_bit11_is_a_choice():
    assert par_fault(make_fault(Fault.TRANSLATION, 0, READ, ""), res1_bit11=False) == 0x9


def test_esr_stage2_fault_on_at_walk_from_el1():
    # EC 0x24, IL, CM=1 (AT), S1PTW=1, WnR=1 (AT always reports 1), DFSC translation L3.
    walk = Acc(AccessType.TTW, 1, walk_of=acc_at(1, False))
    f = as_stage2(FaultRecord(Fault.TRANSLATION, 3, walk), 0x10003008, s1ptw=True)
    assert esr_abort(f, same_el=False) == 0x920001C7


def test_esr_stage2_fault_on_walk_reports_the_original_access():
    load, store = acc_gpr(1, False), acc_gpr(1, True)
    for orig, wnr in ((load, 0), (store, 1)):
        walk = Acc(AccessType.TTW, 1, walk_of=orig)
        f = as_stage2(FaultRecord(Fault.TRANSLATION, 1, walk), 0x1000, s1ptw=True)
        assert esr_abort(f, same_el=False) == (0x24 << 26) | (1 << 25) | (1 << 7) | (
            wnr << 6) | 0b000101


def test_esr_stage2_fault_on_descriptor_update_reports_the_original_access():
    # ASL: fault.write is that of the access being translated; the walk's update write
    # does not change it (asl-notes Q9).
    update = Acc(AccessType.TTW, 1, write=True, walk_of=acc_gpr(1, False))
    f = as_stage2(FaultRecord(Fault.PERMISSION, 3, update), 0x1000, s1ptw=True)
    assert esr_abort(f, same_el=False) == (0x24 << 26) | (1 << 25) | (1 << 7) | 0xF


def test_esr_stage2_fault_on_fetch_walk_is_an_instruction_abort():
    walk = Acc(AccessType.TTW, 0, walk_of=acc_ifetch(0))
    f = as_stage2(FaultRecord(Fault.TRANSLATION, 2, walk), 0x1000, s1ptw=True)
    assert esr_abort(f, same_el=False) == (0x20 << 26) | (1 << 25) | (1 << 7) | 0b000110


def test_esr_store_permission_fault_sets_wnr_not_cm():
    f = make_fault(Fault.PERMISSION, 3, acc_gpr(1, True), "")
    assert esr_abort(f, same_el=False) == (0x24 << 26) | (1 << 25) | (1 << 6) | 0b001111


def test_esr_load_same_el_uses_ec_0x25():
    f = make_fault(Fault.TRANSLATION, 1, READ, "")
    assert esr_abort(f, same_el=True) == (0x25 << 26) | (1 << 25) | 0b000101


def test_esr_at_fault_reports_cm_and_wnr_even_for_read():
    f = make_fault(Fault.TRANSLATION, 2, acc_at(1, False), "")
    assert esr_abort(f, same_el=False) == (0x24 << 26) | (1 << 25) | (1 << 8) | (1 << 6) | 6


def test_esr_instruction_abort_has_no_wnr_or_cm():
    f = make_fault(Fault.PERMISSION, 3, acc_ifetch(0), "")
    assert esr_abort(f, same_el=False) == (0x20 << 26) | (1 << 25) | 0b001111
    assert esr_abort(f, same_el=True) >> 26 == 0x21


def test_esr_undefined():
    assert esr_undefined() == 0x2000000


def test_hpfar_holds_ipa_51_12_in_fipa():
    assert hpfar(0x10003008) == 0x100030
    assert hpfar(0xF_0000_1234_5678) == 0xF_0000_1234_5 << 4


def test_hpfar_valid_for_stage2_translation_af_address_size():
    for kind in (Fault.TRANSLATION, Fault.ACCESS_FLAG, Fault.ADDRESS_SIZE):
        assert reports_hpfar(as_stage2(FaultRecord(kind, 1, READ), 0, s1ptw=False))
    assert not reports_hpfar(make_fault(Fault.TRANSLATION, 1, READ, ""))
    assert not reports_hpfar(as_stage2(FaultRecord(Fault.ALIGNMENT, 0, READ), 0, s1ptw=False))


def test_hpfar_for_stage2_permission_only_on_a_walk():
    assert not reports_hpfar(as_stage2(FaultRecord(Fault.PERMISSION, 3, READ), 0, s1ptw=False))
    assert reports_hpfar(as_stage2(FaultRecord(Fault.PERMISSION, 3, READ), 0, s1ptw=True))
    assert not reports_hpfar(as_stage2(FaultRecord(Fault.SYNC_EXTERNAL_ON_WALK, 1, READ), 0,
                                       s1ptw=True))


def test_fault_record_write_follows_access():
    assert make_fault(Fault.PERMISSION, 3, acc_gpr(0, True), "").write
    assert not make_fault(Fault.PERMISSION, 3, READ, "").write


@pytest.mark.parametrize(("kind", "level", "code"), FSC_TABLE)
def test_decode_fsc_inverts_the_fsc_table(kind, level, code):
    want_level = None if kind in (Fault.SYNC_EXTERNAL, Fault.ALIGNMENT,
                                  Fault.TLB_CONFLICT) else level
    assert decode_fsc(code) == (kind, want_level)


def test_decode_fsc_round_trips_every_code_it_knows():
    for code in range(64):
        decoded = decode_fsc(code)
        if decoded is None:
            assert code not in FSC_NAMES
            continue
        kind, level = decoded
        assert fsc(FaultRecord(kind, 0 if level is None else level, READ)) == code


@pytest.mark.parametrize(("code", "kind", "level"), [
    (0x18, Fault.SYNC_PARITY, None), (0x1B, Fault.SYNC_PARITY_ON_WALK, -1),
    (0x1C, Fault.SYNC_PARITY_ON_WALK, 0), (0x1F, Fault.SYNC_PARITY_ON_WALK, 3),
])
def test_parity_codes_without_feat_ras(code, kind, level):
    assert decode_fsc(code) == (kind, level)
    assert FSC_NAMES[code].startswith("Synchronous parity or ECC error on memory access")


def test_unallocated_fsc_decodes_to_none():
    assert decode_fsc(0x3F) is None and decode_fsc(0x22) is None


@pytest.mark.parametrize("ipa", [-1, 1 << 52])
def test_hpfar_refuses_an_ipa_wider_than_52_bits(ipa):
    from s2mmu.arch.errors import InputError

    with pytest.raises(InputError) as e:
        hpfar(ipa)
    assert str(e.value) == (f"ipa={'-0x1' if ipa < 0 else '0x10000000000000'}: HPFAR_EL2.FIPA "
                            "holds a 52-bit IPA at most")
