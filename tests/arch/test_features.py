"""The feature set: an input, its presets, and the ID registers derived from it."""

import pytest

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import (
    PRESETS,
    FeatureSet,
    id_aa64mmfr0,
    id_aa64mmfr1,
    id_aa64mmfr2,
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
    assert set(PRESETS) == {"qemu-max", "server-v8.2", "server-v8.4"}


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
