"""Read a QEMU's `-cpu max` ID registers and say which translation features it implements.

A small probe (probe/idregs.S) boots at EL3, reads ID_AA64PFR0/1_EL1, ID_AA64ISAR0/1/2_EL1,
ID_AA64MMFR0..4_EL1 and CTR_EL0, and writes them to QEMU's stdout through semihosting.
`cpu_features` decodes each translation feature from its ID register field (positions as
in the kernel's arch/arm64/tools/sysreg and the Arm ARM's register descriptions), and
`model_features` gives the FeatureSet the model runs with when it is compared with that
QEMU: the features the model knows (arch.features.KNOWN_FEATURES) that QEMU implements,
the MMFR0..2 part decoded by arch.features.feature_set_of itself.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

from s2mmu.arch.errors import InputError
from s2mmu.arch.features import KNOWN_FEATURES, FeatureSet, IdRegs, feature_set_of
from s2mmu.conformance.qemu import (
    AS_BINARY,
    LD_BINARY,
    PROBE_DIR,
    HarnessUnavailable,
    default_cache_dir,
    run_tool,
)
from s2mmu.conformance.qemu_binary import QemuBinary

SOURCES = ("idregs.S", "idregs.ld")
MAGIC = 0x5344_494D_4D53_3253
"""The first word of the probe's record (idregs.S)."""


@dataclass(frozen=True)
class IdRegisters:
    """The ID registers the probe reads, in its order (probe/idregs.S)."""

    ID_AA64PFR0_EL1: int
    ID_AA64PFR1_EL1: int
    ID_AA64ISAR0_EL1: int
    ID_AA64ISAR1_EL1: int
    ID_AA64ISAR2_EL1: int
    ID_AA64MMFR0_EL1: int
    ID_AA64MMFR1_EL1: int
    ID_AA64MMFR2_EL1: int
    ID_AA64MMFR3_EL1: int
    ID_AA64MMFR4_EL1: int
    CTR_EL0: int

    def value(self, register: str) -> int:
        """Return a register by its Arm name."""
        return int(getattr(self, register))


ID_REGISTERS = tuple(f.name for f in fields(IdRegisters))


@dataclass(frozen=True)
class FeatureField:
    """A feature and the ID register field that says it: implemented when the field's
    value is at least `minimum` (and, for signed fields, not 0xF)."""

    feature: str
    register: str
    field: str
    lsb: int
    minimum: int
    width: int = 4
    exact: bool = False


FEATURE_FIELDS: tuple[FeatureField, ...] = (
    FeatureField("FEAT_LPA", "ID_AA64MMFR0_EL1", "PARange", 0, 0b0110),
    FeatureField("FEAT_LPA2", "ID_AA64MMFR0_EL1", "TGran4", 28, 0b0001, exact=True),
    FeatureField("FEAT_BigEnd", "ID_AA64MMFR0_EL1", "BigEnd", 8, 1),
    FeatureField("FEAT_HAFDBS", "ID_AA64MMFR1_EL1", "HAFDBS", 0, 0b0001),
    FeatureField("FEAT_HAFDBS_DIRTY", "ID_AA64MMFR1_EL1", "HAFDBS", 0, 0b0010),
    FeatureField("FEAT_HAFT", "ID_AA64MMFR1_EL1", "HAFDBS", 0, 0b0011),
    FeatureField("FEAT_HDBSS", "ID_AA64MMFR1_EL1", "HAFDBS", 0, 0b0100),
    FeatureField("FEAT_VMID16", "ID_AA64MMFR1_EL1", "VMIDBits", 4, 0b0010),
    FeatureField("FEAT_VHE", "ID_AA64MMFR1_EL1", "VH", 8, 1),
    FeatureField("FEAT_HPDS", "ID_AA64MMFR1_EL1", "HPDS", 12, 1),
    FeatureField("FEAT_HPDS2", "ID_AA64MMFR1_EL1", "HPDS", 12, 2),
    FeatureField("FEAT_PAN", "ID_AA64MMFR1_EL1", "PAN", 20, 1),
    FeatureField("FEAT_PAN2", "ID_AA64MMFR1_EL1", "PAN", 20, 2),
    FeatureField("FEAT_PAN3", "ID_AA64MMFR1_EL1", "PAN", 20, 3),
    FeatureField("FEAT_XNX", "ID_AA64MMFR1_EL1", "XNX", 28, 1),
    FeatureField("FEAT_ETS2", "ID_AA64MMFR1_EL1", "ETS", 36, 2),
    FeatureField("FEAT_HCX", "ID_AA64MMFR1_EL1", "HCX", 40, 1),
    FeatureField("FEAT_TTCNP", "ID_AA64MMFR2_EL1", "CnP", 0, 1),
    FeatureField("FEAT_UAO", "ID_AA64MMFR2_EL1", "UAO", 4, 1),
    FeatureField("FEAT_LVA", "ID_AA64MMFR2_EL1", "VARange", 16, 1),
    FeatureField("FEAT_NV", "ID_AA64MMFR2_EL1", "NV", 24, 1),
    FeatureField("FEAT_NV2", "ID_AA64MMFR2_EL1", "NV", 24, 2),
    FeatureField("FEAT_TTST", "ID_AA64MMFR2_EL1", "ST", 28, 1),
    FeatureField("FEAT_S2FWB", "ID_AA64MMFR2_EL1", "FWB", 40, 1),
    FeatureField("FEAT_TTL", "ID_AA64MMFR2_EL1", "TTL", 48, 1),
    FeatureField("FEAT_BBM", "ID_AA64MMFR2_EL1", "BBM", 52, 1),
    FeatureField("FEAT_E0PD", "ID_AA64MMFR2_EL1", "E0PD", 60, 1),
    FeatureField("FEAT_TCR2", "ID_AA64MMFR3_EL1", "TCRX", 0, 1),
    FeatureField("FEAT_SCTLR2", "ID_AA64MMFR3_EL1", "SCTLRX", 4, 1),
    FeatureField("FEAT_S1PIE", "ID_AA64MMFR3_EL1", "S1PIE", 8, 1),
    FeatureField("FEAT_S2PIE", "ID_AA64MMFR3_EL1", "S2PIE", 12, 1),
    FeatureField("FEAT_S1POE", "ID_AA64MMFR3_EL1", "S1POE", 16, 1),
    FeatureField("FEAT_S2POE", "ID_AA64MMFR3_EL1", "S2POE", 20, 1),
    FeatureField("FEAT_AIE", "ID_AA64MMFR3_EL1", "AIE", 24, 1),
    FeatureField("FEAT_D128", "ID_AA64MMFR3_EL1", "D128", 32, 1),
    FeatureField("FEAT_LSE", "ID_AA64ISAR0_EL1", "ATOMIC", 20, 0b0010),
    FeatureField("FEAT_TLBIOS", "ID_AA64ISAR0_EL1", "TLB", 56, 1),
    FeatureField("FEAT_TLBIRANGE", "ID_AA64ISAR0_EL1", "TLB", 56, 2),
    FeatureField("FEAT_XS", "ID_AA64ISAR1_EL1", "XS", 56, 1),
    FeatureField("FEAT_ATS1A", "ID_AA64ISAR2_EL1", "ATS1A", 60, 1),
    FeatureField("FEAT_SEL2", "ID_AA64PFR0_EL1", "SEL2", 36, 1),
    FeatureField("FEAT_RME", "ID_AA64PFR0_EL1", "RME", 52, 1),
    FeatureField("FEAT_MTE", "ID_AA64PFR1_EL1", "MTE", 8, 1),
    FeatureField("FEAT_MTE2", "ID_AA64PFR1_EL1", "MTE", 8, 2),
    FeatureField("FEAT_THE", "ID_AA64PFR1_EL1", "THE", 48, 1),
    FeatureField("FEAT_GCS", "ID_AA64PFR1_EL1", "GCS", 44, 1),
    FeatureField("FEAT_IDC", "CTR_EL0", "IDC", 28, 1, width=1),
    FeatureField("FEAT_DIC", "CTR_EL0", "DIC", 29, 1, width=1),
)
"""Each translation-related feature with its field (sysreg: ID_AA64MMFR1_EL1.HAFDBS 0b0011
is FEAT_HAFT, 0b0100 FEAT_HDBSS; TGran4 is signed: 0b0001 is 4K with 52-bit addresses)."""


@dataclass(frozen=True)
class CpuFeature:
    """One feature as a CPU's ID registers report it."""

    feature: str
    register: str
    field: str
    value: int
    implemented: bool


def field_value(regs: IdRegisters, spec: FeatureField) -> int:
    """Return the raw value of a feature's field."""
    return regs.value(spec.register) >> spec.lsb & ((1 << spec.width) - 1)


def cpu_features(regs: IdRegisters) -> tuple[CpuFeature, ...]:
    """Return every FEATURE_FIELDS feature with its field value and whether it is there."""
    found = []
    for spec in FEATURE_FIELDS:
        value = field_value(regs, spec)
        on = value == spec.minimum if spec.exact else value >= spec.minimum
        found.append(CpuFeature(spec.feature, spec.register, spec.field, value, on))
    return tuple(found)


def implemented(regs: IdRegisters) -> frozenset[str]:
    """Return the names of the features the registers report."""
    return frozenset(f.feature for f in cpu_features(regs) if f.implemented)


def model_features(regs: IdRegisters) -> FeatureSet:
    """Return the FeatureSet the model runs with to be compared with this CPU.

    ID_AA64MMFR0..2_EL1 are decoded by arch.features.feature_set_of (PA size, granules and
    its features); every other feature the model knows is added when the CPU has it.
    Raises InputError when a field holds a value the model does not know.
    """
    mmfr = feature_set_of(IdRegs(regs.ID_AA64MMFR0_EL1, regs.ID_AA64MMFR1_EL1,
                                 regs.ID_AA64MMFR2_EL1))
    extra = implemented(regs) & KNOWN_FEATURES
    return mmfr.with_features(*sorted(extra))


# --- Running the probe ------------------------------------------------------------------


def probe_elf(cache_dir: Path | None = None) -> Path:
    """Return the ID-register probe's ELF, built once per source hash into the cache."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update(name.encode() + b"\0" + (PROBE_DIR / name).read_bytes())
    out = (cache_dir or default_cache_dir()) / f"idregs-{digest.hexdigest()[:16]}.elf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".idregs-") as work:
        obj = Path(work) / "idregs.o"
        run_tool([AS_BINARY, "-o", str(obj), str(PROBE_DIR / "idregs.S")])
        linked = Path(work) / "idregs.elf"
        run_tool([LD_BINARY, "-T", str(PROBE_DIR / "idregs.ld"), "-o", str(linked), str(obj)])
        linked.replace(out)
    return out


def probe_argv(qemu: QemuBinary, elf: Path) -> list[str]:
    """Return the command line that runs the probe (the harness's machine and CPU)."""
    return [*qemu.argv_prefix, "-M", "virt,virtualization=on,secure=on", "-cpu", "max",
            "-accel", "tcg", "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", "none", "-semihosting-config", "enable=on,target=native",
            "-kernel", str(elf)]


def parse_record(data: bytes) -> IdRegisters | None:
    """Return the registers of the probe's record in QEMU's stdout, or None if absent."""
    at = data.find(MAGIC.to_bytes(8, "little"))
    size = 8 * (2 + len(ID_REGISTERS))
    if at < 0 or len(data) < at + size:
        return None
    _, count, *values = struct.unpack_from(f"<{2 + len(ID_REGISTERS)}Q", data, at)
    if count != len(ID_REGISTERS):
        return None
    return IdRegisters(*values)


_READ: dict[tuple[str, ...], IdRegisters] = {}


def read_id_registers(qemu: QemuBinary, cache_dir: Path | None = None) -> IdRegisters:
    """Boot the probe on a QEMU and return its ID registers (read once per binary)."""
    if qemu.argv_prefix in _READ:
        return _READ[qemu.argv_prefix]
    argv = probe_argv(qemu, probe_elf(cache_dir))
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise HarnessUnavailable(f"{qemu.label}: the ID-register probe did not run: "
                                 f"{error}") from None
    regs = parse_record(done.stdout)
    if regs is None:
        tail = (done.stderr.decode(errors="replace").strip().splitlines()
                or [f"exit status {done.returncode}"])[-1]
        raise HarnessUnavailable(f"{qemu.label} ({' '.join(qemu.argv_prefix)}) did not run "
                                 f"the ID-register probe: {tail}")
    _READ[qemu.argv_prefix] = regs
    return regs


def qemu_model_features(qemu: QemuBinary, cache_dir: Path | None = None) -> FeatureSet:
    """Return the model's FeatureSet for a QEMU, with a clear error for an unknown field."""
    try:
        return model_features(read_id_registers(qemu, cache_dir))
    except InputError as error:
        raise HarnessUnavailable(f"{qemu.label}'s -cpu max: {error}") from None
