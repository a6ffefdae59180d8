"""The feature set: an input, its presets, and the ID registers derived from it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import (
    ID_FEATURES,
    KNOWN_FEATURES,
    PARANGE_BITS,
    PRESETS,
    FeatureSet,
    IdRegs,
    feature_set_of,
    id_aa64mmfr0,
    id_aa64mmfr1,
    id_aa64mmfr2,
    id_field,
    id_regs_of,
    qemu_7_2_max,
    server_v8_2,
    server_v8_4_fwb,
)
from s2mmu.arch.registers import ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1


def test_unknown_feature_is_rejected_by_name():
    with pytest.raises(InputError) as e:
        FeatureSet(frozenset({"FEAT_LPA", "FEAT_NOPE", "FEAT_ZZZ"}))
    assert str(e.value) == "unknown feature(s): FEAT_NOPE, FEAT_ZZZ"


def test_pa_size_must_be_a_parange_value():
    with pytest.raises(InputError) as e:
        FeatureSet(frozenset(), pa_bits=50)
    assert str(e.value) == "PA size 50 is not a PARange value"


def test_with_features_adds_and_removes():
    fs = qemu_7_2_max().with_features("FEAT_PAN3", remove=("FEAT_XNX",))
    assert fs.has("FEAT_PAN3") and not fs.has("FEAT_XNX")
    assert fs.pa_max() == 52


def test_qemu_preset_lacks_pan3_and_has_lpa2():
    fs = qemu_7_2_max()
    assert not fs.has("FEAT_PAN3")
    assert all(fs.has(f) for f in ("FEAT_LPA", "FEAT_LPA2", "FEAT_LVA", "FEAT_TTST",
                                   "FEAT_HAFDBS", "FEAT_PAN2", "FEAT_S2FWB", "FEAT_XNX",
                                   "FEAT_HPDS", "FEAT_E0PD", "FEAT_VHE"))
    assert fs.pa_max() == 52


def test_server_presets():
    assert server_v8_2().pa_max() == 48
    assert not server_v8_2().has("FEAT_S2FWB")
    assert server_v8_4_fwb().has("FEAT_S2FWB") and server_v8_4_fwb().has("FEAT_TTST")
    assert set(PRESETS) == {"qemu-max", "server-v8.2", "server-v8.4", "qemu-max+xs",
                            "server-v9.4-pie", "server-v9.4-haft"}
    xs = PRESETS["qemu-max+xs"]()
    assert xs.has("FEAT_XS") and xs.features - {"FEAT_XS"} == qemu_7_2_max().features


def test_id_aa64mmfr0_of_qemu_max():
    v = ID_AA64MMFR0_EL1.decode(id_aa64mmfr0(qemu_7_2_max()))
    # PARange 0b0110 = 52 bits; TGran4 0b0001 and TGran16 0b0010 = with 52-bit (LPA2).
    assert (v.PARange, v.TGran4, v.TGran16, v.TGran64, v.ASIDBits, v.BigEnd) == (
        6, 1, 2, 0, 2, 1)


def test_id_aa64mmfr0_without_lpa2_and_granules():
    fs = FeatureSet(frozenset(), pa_bits=40, granules=frozenset({64}))
    v = ID_AA64MMFR0_EL1.decode(id_aa64mmfr0(fs))
    # TGran4 0xF and TGran16 0x0 mean "not implemented" (their encodings differ).
    assert (v.PARange, v.TGran4, v.TGran16, v.TGran64) == (2, 0xF, 0, 0)


def test_id_aa64mmfr1_of_qemu_max():
    v = ID_AA64MMFR1_EL1.decode(id_aa64mmfr1(qemu_7_2_max()))
    assert (v.HAFDBS, v.VMIDBits, v.VH, v.HPDS, v.PAN, v.XNX, v.HCX) == (2, 2, 1, 2, 2, 1, 1)


def test_id_aa64mmfr1_pan3():
    v = ID_AA64MMFR1_EL1.decode(id_aa64mmfr1(qemu_7_2_max().with_features("FEAT_PAN3")))
    assert v.PAN == 3


def test_id_aa64mmfr2_of_qemu_max():
    v = ID_AA64MMFR2_EL1.decode(id_aa64mmfr2(qemu_7_2_max()))
    assert (v.CnP, v.UAO, v.VARange, v.ST, v.NV, v.FWB, v.TTL, v.BBM, v.E0PD) == (
        1, 1, 1, 1, 0, 1, 1, 2, 1)


def test_id_aa64mmfr2_of_server_v8_2():
    v = ID_AA64MMFR2_EL1.decode(id_aa64mmfr2(server_v8_2()))
    assert (v.VARange, v.ST, v.FWB, v.E0PD) == (0, 0, 0, 0)


def test_hw_update_of_follows_hafdbs_and_its_dirty_level():
    from s2mmu.arch.features import NO_HW_UPDATE, HwUpdate, hw_update_of
    fs = FeatureSet(frozenset({"FEAT_HAFDBS"}))
    assert hw_update_of(fs) == HwUpdate(True, False, True, False)
    assert hw_update_of(fs.with_features("FEAT_HAFDBS_DIRTY")) == HwUpdate(True, True, True, True)
    assert hw_update_of(FeatureSet(frozenset())) == NO_HW_UPDATE


def test_feat_ats1a_is_a_known_feature():
    assert FeatureSet(frozenset({"FEAT_ATS1A"})).has("FEAT_ATS1A")


# -- ID registers -> FeatureSet (feature_set_of), the inverse of id_regs_of ------------------


# A register field says a level: a higher level includes the lower ones.
LEVELS = (("FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY", "FEAT_HAFT"), ("FEAT_HPDS", "FEAT_HPDS2"),
          ("FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3"), ("FEAT_NV", "FEAT_NV2"))
SINGLE = sorted(ID_FEATURES - {f for chain in LEVELS for f in chain} - {"FEAT_LPA2"})


@st.composite
def expressible(draw: st.DrawFn) -> FeatureSet:
    """A FeatureSet the three registers can express: levels whole, LPA2 with 4K or 16K."""
    names = set(draw(st.sets(st.sampled_from(SINGLE))))
    for chain in LEVELS:
        names |= set(chain[:draw(st.integers(0, len(chain)))])
    granules = draw(st.sets(st.sampled_from((4, 16, 64))))
    if granules & {4, 16} and draw(st.booleans()):
        names.add("FEAT_LPA2")
    other = draw(st.sets(st.sampled_from(sorted(KNOWN_FEATURES - ID_FEATURES))))
    return FeatureSet(frozenset(names | other), pa_bits=draw(st.sampled_from(
        sorted(PARANGE_BITS.values()))), granules=frozenset(granules))


@given(expressible())
def test_features_to_registers_to_features_round_trips(fs: FeatureSet) -> None:
    got = feature_set_of(id_regs_of(fs))
    assert got == FeatureSet(fs.features & ID_FEATURES, fs.pa_bits, fs.granules)


@given(expressible())
def test_registers_to_features_to_registers_round_trips(fs: FeatureSet) -> None:
    regs = id_regs_of(fs)
    assert id_regs_of(feature_set_of(regs)) == regs


@pytest.mark.parametrize("pan, want", [
    (0, set()), (1, {"FEAT_PAN"}), (2, {"FEAT_PAN", "FEAT_PAN2"}),
    (3, {"FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3"}),
])
def test_pan_field_levels(pan: int, want: set[str]) -> None:
    regs = id_regs_of(FeatureSet(frozenset()))
    fs = feature_set_of(IdRegs(regs.ID_AA64MMFR0_EL1, pan << 20, regs.ID_AA64MMFR2_EL1))
    assert fs.features & {"FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3"} == want


def test_bbm_level_1_is_feat_bbm() -> None:
    regs = id_regs_of(FeatureSet(frozenset()))
    assert feature_set_of(IdRegs(regs.ID_AA64MMFR0_EL1, 0, 1 << 52)).has("FEAT_BBM")


@pytest.mark.parametrize("reg, lsb, value, name", [
    (0, 0, 7, "ID_AA64MMFR0_EL1.PARange = 0x7"),
    (0, 28, 2, "ID_AA64MMFR0_EL1.TGran4 = 0x2"),
    (0, 20, 3, "ID_AA64MMFR0_EL1.TGran16 = 0x3"),
    (0, 24, 1, "ID_AA64MMFR0_EL1.TGran64 = 0x1"),
    (0, 40, 4, "ID_AA64MMFR0_EL1.TGran4_2 = 0x4"),
    (1, 4, 1, "ID_AA64MMFR1_EL1.VMIDBits = 0x1"),
    (1, 20, 4, "ID_AA64MMFR1_EL1.PAN = 0x4"),
    (1, 0, 4, "ID_AA64MMFR1_EL1.HAFDBS = 0x4"),
    (2, 24, 3, "ID_AA64MMFR2_EL1.NV = 0x3"),
    (2, 52, 3, "ID_AA64MMFR2_EL1.BBM = 0x3"),
    (3, 0, 2, "ID_AA64MMFR3_EL1.TCRX = 0x2"),
    (3, 8, 2, "ID_AA64MMFR3_EL1.S1PIE = 0x2"),
    (3, 12, 3, "ID_AA64MMFR3_EL1.S2PIE = 0x3"),
    (3, 16, 2, "ID_AA64MMFR3_EL1.S1POE = 0x2"),
    (3, 20, 0xF, "ID_AA64MMFR3_EL1.S2POE = 0xf"),
])
def test_reserved_field_values_are_refused_by_name(reg: int, lsb: int, value: int,
                                                   name: str) -> None:
    from dataclasses import replace
    base = id_regs_of(qemu_7_2_max())
    register = f"ID_AA64MMFR{reg}_EL1"
    bad = getattr(base, register) & ~(0xF << lsb) | value << lsb
    with pytest.raises(InputError, match=rf"^{name}: reserved, or an extension the model "
                                         rf"does not implement \(known: "):
        feature_set_of(replace(base, **{register: bad}))


def test_id_aa64mmfr3_says_the_permission_extensions() -> None:
    from s2mmu.arch.features import server_v9_4_pie
    regs = id_regs_of(server_v9_4_pie())
    assert regs.ID_AA64MMFR3_EL1 == 0x11_1101
    assert id_regs_of(qemu_7_2_max()).ID_AA64MMFR3_EL1 == 0
    got = feature_set_of(regs)
    assert {"FEAT_TCR2", "FEAT_S1PIE", "FEAT_S2PIE", "FEAT_S1POE", "FEAT_S2POE"} <= got.features


def test_id_field_reads_one_field() -> None:
    regs = id_regs_of(server_v8_2())
    assert id_field(regs, "ID_AA64MMFR1_EL1", "PAN") == 2
    assert id_field(regs, "ID_AA64MMFR0_EL1", "PARange") == 5
