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
    "FEAT_RME", "FEAT_XS", "FEAT_ATS1A",
})

PARANGE_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52}
PARANGE_OF_BITS = {v: k for k, v in PARANGE_BITS.items()}


@dataclass(frozen=True)
class FeatureSet:
    """What the implementation has: FEAT_* names, PA size, granules supported.

    ``FEAT_HAFDBS`` alone means hardware access-flag update; ``FEAT_HAFDBS_DIRTY``
    adds dirty-state update (ID_AA64MMFR1_EL1.HAFDBS 0b0010).
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


PRESETS = {"qemu-max": qemu_7_2_max, "server-v8.2": server_v8_2, "server-v8.4": server_v8_4_fwb}


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
    hafdbs = 2 if fs.has("FEAT_HAFDBS_DIRTY") else (1 if fs.has("FEAT_HAFDBS") else 0)
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
