"""Behaviour profiles: the walker and map-walker rules of particular kernel versions.

The model runs today's code by default. A profile switches a few rules back to what an
older kernel did, one named knob per rule, so that the historic bugs can be reproduced
and shown to be fixed. Only rules that changed behaviour are knobs; everything else is
always the current code.

Knobs and the kernel history they stand for:

- ``eagain_rule``: how a visitor's -EAGAIN affects the walk (kvm_pgtable_walk_continue).
  ANY_ERROR_STOPS before v6.3; HANDLE_FAULT from v6.3 (commit ddcadb297ce5, "KVM: arm64:
  Ignore EAGAIN for walks outside of a fault": -EAGAIN is swallowed unless the walker
  passes KVM_PGTABLE_WALK_HANDLE_FAULT); IGNORE_EAGAIN from v6.19 ("KVM: arm64: Invert
  KVM_PGTABLE_WALK_HANDLE_FAULT to fix pKVM walkers", seed 000: -EAGAIN ends the walk
  unless the walker passes KVM_PGTABLE_WALK_IGNORE_EAGAIN, which only wrprotect does).
- ``reload_after_table_pre``: the entry is re-read after a TABLE_PRE callback (commit
  a9f0e3d5a089, "KVM: arm64: Reload PTE after invoking walker callback on preorder
  traversal", v6.4-rc, backported to 6.3.y). Before it, a TABLE_PRE that replaced a table
  by a block was followed by a walk of the freed table.
- ``pa_from_ipa``: the map walker computes the output address from how far the walk has
  got (phys + addr - start) instead of a counter bumped at each installed leaf (commit
  1f0f4a2ef7a5, "KVM: arm64: Infer the PA offset from IPA in stage-2 map walker", v6.4-rc,
  backported to 6.3.y). Before it, a racing vCPU that replaced a just-installed block by a
  table made the walker map the table's pages at the wrong output address.
- ``attr_eagain_on_invalid``: the attribute walker (wrprotect, mkyoung, relax_perms)
  returns -EAGAIN for an invalid entry instead of skipping it (commit 76259cca4795,
  "KVM: arm64: Return EAGAIN for invalid PTE in attr walker", v6.3, in the same series
  as the HANDLE_FAULT rule that keeps it from stopping wrprotect at the first hole).
- ``perm_only_filter``: a map that only changes permissions returns -EAGAIN and leaves
  the entry untouched (commit 694d071f8d85, "KVM: arm64: Filter out the case of only
  changing permissions from stage-2 map path", v5.12). Before it, the entry was replaced
  through break-before-make (and a later, narrower fault could take permissions away).
- ``relax_perms_xn_from_prot``: kvm_pgtable_stage2_relax_perms writes the XN field from
  the requested prot (stage2_set_xn_attr: a prot without X makes the leaf
  non-executable) from v6.19 (commit 2608563b466b, "KVM: arm64: Add support for FEAT_XNX
  stage-2 permissions", merged for v6.19-rc1). Before it, relax_perms only cleared XN
  when X was asked for and never set it, so relaxing an executable leaf to RW left it
  executable (measured against Linux 6.12.118's own pgtable.c by ``s2mmu kernel diff``).
  The v6.3..v6.19-rc4 profile keeps the old rule: it stands for the releases up to
  v6.18 on this point.
- ``max_owner_id``: the largest owner id kvm_pgtable_stage2_set_owner accepts
  (KVM_MAX_OWNER_ID; larger ones are -EINVAL). 1 in pgtable.c up to 6.12 at least (read
  in the source of the v6.3 era and measured against Linux 6.12.118's own pgtable.c);
  FIELD_MAX(KVM_INVALID_PTE_OWNER_MASK) = 255 in the v6.19 profile, the model's reading
  of the pKVM guest-ownership code (the commit that raised it is not pinned here).

Three knobs stand for Linux 6.1, measured against its own pgtable.c (6.1.192) by
``s2mmu kernel diff --source /usr/src/linux-source-6.1.tar.xz``; 6.1 is the last release
before the v6.2 parallel-fault rework that the "v6.2" profile stands for, so they are
off in every other profile (the commits that changed them are not pinned here):

- ``map_anchor``: the map walker replaces a table by a block through an anchor (6.1's
  stage2_map_walk_table_pre clears the table entry and invalidates the whole VMID, the
  LEAF callback drops the references of the leaves below it, TABLE_POST frees the
  detached tables on the way up and installs the block at the anchor), instead of
  breaking the table entry and freeing the detached table at once.
- ``relax_perms_local_tlbi``: relax_perms invalidates with the non-shareable
  __kvm_tlb_flush_vmid_ipa_nsh (6.12); 6.1 uses the Inner Shareable
  __kvm_tlb_flush_vmid_ipa.
- ``cmo_valid_leaf_only``: the map walker's I-cache invalidation is for valid
  executable leaves only (6.12's stage2_pte_executable checks validity); 6.1 also
  invalidates for an invalid entry whose XN bit is clear (an owner annotation).
- ``map_sw_bits_shortcut``: an exclusive map that changes only software bits (or
  nothing, as re-annotating an entry for the same owner) stores the entry without
  break-before-make or cache maintenance (6.12's stage2_map_walker_try_leaf); 6.1 has
  no such case and goes through its cache maintenance.
- ``unmap_range_tlbi``: with FEAT_TLBIRANGE and FWB, unmap skips the per-entry TLBIs
  and invalidates the whole range once at the end (6.12's
  stage2_unmap_defer_tlb_flush); 6.1 has no range invalidation and always invalidates
  entry by entry.

Kernel: kvm_pgtable_walk_continue, __kvm_pgtable_visit, stage2_map_walker_phys_addr,
stage2_attr_walker, stage2_map_walker_try_leaf, kvm_pgtable_stage2_relax_perms
(arch/arm64/kvm/hyp/pgtable.c as of v6.2, v6.3, 6.12 and linux-next, and the commits
named above).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EagainRule(enum.Enum):
    """What a visitor's -EAGAIN does to the walk."""

    ANY_ERROR_STOPS = "any error ends the walk (before v6.3)"
    HANDLE_FAULT = "-EAGAIN is ignored unless HANDLE_FAULT is set (v6.3 to v6.19-rc4)"
    IGNORE_EAGAIN = "-EAGAIN ends the walk unless IGNORE_EAGAIN is set (v6.19 onward)"


@dataclass(frozen=True)
class BehaviourProfile:
    """A set of rule choices standing for one kernel version (see module docstring)."""

    name: str
    eagain_rule: EagainRule
    reload_after_table_pre: bool
    pa_from_ipa: bool
    attr_eagain_on_invalid: bool
    perm_only_filter: bool
    relax_perms_xn_from_prot: bool = True
    max_owner_id: int = 255
    map_anchor: bool = False
    relax_perms_local_tlbi: bool = True
    cmo_valid_leaf_only: bool = True
    map_sw_bits_shortcut: bool = True
    unmap_range_tlbi: bool = True


V6_1 = BehaviourProfile(
    name="v6.1",
    eagain_rule=EagainRule.ANY_ERROR_STOPS,
    reload_after_table_pre=False,
    pa_from_ipa=False,
    attr_eagain_on_invalid=False,
    perm_only_filter=True,
    relax_perms_xn_from_prot=False,
    max_owner_id=1,
    map_anchor=True,
    relax_perms_local_tlbi=False,
    cmo_valid_leaf_only=False,
    map_sw_bits_shortcut=False,
    unmap_range_tlbi=False,
)
"""Linux 6.1: before the v6.2 parallel-fault rework (anchor map walker, ISH relax TLBI)."""


PRE_V6_3 = BehaviourProfile(
    name="v6.2",
    eagain_rule=EagainRule.ANY_ERROR_STOPS,
    reload_after_table_pre=False,
    pa_from_ipa=False,
    attr_eagain_on_invalid=False,
    perm_only_filter=True,
    relax_perms_xn_from_prot=False,
    max_owner_id=1,
)
"""Before v6.3: any error stops the walk; the two 6.4-rc map-walker fixes are absent."""

V6_3 = BehaviourProfile(
    name="v6.3..v6.19-rc4",
    eagain_rule=EagainRule.HANDLE_FAULT,
    reload_after_table_pre=True,
    pa_from_ipa=True,
    attr_eagain_on_invalid=True,
    perm_only_filter=True,
    relax_perms_xn_from_prot=False,
    max_owner_id=1,
)
"""v6.3 to v6.19-rc4 (with the 6.4-rc fixes that 6.3.y stable also has): HANDLE_FAULT."""

V6_19 = BehaviourProfile(
    name="v6.19",
    eagain_rule=EagainRule.IGNORE_EAGAIN,
    reload_after_table_pre=True,
    pa_from_ipa=True,
    attr_eagain_on_invalid=True,
    perm_only_filter=True,
    relax_perms_xn_from_prot=True,
    max_owner_id=255,
)
"""v6.19 onward: IGNORE_EAGAIN, passed only by wrprotect."""

CURRENT = V6_19
"""The default profile."""

PROFILES = {p.name: p for p in (V6_1, PRE_V6_3, V6_3, V6_19)}
