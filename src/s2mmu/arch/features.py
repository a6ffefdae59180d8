"""The implemented architecture features: an input to one code path, never a copy of it.

A FeatureSet says which FEAT_* an implementation has and its PA and VA sizes. The ID
registers are derived from it (functions, not stored fields). Presets: QEMU 7.2's
``-cpu max`` (the conformance target) and a typical Armv8.2 server core.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from s2mmu.arch.errors import InputError

KNOWN_FEATURES = frozenset({
    "FEAT_LPA", "FEAT_LPA2", "FEAT_LVA", "FEAT_TTST", "FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY",
    "FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3", "FEAT_S2FWB", "FEAT_XNX", "FEAT_HPDS",
    "FEAT_HPDS2", "FEAT_E0PD", "FEAT_VHE", "FEAT_VMID16", "FEAT_TTL", "FEAT_BBM",
    "FEAT_HCX", "FEAT_NV", "FEAT_NV2", "FEAT_TTCNP", "FEAT_DIC", "FEAT_IDC",
    "FEAT_TLBIRANGE", "FEAT_MTE", "FEAT_MTE2", "FEAT_UAO", "FEAT_LSE", "FEAT_BigEnd",
    "FEAT_RME", "FEAT_XS", "FEAT_ATS1A", "FEAT_TCR2", "FEAT_S1PIE", "FEAT_S2PIE",
    "FEAT_S1POE", "FEAT_S2POE", "FEAT_HAFT",
})

PARANGE_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
PARANGE_OF_BITS = {v: k for k, v in PARANGE_BITS.items()}


@dataclass(frozen=True)
class FeatureSet:
    """What the implementation has: FEAT_* names, PA size, granules supported.

    ``FEAT_HAFDBS`` alone means hardware access-flag update; ``FEAT_HAFDBS_DIRTY``
    adds dirty-state update (ID_AA64MMFR1_EL1.HAFDBS 0b0010); ``FEAT_HAFT`` adds the
    access flag in table descriptors (HAFDBS 0b0011, which includes the two below it).
    """

    features: frozenset[str]
    pa_bits: int = 48
    granules: frozenset[int] = field(default_factory=lambda: frozenset({4, 16, 64}))

    def __post_init__(self) -> None:
        unknown = self.features - KNOWN_FEATURES
        if unknown:
            raise InputError(f"unknown feature(s): {', '.join(sorted(unknown))}")
        if self.pa_bits not in PARANGE_OF_BITS:
            raise InputError(f"PA size {self.pa_bits} is not a PARange value")

    def has(self, name: str) -> bool:
        """Return whether FEAT_name is implemented."""
        return name in self.features

    def with_features(self, *add: str, remove: tuple[str, ...] = ()) -> FeatureSet:
        """Return a copy with features added and removed."""
        return replace(self, features=(self.features | set(add)) - set(remove))

    def pa_max(self) -> int:
        """Return the implemented PA size in bits (ASL AArch64.PAMax)."""
        return self.pa_bits


@dataclass(frozen=True)
class HwUpdate:
    """Which descriptor updates the translation hardware makes: an input, not a guess.

    An implementation with FEAT_HAFDBS updates the access flag (and with the dirty level
    the dirty state) where TCR_ELx.{HA,HD} / VTCR_EL2.{HA,HD} ask; a software walker may
    update less (an emulator that only sets the access flag) or nothing. The walk
    parameters AND the register bits with these.

    ASL: AArch64.GetS1TTWParams / GetS2TTWParams (ha and hd read as 0 without
    FEAT_HAFDBS).
    """

    s1_af: bool
    s1_dirty: bool
    s2_af: bool
    s2_dirty: bool


NO_HW_UPDATE = HwUpdate(False, False, False, False)


def hw_update_of(fs: FeatureSet) -> HwUpdate:
    """Return the updates an implementation with fs makes (FEAT_HAFDBS and its dirty level)."""
    af, dirty = fs.has("FEAT_HAFDBS"), fs.has("FEAT_HAFDBS_DIRTY")
    return HwUpdate(af, dirty, af, dirty)


def qemu_7_2_max() -> FeatureSet:
    """Return the features of QEMU 7.2's ``-cpu max`` (Debian 12), the conformance target.

    QEMU 7.2 lacks FEAT_PAN3/EPAN, FEAT_S1PIE, FEAT_NV and FEAT_TCR2.
    """
    return FeatureSet(
        features=frozenset({
            "FEAT_LPA", "FEAT_LPA2", "FEAT_LVA", "FEAT_TTST", "FEAT_HAFDBS",
            "FEAT_HAFDBS_DIRTY", "FEAT_PAN", "FEAT_PAN2", "FEAT_S2FWB", "FEAT_XNX",
            "FEAT_HPDS", "FEAT_HPDS2", "FEAT_E0PD", "FEAT_VHE", "FEAT_VMID16", "FEAT_TTL",
            "FEAT_BBM", "FEAT_HCX", "FEAT_TTCNP", "FEAT_DIC", "FEAT_IDC", "FEAT_TLBIRANGE",
            "FEAT_UAO", "FEAT_LSE", "FEAT_BigEnd", "FEAT_MTE", "FEAT_MTE2",
        }),
        pa_bits=52,
    )


def server_v8_2() -> FeatureSet:
    """Return a typical Armv8.2 server core (Neoverse-N1-like): 48-bit PA, no LPA2, no FWB."""
    return FeatureSet(
        features=frozenset({
            "FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY", "FEAT_PAN", "FEAT_PAN2", "FEAT_HPDS",
            "FEAT_HPDS2", "FEAT_VHE", "FEAT_VMID16", "FEAT_TTCNP", "FEAT_UAO", "FEAT_LSE",
            "FEAT_DIC", "FEAT_IDC", "FEAT_BigEnd",
        }),
        pa_bits=48,
    )


def server_v8_4_fwb() -> FeatureSet:
    """Return an Armv8.4+ server core with FEAT_S2FWB (Neoverse-V1-like)."""
    return server_v8_2().with_features(
        "FEAT_S2FWB", "FEAT_TTST", "FEAT_TTL", "FEAT_BBM", "FEAT_TLBIRANGE", "FEAT_XNX")


def qemu_7_2_max_xs() -> FeatureSet:
    """Return QEMU 7.2's ``-cpu max`` with FEAT_XS added (the XS memory attribute, which
    QEMU 7.2 lacks): for looking at the XS=0 MAIR encodings and stage-2 FnXS."""
    base = qemu_7_2_max()
    return FeatureSet(features=base.features | {"FEAT_XS"}, pa_bits=base.pa_bits)


def server_v9_4_pie() -> FeatureSet:
    """Return an Armv9.4-style core with the permission extensions: FEAT_TCR2, FEAT_S1PIE,
    FEAT_S2PIE, FEAT_S1POE, FEAT_S2POE (with FEAT_PAN3 and FEAT_HCX, which FEAT_S1PIE and
    HCRX_EL2.TCR2En need). No shipping core is claimed; it exercises the extensions."""
    return server_v8_4_fwb().with_features(
        "FEAT_PAN3", "FEAT_HCX", "FEAT_E0PD", "FEAT_TCR2", "FEAT_S1PIE", "FEAT_S2PIE",
        "FEAT_S1POE", "FEAT_S2POE")


def server_v9_4_haft() -> FeatureSet:
    """Return server_v9_4_pie with FEAT_HAFT (ID_AA64MMFR1_EL1.HAFDBS 0b0011): hardware
    access-flag update in table descriptors where TCR2_ELx.HAFT / VTCR_EL2.HAFT ask."""
    return server_v9_4_pie().with_features("FEAT_HAFT")


PRESETS = {"qemu-max": qemu_7_2_max, "server-v8.2": server_v8_2, "server-v8.4": server_v8_4_fwb,
           "qemu-max+xs": qemu_7_2_max_xs, "server-v9.4-pie": server_v9_4_pie,
           "server-v9.4-haft": server_v9_4_haft}


def id_aa64mmfr0(fs: FeatureSet) -> int:
    """Return ID_AA64MMFR0_EL1 as the FeatureSet implies it."""
    tgran4 = 0xF if 4 not in fs.granules else (1 if fs.has("FEAT_LPA2") else 0)
    tgran16 = 0 if 16 not in fs.granules else (2 if fs.has("FEAT_LPA2") else 1)
    tgran64 = 0xF if 64 not in fs.granules else 0
    bigend = 1 if fs.has("FEAT_BigEnd") else 0
    return (PARANGE_OF_BITS[fs.pa_bits] | (2 << 4) | (bigend << 8) | (1 << 12)
            | (tgran16 << 20) | (tgran64 << 24) | (tgran4 << 28))


def id_aa64mmfr1(fs: FeatureSet) -> int:
    """Return ID_AA64MMFR1_EL1 as the FeatureSet implies it."""
    hafdbs = next((v for v, f in ((3, "FEAT_HAFT"), (2, "FEAT_HAFDBS_DIRTY"), (1, "FEAT_HAFDBS"))
                   if fs.has(f)), 0)
    pan = next((v for v, f in ((3, "FEAT_PAN3"), (2, "FEAT_PAN2"), (1, "FEAT_PAN"))
                if fs.has(f)), 0)
    return (hafdbs | ((2 if fs.has("FEAT_VMID16") else 0) << 4)
            | ((1 if fs.has("FEAT_VHE") else 0) << 8)
            | ((2 if fs.has("FEAT_HPDS2") else int(fs.has("FEAT_HPDS"))) << 12)
            | (pan << 20) | ((1 if fs.has("FEAT_XNX") else 0) << 28)
            | ((1 if fs.has("FEAT_HCX") else 0) << 40))


def id_aa64mmfr2(fs: FeatureSet) -> int:
    """Return ID_AA64MMFR2_EL1 as the FeatureSet implies it."""
    return (int(fs.has("FEAT_TTCNP")) | (int(fs.has("FEAT_UAO")) << 4)
            | (int(fs.has("FEAT_LVA")) << 16) | (int(fs.has("FEAT_TTST")) << 28)
            | ((2 if fs.has("FEAT_NV2") else int(fs.has("FEAT_NV"))) << 24)
            | (int(fs.has("FEAT_S2FWB")) << 40) | (int(fs.has("FEAT_TTL")) << 48)
            | ((2 if fs.has("FEAT_BBM") else 0) << 52) | (int(fs.has("FEAT_E0PD")) << 60))


def id_aa64mmfr3(fs: FeatureSet) -> int:
    """Return ID_AA64MMFR3_EL1 as the FeatureSet implies it (TCRX, S1PIE, S2PIE, S1POE,
    S2POE at bits [3:0], [11:8], [15:12], [19:16], [23:20])."""
    return (int(fs.has("FEAT_TCR2")) | (int(fs.has("FEAT_S1PIE")) << 8)
            | (int(fs.has("FEAT_S2PIE")) << 12) | (int(fs.has("FEAT_S1POE")) << 16)
            | (int(fs.has("FEAT_S2POE")) << 20))


def id_aa64isar0(fs: FeatureSet) -> int:
    """Return ID_AA64ISAR0_EL1's fields the model decodes (Atomic, TLB) as fs implies them."""
    return ((2 if fs.has("FEAT_LSE") else 0) << 20) | ((2 if fs.has("FEAT_TLBIRANGE") else 0)
                                                       << 56)


def id_aa64isar2(fs: FeatureSet) -> int:
    """Return ID_AA64ISAR2_EL1's field the model decodes (ATS1A) as fs implies it."""
    return int(fs.has("FEAT_ATS1A")) << 60


@dataclass(frozen=True)
class IdRegs:
    """The AArch64 ID registers an implementation reports, as far as translation reads them.

    ID_AA64MMFR0_EL1 to ID_AA64MMFR3_EL1 (the memory model; MMFR3: FEAT_TCR2, S1PIE,
    S2PIE, S1POE, S2POE), and
    ID_AA64ISAR0_EL1 (Atomic: FEAT_LSE; TLB: FEAT_TLBIRANGE) and ID_AA64ISAR2_EL1 (ATS1A:
    AT S1E1A/S1E2A) as 64-bit values; see id_regs_of (FeatureSet -> registers) and
    feature_set_of (registers -> FeatureSet).
    """

    ID_AA64MMFR0_EL1: int
    ID_AA64MMFR1_EL1: int
    ID_AA64MMFR2_EL1: int
    ID_AA64ISAR0_EL1: int = 0
    ID_AA64ISAR2_EL1: int = 0
    ID_AA64MMFR3_EL1: int = 0

    @staticmethod
    def names() -> tuple[str, ...]:
        """Return the registers' names, in field order."""
        return ("ID_AA64MMFR0_EL1", "ID_AA64MMFR1_EL1", "ID_AA64MMFR2_EL1",
                "ID_AA64ISAR0_EL1", "ID_AA64ISAR2_EL1", "ID_AA64MMFR3_EL1")


ID_FEATURES = frozenset({
    "FEAT_BigEnd", "FEAT_LPA2", "FEAT_HAFDBS", "FEAT_HAFDBS_DIRTY", "FEAT_VMID16", "FEAT_VHE",
    "FEAT_HPDS", "FEAT_HPDS2", "FEAT_PAN", "FEAT_PAN2", "FEAT_PAN3", "FEAT_XNX", "FEAT_HCX",
    "FEAT_TTCNP", "FEAT_UAO", "FEAT_LVA", "FEAT_TTST", "FEAT_NV", "FEAT_NV2", "FEAT_S2FWB",
    "FEAT_TTL", "FEAT_BBM", "FEAT_E0PD", "FEAT_LSE", "FEAT_TLBIRANGE", "FEAT_ATS1A",
    "FEAT_TCR2", "FEAT_S1PIE", "FEAT_S2PIE", "FEAT_S1POE", "FEAT_S2POE", "FEAT_HAFT",
})
"""The features the ID register fields the model decodes say (FEAT_DIC, IDC, MTE, RME and
XS live in CTR_EL0 or ID registers the model does not hold)."""


def id_regs_of(fs: FeatureSet) -> IdRegs:
    """Return the ID register values fs implies."""
    return IdRegs(id_aa64mmfr0(fs), id_aa64mmfr1(fs), id_aa64mmfr2(fs), id_aa64isar0(fs),
                  id_aa64isar2(fs), id_aa64mmfr3(fs))


# (register, field, lsb, the values the model knows). Any other value is reserved in the
# Arm ARM's field description, or names an extension the model does not implement.
_ID_FIELDS: tuple[tuple[str, str, int, frozenset[int]], ...] = (
    ("ID_AA64MMFR0_EL1", "PARange", 0, frozenset(PARANGE_BITS)),
    ("ID_AA64MMFR0_EL1", "BigEnd", 8, frozenset({0, 1})),
    ("ID_AA64MMFR0_EL1", "TGran16", 20, frozenset({0, 1, 2})),
    ("ID_AA64MMFR0_EL1", "TGran64", 24, frozenset({0, 0xF})),
    ("ID_AA64MMFR0_EL1", "TGran4", 28, frozenset({0, 1, 0xF})),
    ("ID_AA64MMFR0_EL1", "TGran16_2", 32, frozenset({0, 1, 2, 3})),
    ("ID_AA64MMFR0_EL1", "TGran64_2", 36, frozenset({0, 1, 2})),
    ("ID_AA64MMFR0_EL1", "TGran4_2", 40, frozenset({0, 1, 2, 3})),
    ("ID_AA64MMFR1_EL1", "HAFDBS", 0, frozenset({0, 1, 2, 3})),
    ("ID_AA64MMFR1_EL1", "VMIDBits", 4, frozenset({0, 2})),
    ("ID_AA64MMFR1_EL1", "VH", 8, frozenset({0, 1})),
    ("ID_AA64MMFR1_EL1", "HPDS", 12, frozenset({0, 1, 2})),
    ("ID_AA64MMFR1_EL1", "PAN", 20, frozenset({0, 1, 2, 3})),
    ("ID_AA64MMFR1_EL1", "XNX", 28, frozenset({0, 1})),
    ("ID_AA64MMFR1_EL1", "HCX", 40, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "CnP", 0, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "UAO", 4, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "VARange", 16, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "NV", 24, frozenset({0, 1, 2})),
    ("ID_AA64MMFR2_EL1", "ST", 28, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "FWB", 40, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "TTL", 48, frozenset({0, 1})),
    ("ID_AA64MMFR2_EL1", "BBM", 52, frozenset({0, 1, 2})),
    ("ID_AA64MMFR2_EL1", "E0PD", 60, frozenset({0, 1})),
    ("ID_AA64ISAR0_EL1", "Atomic", 20, frozenset({0, 2})),
    ("ID_AA64ISAR0_EL1", "TLB", 56, frozenset({0, 1, 2})),
    ("ID_AA64ISAR2_EL1", "ATS1A", 60, frozenset({0, 1})),
    ("ID_AA64MMFR3_EL1", "TCRX", 0, frozenset({0, 1})),
    ("ID_AA64MMFR3_EL1", "S1PIE", 8, frozenset({0, 1})),
    ("ID_AA64MMFR3_EL1", "S2PIE", 12, frozenset({0, 1})),
    ("ID_AA64MMFR3_EL1", "S1POE", 16, frozenset({0, 1})),
    ("ID_AA64MMFR3_EL1", "S2POE", 20, frozenset({0, 1})),
)


def id_field(regs: IdRegs, register: str, name: str) -> int:
    """Return the 4-bit field name of register, checked against the values the model knows.

    Raises InputError naming register.field and the value for a reserved value (or one
    naming an extension the model does not implement).
    """
    for reg, fname, lsb, known in _ID_FIELDS:
        if reg == register and fname == name:
            value: int = (getattr(regs, register) >> lsb) & 0xF
            if value not in known:
                raise InputError(f"{register}.{name} = {value:#x}: reserved, or an extension "
                                 f"the model does not implement (known: "
                                 f"{', '.join(f'{v:#x}' for v in sorted(known))})")
            return value
    raise ValueError(f"{register}.{name} is not a field the model decodes")


def feature_set_of(regs: IdRegs) -> FeatureSet:
    """Return the FeatureSet (ID_FEATURES, PA size, granules) the ID registers report.

    The inverse of id_regs_of on ID_FEATURES: feature_set_of(id_regs_of(fs)) gives fs's
    ID_FEATURES, PA size and granules. Each field the model decodes is checked first
    (id_field); the stage-2 granule fields TGran*_2 are checked but not decoded (the
    model has one granule set for both stages). ID_AA64MMFR2_EL1.BBM 1 and 2 both give
    FEAT_BBM (the nT rule holds at either level); FEAT_LPA2 is TGran4 = 0b0001 or
    TGran16 = 0b0010. ID_AA64ISAR0_EL1.TLB 0b0001 (TLBI OS only) gives no feature the
    model has; 0b0010 gives FEAT_TLBIRANGE.
    """
    def f(reg: int, name: str) -> int:
        return id_field(regs, f"ID_AA64MMFR{reg}_EL1", name)

    for reg, name, _, _ in _ID_FIELDS:
        id_field(regs, reg, name)
    tgran4, tgran16, tgran64 = f(0, "TGran4"), f(0, "TGran16"), f(0, "TGran64")
    granules = {g for g, on in ((4, tgran4 != 0xF), (16, tgran16 != 0), (64, tgran64 == 0))
                if on}
    hafdbs, hpds, pan, nv = f(1, "HAFDBS"), f(1, "HPDS"), f(1, "PAN"), f(2, "NV")
    levels = (
        ("FEAT_BigEnd", f(0, "BigEnd") == 1), ("FEAT_LPA2", tgran4 == 1 or tgran16 == 2),
        ("FEAT_HAFDBS", hafdbs >= 1), ("FEAT_HAFDBS_DIRTY", hafdbs >= 2),
        ("FEAT_HAFT", hafdbs >= 3),
        ("FEAT_VMID16", f(1, "VMIDBits") == 2), ("FEAT_VHE", f(1, "VH") == 1),
        ("FEAT_HPDS", hpds >= 1), ("FEAT_HPDS2", hpds >= 2),
        ("FEAT_PAN", pan >= 1), ("FEAT_PAN2", pan >= 2), ("FEAT_PAN3", pan >= 3),
        ("FEAT_XNX", f(1, "XNX") == 1), ("FEAT_HCX", f(1, "HCX") == 1),
        ("FEAT_TTCNP", f(2, "CnP") == 1), ("FEAT_UAO", f(2, "UAO") == 1),
        ("FEAT_LVA", f(2, "VARange") == 1), ("FEAT_TTST", f(2, "ST") == 1),
        ("FEAT_NV", nv >= 1), ("FEAT_NV2", nv >= 2), ("FEAT_S2FWB", f(2, "FWB") == 1),
        ("FEAT_TTL", f(2, "TTL") == 1), ("FEAT_BBM", f(2, "BBM") >= 1),
        ("FEAT_LSE", id_field(regs, "ID_AA64ISAR0_EL1", "Atomic") == 2),
        ("FEAT_TLBIRANGE", id_field(regs, "ID_AA64ISAR0_EL1", "TLB") == 2),
        ("FEAT_ATS1A", id_field(regs, "ID_AA64ISAR2_EL1", "ATS1A") == 1),
        ("FEAT_E0PD", f(2, "E0PD") == 1), ("FEAT_TCR2", f(3, "TCRX") == 1),
        ("FEAT_S1PIE", f(3, "S1PIE") == 1), ("FEAT_S2PIE", f(3, "S2PIE") == 1),
        ("FEAT_S1POE", f(3, "S1POE") == 1), ("FEAT_S2POE", f(3, "S2POE") == 1),
    )
    return FeatureSet(frozenset(name for name, on in levels if on),
                      pa_bits=PARANGE_BITS[f(0, "PARange")], granules=frozenset(granules))
