"""The ID-register probe and the features it reports, for QEMU 7.2 and 10.0."""

from __future__ import annotations

import struct

from s2mmu.arch.features import MMFR_FEATURES, qemu_7_2_max
from s2mmu.conformance.cpu_id import (
    ID_REGISTERS,
    MAGIC,
    IdRegisters,
    cpu_features,
    implemented,
    model_features,
    parse_record,
    read_id_registers,
)
from s2mmu.conformance.target import QemuTarget

QEMU_7_2_MAX = IdRegisters(
    ID_AA64PFR0_EL1=0x1201001120112222, ID_AA64PFR1_EL1=0x1000021,
    ID_AA64ISAR0_EL1=0x1221111110212120, ID_AA64ISAR1_EL1=0x11111101211012,
    ID_AA64ISAR2_EL1=0x0, ID_AA64MMFR0_EL1=0x32310201126, ID_AA64MMFR1_EL1=0x11010211122,
    ID_AA64MMFR2_EL1=0x1021011010011011, ID_AA64MMFR3_EL1=0x0, ID_AA64MMFR4_EL1=0x0,
    CTR_EL0=0x8444C004)
"""What Debian 12's QEMU 7.2.22 `-M virt,virtualization=on,secure=on -cpu max` reports."""

QEMU_10_0_MAX = IdRegisters(
    ID_AA64PFR0_EL1=0x1301001120112222, ID_AA64PFR1_EL1=0x1001000121,
    ID_AA64ISAR0_EL1=0x1221111110212120, ID_AA64ISAR1_EL1=0x111211110211502,
    ID_AA64ISAR2_EL1=0x110012, ID_AA64MMFR0_EL1=0x2100032310201126,
    ID_AA64MMFR1_EL1=0x110112010312122, ID_AA64MMFR2_EL1=0x1221011112011011,
    ID_AA64MMFR3_EL1=0x1000000000000000, ID_AA64MMFR4_EL1=0x0, CTR_EL0=0xB444C004)
"""What Debian's QEMU 10.0.2 (bookworm-backports) reports on the same machine."""

NEWER_PERMISSION_FEATURES = ("FEAT_S1PIE", "FEAT_S2PIE", "FEAT_S1POE", "FEAT_S2POE",
                             "FEAT_TCR2", "FEAT_HAFT")


def test_the_record_is_read_after_any_other_output() -> None:
    values = [getattr(QEMU_10_0_MAX, name) for name in ID_REGISTERS]
    data = b"noise" + struct.pack(f"<{2 + len(values)}Q", MAGIC, len(values), *values)
    assert parse_record(data) == QEMU_10_0_MAX
    assert parse_record(data[:-1]) is None
    assert parse_record(b"") is None


def test_qemu_10_adds_pan3_xs_and_nv2_to_7_2() -> None:
    gained = implemented(QEMU_10_0_MAX) - implemented(QEMU_7_2_MAX)
    assert {"FEAT_PAN3", "FEAT_XS", "FEAT_NV", "FEAT_NV2", "FEAT_HPDS2"} <= gained
    assert implemented(QEMU_7_2_MAX) <= implemented(QEMU_10_0_MAX)


def test_neither_has_pie_poe_tcr2_or_haft() -> None:
    for regs in (QEMU_7_2_MAX, QEMU_10_0_MAX):
        assert not implemented(regs) & set(NEWER_PERMISSION_FEATURES)
    haft = next(f for f in cpu_features(QEMU_10_0_MAX) if f.feature == "FEAT_HAFT")
    assert (haft.register, haft.field, haft.value) == ("ID_AA64MMFR1_EL1", "HAFDBS", 2)


def test_the_model_runs_7_2_with_its_preset_translation_features() -> None:
    got, preset = model_features(QEMU_7_2_MAX), qemu_7_2_max()
    assert got.pa_bits == preset.pa_bits == 52
    assert got.granules == preset.granules
    # The preset also claims HPDS2, MTE/MTE2 (virt has no tag memory without mte=on) and
    # DIC/IDC, which 7.2's -cpu max does not report; no other feature differs.
    assert preset.features - got.features == {"FEAT_HPDS2", "FEAT_MTE", "FEAT_MTE2",
                                              "FEAT_DIC", "FEAT_IDC"}
    assert got.features <= preset.features
    assert got.features & MMFR_FEATURES == preset.features & MMFR_FEATURES - {"FEAT_HPDS2"}


def test_the_model_runs_10_0_with_pan3() -> None:
    got = model_features(QEMU_10_0_MAX)
    assert got.has("FEAT_PAN3") and got.has("FEAT_NV2") and got.has("FEAT_XS")
    assert not got.has("FEAT_MTE2")


def test_the_probe_reads_qemu_7_2(qemu72: QemuTarget) -> None:
    assert read_id_registers(qemu72.binary) == QEMU_7_2_MAX


def test_the_probe_reads_qemu_10_0(qemu10: QemuTarget) -> None:
    assert qemu10.binary.version == "10.0.2"
    assert qemu10.id_registers == QEMU_10_0_MAX
