"""Kernel releases as profiles across every layer: one name selects every layer's rules.

Each layer keeps the knobs it owns: the page-table library and the fault path's walker
flags in :mod:`s2mmu.pgtable.profile` (a BehaviourProfile per release), the AT emulation
of at.c in :mod:`s2mmu.nested.at` (an AtProfile). A :class:`KernelProfile` puts one
release's values together, so a scenario's ``[kvm] profile = "v6.12"``, ``s2mmu run
--profile v6.12`` and ``run_scenario(..., profile="v6.12")`` select them all at once, and
``s2mmu profiles`` lists them.

at.c's software walker is read in Linux 6.12.118; the profiles of older releases have
no AT emulation (``at`` is None: nested virtualisation is not what they are used for).

Knob of this layer:

- ``at_hw_af``: the software stage-1 walk sets the access flag (TCR_ELx.HA with
  FEAT_HAFDBS, through __kvm_at_swap_desc) instead of reporting an Access flag fault.
  Off in 6.12.118's at.c as read (no descriptor update); on from v6.19 (commit
  c59ca4b5b0c3, "KVM: arm64: Implement HW access flag management in stage-1 SW PTW",
  merged beside 2608563b466b).

Four more were measured against 6.12.118's own at.c by ``s2mmu kernel diff --at``
(at.AtProfile: ``at_s1_af_checked``, ``at_ptw_on_s1_walk_fault``, ``at_s12_needs_e2h``,
``at_fwb_device_nGnRnE``): 6.12.118 as built here has the old rule; torvalds/linux's
at.c as stored by the search tool (file version at commit 0090c0a247cd, an at.c with
S1PIE/S1POE and fail_s1_walk(wr, fst, s1ptw)) has the new one: walk_s1 reports an
Access flag fault for AF=0, fail_s1_walk sets PTW only with S (a stage-2 fault on the
walk), __kvm_at_s12 skips stage 2 only for the EL2&0 regime or {VM,DC}=={0,0}, and
compute_par_s12 combines a stage-2 Device type with stage 1's under FWB. The commits
between were not found in the stored mail and git logs searched (subjects of the
kvmarm pulls, find_string on the changed lines), so none is pinned; the profiles take
the new rule with v6.19, as they take at_hw_af, and ``s2mmu profiles`` prints the
observed range.

Kernel: arch/arm64/kvm/at.c (Linux 6.12.118 as read: setup_s1_walk, walk_s1, no
__kvm_at_swap_desc) and the current at.c (__kvm_at_swap_desc).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2mmu.arch.errors import InputError
from s2mmu.nested import at
from s2mmu.pgtable.profile import (
    KNOBS,
    PROFILES,
    BehaviourProfile,
    Change,
    Knob,
    knob_value,
    profile_names,
)

AT_OBSERVED = ("6.12.118 (built here, kernel diff --at) has the old rule; torvalds/linux "
               "at.c stored at 0090c0a247cd has the new one; the commit between is not "
               "pinned")
"""Where the four measured at.c rules were seen to change (no commit pinned)."""

AT_KNOBS = (
    Knob("at_hw_af", "the AT software walk sets the stage-1 access flag (__kvm_at_swap_desc)",
         (Change("v6.19", "c59ca4b5b0c3", "KVM: arm64: Implement HW access flag management "
                 "in stage-1 SW PTW"),)),
    Knob("at_s1_af_checked", "the AT software walk reads the stage-1 AF",
         (Change("v6.19", None, None, AT_OBSERVED),)),
    Knob("at_ptw_on_s1_walk_fault", "a stage-1 fault found by the AT walk sets PAR_EL1.PTW",
         (Change("v6.19", None, None, AT_OBSERVED),)),
    Knob("at_s12_needs_e2h", "AT S12E* walks L1's stage 2 only with E2H=1",
         (Change("v6.19", None, None, AT_OBSERVED),)),
    Knob("at_fwb_device_nGnRnE", "AT S12E* with FWB reads a stage-2 Device type as nGnRnE",
         (Change("v6.19", None, None, AT_OBSERVED),)),
)
"""The AT emulation's knobs, with their history."""

AT_OF_RELEASE: dict[str, at.AtProfile | None] = {
    "v6.1": None, "v6.2": None, "v6.6": None,
    "v6.12": at.V6_12, "v6.18": at.V6_12, "v6.19": at.CURRENT, "v7.1": at.CURRENT,
}
"""The AT emulation of each release (None: no at.c)."""


@dataclass(frozen=True)
class KernelProfile:
    """One kernel release's rules in every layer."""

    name: str
    pgtable: BehaviourProfile
    at: at.AtProfile | None


KERNEL_PROFILES = {name: KernelProfile(name, p, AT_OF_RELEASE[name])
                   for name, p in PROFILES.items()}
"""Every release, oldest first."""

CURRENT = KERNEL_PROFILES["v7.1"]
"""The default: the current code."""


def kernel_profile(name: str) -> KernelProfile:
    """Return a release's profile; InputError naming the valid releases otherwise."""
    if name not in KERNEL_PROFILES:
        raise InputError(f"unknown kernel profile {name!r} (known: {profile_names()})")
    return KERNEL_PROFILES[name]


def all_knobs() -> tuple[Knob, ...]:
    """Return every layer's knobs: the page-table library's, then the AT emulation's."""
    return KNOBS + AT_KNOBS


def value_of(profile: KernelProfile, knob: Knob) -> object:
    """Return the value a release gives a knob (None: the layer is absent)."""
    if knob.name in AT_FIELDS:
        return None if profile.at is None else getattr(profile.at, AT_FIELDS[knob.name])
    return knob_value(profile.pgtable, knob)


AT_FIELDS = {"at_hw_af": "hw_af", "at_s1_af_checked": "s1_af_checked",
             "at_ptw_on_s1_walk_fault": "ptw_on_s1_walk_fault",
             "at_s12_needs_e2h": "s12_needs_e2h", "at_fwb_device_nGnRnE": "fwb_device_nGnRnE"}
"""The AtProfile field behind each AT knob."""
