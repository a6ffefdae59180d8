"""Behaviour profiles: the walker and map-walker rules of particular kernel versions.

The model runs today's code by default. A profile switches a few rules back to what an
older kernel did, one named knob per rule, so that the historic bugs can be reproduced
and shown to be fixed. Only rules that changed behaviour are knobs; everything else is
always the current code.

Knobs and the kernel history they stand for:

- ``eagain_rule``: how a visitor's -EAGAIN affects the walk (kvm_pgtable_walk_continue).
  ANY_ERROR_STOPS before v6.3; HANDLE_FAULT from v6.3 (commit ddcadb297ce5, "KVM: arm64:
  Ignore EAGAIN for walks outside of a fault": -EAGAIN is swallowed unless the walker
  passes KVM_PGTABLE_WALK_HANDLE_FAULT); IGNORE_EAGAIN from v6.19 (commit 19cffd16ed64,
  "KVM: arm64: Invert KVM_PGTABLE_WALK_HANDLE_FAULT to fix pKVM walkers", seed 000, in
  the kvmarm fixes for 6.19: -EAGAIN ends the walk unless the walker passes
  KVM_PGTABLE_WALK_IGNORE_EAGAIN, which only wrprotect does).
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
  The profiles before v6.19 keep the old rule.
- ``max_owner_id``: the largest owner id kvm_pgtable_stage2_set_owner accepts
  (KVM_MAX_OWNER_ID; larger ones are -EINVAL). 1 in Linux 6.1.192 and 6.12.118 as built
  here (``s2mmu kernel diff``: set_owner with owner 2 is -EINVAL in both, and 6.12.118's
  asm/kvm_pgtable.h defines it as 1). FIELD_MAX(KVM_INVALID_PTE_OWNER_MASK) = 255 in the
  v6.19 profile is the model's reading of pKVM's guest-ownership code: that definition
  was found in pKVM patches ("KVM: arm64: Extend memory donation to allow host-to-guest
  transitions", posted to kvmarm in May 2022) and in an Android pKVM tree, not in an
  upstream release, so no commit is pinned (:attr:`Change.observed` says so).
- ``shared_fault_walks``: user_mem_abort takes mmu_lock for read and its map and
  relax_perms walks pass KVM_PGTABLE_WALK_SHARED, so their entry updates are
  compare-and-swap (stage2_try_set_pte) and break-before-make locks the entry, from v6.2
  (commit 1577cb5823ce, "KVM: arm64: Handle stage-2 faults in parallel"). Before it
  (Linux 6.1.192 as read), faults take mmu_lock for write (for read only for a
  dirty-logging write permission fault), kvm_pgtable_stage2_map takes no walk flags and
  stage2_attr_walker stores with WRITE_ONCE.
- ``shared_access_faults``: handle_access_fault takes mmu_lock for read and
  kvm_pgtable_stage2_mkyoung passes KVM_PGTABLE_WALK_SHARED, from v6.3 (commit
  fc61f554e694, "KVM: arm64: Handle access faults behind the read lock", in the same
  series as ddcadb297ce5; the 6.3 pull calls it "an accidental omission in the original
  parallel faults implementation"). Before it, under the write lock with a plain store.
- ``relax_perms_local_tlbi``: kvm_pgtable_stage2_relax_perms invalidates with
  __kvm_tlb_flush_vmid_ipa_nsh (the local CPU's TLB) instead of the broadcast
  __kvm_tlb_flush_vmid_ipa (6.1.192 as read) from v6.5 (commit a12ab1378a88, "KVM:
  arm64: Use local TLBI on permission relaxation", with eager page splitting).
- ``relax_perms_tlbi_on_eagain``: that invalidation also runs when the walk returns
  -EAGAIN (another vCPU relaxed the entry first, and this CPU's TLB may still hold the
  entry that faulted), from v6.7 (commit be097997a273, "KVM: arm64: Always invalidate
  TLB for stage-2 permission faults"). 6.12.118 as read has both.
- ``nested_exec``: how the fault path reads execute permission from a guest
  hypervisor's stage-2 leaf (:class:`NestedExecRule`). Up to v6.18 (6.12.118 as read)
  kvm_s2_trans_executable tests desc bit 54 (XN[1]) for both ELs: an instruction
  abort that is a permission fault is forwarded to L1 when it is set, the DIC shortcut
  adds X only when it is clear, but an exec fault adds X whatever L1 says (nothing
  strips it: a first fetch from a page L1 made XN is mapped executable). From v6.19
  (commit d93febe2ed2e, "KVM: arm64: nv: Forward FEAT_XNX permissions to the shadow
  stage-2") kvm_s2_trans_exec_el0/_el1 decode XN[1:0], kvm_s2_handle_perm_fault asks
  the one of the faulting EL and adjust_nested_exec_perms strips UX/PX from the prot;
  but without FEAT_XNX in the VM they mask the extracted field with
  FIELD_PREP(XN, 0b10), which is 0 in a u8: every L1 leaf is executable. Fixed by
  commit 49b32ddb87a3 ("KVM: arm64: nv: Fix handling of XN[0] when !FEAT_XNX", in the
  kvmarm fixes for 7.1, Cc stable, queued for 7.0.y; CVE-2026-53200).

The flags the fault path passes follow from these knobs and the ``eagain_rule``
(s2mmu.pgtable.callers): SHARED from v6.2 (mkyoung from v6.3), with HANDLE_FAULT from
v6.3 (ddcadb297ce5 added it to the map of user_mem_abort and to relax_perms and mkyoung,
which pass it inside pgtable.c in 6.12.118 as read; the pKVM series that gave relax_perms
and mkyoung a flags argument, "KVM: arm64: Pass walk flags to
kvm_pgtable_stage2_relax_perms", kept HANDLE_FAULT|SHARED in user_mem_abort) until
19cffd16ed64 drops it.

Four knobs were found by running Linux 6.1.192's own pgtable.c against the model
(``s2mmu kernel diff --source /usr/src/linux-source-6.1.tar.xz``, full agreement with
them); 6.1.192 has the old rule and 6.12.118 the new one. Their commits, found in the
kvmarm pull requests and the patches as posted:

- ``map_anchor``: the map walker replaces a table by a block through an anchor (6.1's
  stage2_map_walk_table_pre clears the table entry and invalidates the whole VMID, the
  LEAF callback drops the references of the leaves below it, TABLE_POST frees the
  detached tables on the way up and installs the block at the anchor), until commit
  5c359cca1faf ("KVM: arm64: Tear down unlinked stage-2 subtree after
  break-before-make", in the v6.2 parallel-fault series with 1577cb5823ce): TABLE_PRE
  installs the block at once and frees the detached table (the v6.2 profile's TABLE_PRE,
  whose missing re-read a9f0e3d5a089 fixed).
- ``cmo_valid_leaf_only``: the map walker's I-cache invalidation is for valid
  executable leaves only (stage2_pte_executable checks validity), from commit
  96171cfa55d0 ("KVM: arm64: Check for PTE validity when checking for
  executable/cacheable", in the KVM/arm64 updates for 6.10); before it an invalid entry
  whose XN bit is clear (an owner annotation) is invalidated too, as 6.1 does.
- ``map_sw_bits_shortcut``: an exclusive map that changes only software bits (or
  nothing, as re-annotating an entry for the same owner) stores the entry without
  break-before-make or cache maintenance (stage2_map_walker_try_leaf's "only changing
  software bits" case), from commit 7cc1d214a6cd ("KVM: arm64: Avoid BBM when changing
  only s/w bits in Stage-2 PTE", in the KVM/arm64 updates for 6.10); before it, as in
  6.1, the map goes through break-before-make and its cache maintenance.
- ``unmap_range_tlbi``: with FEAT_TLBIRANGE and FWB, unmap skips the per-entry TLBIs
  and invalidates the whole range once at the end (stage2_unmap_defer_tlb_flush), from
  commit 7657ea920c54 ("KVM: arm64: Use TLBI range-based instructions for unmap", in
  the KVM/arm64 updates for 6.6); 6.1 invalidates entry by entry.
- ``host_state_in_pte``: pKVM keeps the host's page state (SHARED_OWNED, SHARED_BORROWED)
  in the host stage-2 PTEs' software bits: __host_set_page_state_range identity-maps the
  range with pkvm_mkstate(PKVM_HOST_MEM_PROT, state), which forces pages (read in 6.1's and
  6.12's mem_protect.c; real 6.1 under pKVM shows such pages, ``s2mmu real diff --mode
  protected --dump-after N``). From "KVM: arm64: Move host page ownership tracking to the
  hyp vmemmap" (the series of v6.14's pKVM guest stage 2; commit not pinned) the state is
  in the hyp vmemmap only and a share leaves the host's mapping as it is.
- ``change_pte``: the MMU notifier's .change_pte() reaches KVM. A copy-on-write
  (wp_page_copy) sets the new PTE with set_pte_at_notify inside its invalidation, and
  kvm_set_spte_gfn maps the new page at stage 2 read-only (KVM_PGTABLE_PROT_R, no
  memcache: -ENOMEM where the unmap freed the last-level table), so the retried write is
  a permission fault, not a translation fault. Read in 6.1's kvm_main.c
  (kvm_mmu_notifier_change_pte: only while mmu_invalidate_in_progress;
  kvm_change_spte_gfn) and mmu.c (kvm_set_spte_gfn); seen on real 6.1 (`s2mmu real
  diff` of tests/scenarios/zero_page_cow.toml). Removed by commit f3b65bbaed7c ("KVM:
  delete .change_pte MMU notifier callback", queued in April 2024 after v6.9-rc3, so
  taken as v6.10); 6.12's sources have no change_pte.

The two 6.10 commits were pinned after the profiles had them at v6.2: the v6.2 and v6.6
profiles now keep 6.1's rule for both, and the v6.12 profile takes the new one (it
stands for v6.7..v6.13, so v6.7..v6.9, which predate 6.10, have the old rule for these
two knobs; no profile stands for them separately).

Releases: one profile per release that changed a rule or that a user meets (v6.1 and
v6.12 are Debian's kernels, v6.6 a long-term release, v6.18 the last with HANDLE_FAULT
and the first profile with pKVM's EL2 guest stage 2, v6.19 the first with FEAT_XNX in
the nested fault path and its XN[0] mistake, v7.1 the current code). Each
knob's history is a :class:`Knob` in :data:`KNOBS`, with the release that changed it and
the commit, or ``None`` where the commit is not pinned.

Kernel: kvm_pgtable_walk_continue, __kvm_pgtable_visit, stage2_map_walker_phys_addr,
stage2_attr_walker, stage2_map_walker_try_leaf, kvm_pgtable_stage2_relax_perms
(arch/arm64/kvm/hyp/pgtable.c as of v6.2, v6.3, 6.12 and linux-next, and the commits
named above); user_mem_abort, handle_access_fault (arch/arm64/kvm/mmu.c of Linux 6.1.192
and 6.12.118, Debian's linux-source packages).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from s2mmu.arch.errors import InputError


class NestedExecRule(enum.Enum):
    """How the fault path reads execute permission from L1's stage-2 leaf (see the
    module docstring's ``nested_exec``)."""

    DESC_BIT54 = "XN[1] for both ELs; an exec fault maps X unchecked (before v6.19)"
    XNX_XN_DROPPED = "XN[1:0] with FEAT_XNX, none without it: always executable (v6.19, v7.0)"
    XNX = "XN[1:0] with FEAT_XNX, XN[1] without it (v7.1 onward, 49b32ddb87a3)"


class EagainRule(enum.Enum):
    """What a visitor's -EAGAIN does to the walk."""

    ANY_ERROR_STOPS = "any error ends the walk (before v6.3)"
    HANDLE_FAULT = "-EAGAIN is ignored unless HANDLE_FAULT is set (v6.3 to v6.19-rc4)"
    IGNORE_EAGAIN = "-EAGAIN ends the walk unless IGNORE_EAGAIN is set (v6.19 onward)"


@dataclass(frozen=True)
class BehaviourProfile:
    """A set of rule choices standing for one kernel release (see module docstring)."""

    name: str
    eagain_rule: EagainRule
    reload_after_table_pre: bool
    pa_from_ipa: bool
    attr_eagain_on_invalid: bool
    perm_only_filter: bool
    relax_perms_xn_from_prot: bool = True
    max_owner_id: int = 255
    shared_fault_walks: bool = True
    shared_access_faults: bool = True
    relax_perms_local_tlbi: bool = True
    relax_perms_tlbi_on_eagain: bool = True
    map_anchor: bool = False
    cmo_valid_leaf_only: bool = True
    map_sw_bits_shortcut: bool = True
    unmap_range_tlbi: bool = True
    nested_exec: NestedExecRule = NestedExecRule.XNX
    host_state_in_pte: bool = False
    change_pte: bool = False


@dataclass(frozen=True)
class Change:
    """One change of a knob: the release it first shipped in, the commit, its subject.

    commit is None where the hash is not pinned, title None where the subject is not
    known either (never guessed); observed then says over which releases the change was
    seen and why no commit is pinned."""

    release: str
    commit: str | None
    title: str | None
    observed: str | None = None


@dataclass(frozen=True)
class Knob:
    """A rule that changed behaviour: the profile field holding it, what it decides, and
    the changes that made each value."""

    name: str
    rule: str
    changes: tuple[Change, ...]


KNOBS = (
    Knob("eagain_rule", "what a visitor's -EAGAIN does to the walk (kvm_pgtable_walk_continue)",
         (Change("v6.3", "ddcadb297ce5", "KVM: arm64: Ignore EAGAIN for walks outside of a fault"),
          Change("v6.19", "19cffd16ed64", "KVM: arm64: Invert KVM_PGTABLE_WALK_HANDLE_FAULT to "
                 "fix pKVM walkers"))),
    Knob("reload_after_table_pre", "the entry is re-read after a TABLE_PRE callback",
         (Change("v6.4", "a9f0e3d5a089", "KVM: arm64: Reload PTE after invoking walker callback "
                 "on preorder traversal"),)),
    Knob("pa_from_ipa", "the map walker infers the output address from the IPA",
         (Change("v6.4", "1f0f4a2ef7a5", "KVM: arm64: Infer the PA offset from IPA in stage-2 "
                 "map walker"),)),
    Knob("attr_eagain_on_invalid", "stage2_attr_walker returns -EAGAIN for an invalid entry",
         (Change("v6.3", "76259cca4795", "KVM: arm64: Return EAGAIN for invalid PTE in attr "
                 "walker"),)),
    Knob("perm_only_filter", "a permissions-only map returns -EAGAIN, entry untouched",
         (Change("v5.12", "694d071f8d85", "KVM: arm64: Filter out the case of only changing "
                 "permissions from stage-2 map path"),)),
    Knob("relax_perms_xn_from_prot", "relax_perms writes XN from prot (can make a leaf XN)",
         (Change("v6.19", "2608563b466b", "KVM: arm64: Add support for FEAT_XNX stage-2 "
                 "permissions"),)),
    Knob("max_owner_id", "largest owner id kvm_pgtable_stage2_set_owner accepts",
         (Change("v6.19", None, None, "1 in 6.1.192 and 6.12.118 as built here; 255 "
                 "(FIELD_MAX of the owner field) is read from pKVM patches and an Android "
                 "pKVM tree, not found in an upstream release"),)),
    Knob("shared_fault_walks", "user_mem_abort: read lock, map and relax_perms pass SHARED (CAS)",
         (Change("v6.2", "1577cb5823ce", "KVM: arm64: Handle stage-2 faults in parallel"),)),
    Knob("shared_access_faults", "handle_access_fault: read lock, mkyoung passes SHARED (CAS)",
         (Change("v6.3", "fc61f554e694", "KVM: arm64: Handle access faults behind the read "
                 "lock"),)),
    Knob("relax_perms_local_tlbi", "relax_perms invalidates the local TLB (TLBI IPAS2E1, nsh)",
         (Change("v6.5", "a12ab1378a88", "KVM: arm64: Use local TLBI on permission "
                 "relaxation"),)),
    Knob("relax_perms_tlbi_on_eagain", "relax_perms invalidates the TLB on -EAGAIN too",
         (Change("v6.7", "be097997a273", "KVM: arm64: Always invalidate TLB for stage-2 "
                 "permission faults"),)),
    Knob("map_anchor", "the map walker replaces a table by a block through an anchor",
         (Change("v6.2", "5c359cca1faf", "KVM: arm64: Tear down unlinked stage-2 subtree "
                 "after break-before-make"),)),
    Knob("cmo_valid_leaf_only", "the map walker's I-cache invalidation skips invalid entries",
         (Change("v6.10", "96171cfa55d0", "KVM: arm64: Check for PTE validity when checking "
                 "for executable/cacheable"),)),
    Knob("map_sw_bits_shortcut", "an exclusive software-bits-only map skips BBM and CMOs",
         (Change("v6.10", "7cc1d214a6cd", "KVM: arm64: Avoid BBM when changing only s/w bits "
                 "in Stage-2 PTE"),)),
    Knob("unmap_range_tlbi", "unmap (FWB + FEAT_TLBIRANGE) invalidates the range once at the end",
         (Change("v6.6", "7657ea920c54", "KVM: arm64: Use TLBI range-based instructions for "
                 "unmap"),)),
    Knob("nested_exec", "how L1's stage-2 XN reaches the fault path (forward, shadow prot)",
         (Change("v6.19", "d93febe2ed2e", "KVM: arm64: nv: Forward FEAT_XNX permissions to the "
                 "shadow stage-2"),
          Change("v7.1", "49b32ddb87a3", "KVM: arm64: nv: Fix handling of XN[0] when "
                 "!FEAT_XNX"))),
    Knob("host_state_in_pte", "pKVM keeps the host's page state in its stage-2 PTEs' SW bits "
         "(a share maps the page with pkvm_mkstate), not only in the hyp vmemmap",
         (Change("v6.14", None, "KVM: arm64: Move host page ownership tracking to the hyp "
                 "vmemmap", observed="6.1.192 and 6.12.118 keep the state in the PTE (read; "
                 "real 6.1 under pKVM shows it); the patch is read in its v2 mail, the "
                 "release (v6.14) is not verified"),)),
    Knob("change_pte", "a CoW's set_pte_at_notify maps the new page read-only "
         "(kvm_set_spte_gfn)",
         (Change("v6.10", "f3b65bbaed7c", "KVM: delete .change_pte MMU notifier callback"),)),
)
"""Every knob of BehaviourProfile, in field order, with its history."""


V6_1 = BehaviourProfile(
    name="v6.1",
    eagain_rule=EagainRule.ANY_ERROR_STOPS,
    reload_after_table_pre=False,
    pa_from_ipa=False,
    attr_eagain_on_invalid=False,
    perm_only_filter=True,
    relax_perms_xn_from_prot=False,
    max_owner_id=1,
    shared_fault_walks=False,
    shared_access_faults=False,
    relax_perms_local_tlbi=False,
    relax_perms_tlbi_on_eagain=False,
    map_anchor=True,
    cmo_valid_leaf_only=False,
    map_sw_bits_shortcut=False,
    unmap_range_tlbi=False,
    nested_exec=NestedExecRule.DESC_BIT54,
    host_state_in_pte=True,
    change_pte=True,
)
"""v6.1 (Debian's 6.1.192): faults under the write lock, no walk flags, plain stores."""

# Each release below is the one before it with the knobs that changed between them.

V6_2 = replace(V6_1, name="v6.2", shared_fault_walks=True, map_anchor=False)
"""v6.2: parallel faults (SHARED); any error stops the walk; no 6.4-rc map-walker fixes."""

V6_6 = replace(V6_2, name="v6.6", eagain_rule=EagainRule.HANDLE_FAULT,
               reload_after_table_pre=True, pa_from_ipa=True, attr_eagain_on_invalid=True,
               shared_access_faults=True, relax_perms_local_tlbi=True, unmap_range_tlbi=True)
"""v6.6 (long-term): HANDLE_FAULT, the 6.4-rc map-walker fixes, local TLBI after a relax
(not yet on -EAGAIN)."""

V6_12 = replace(V6_6, name="v6.12", relax_perms_tlbi_on_eagain=True, cmo_valid_leaf_only=True,
                map_sw_bits_shortcut=True, change_pte=False)
"""v6.12 (Debian's 6.12.118): v6.6's rules with the v6.7 TLBI on -EAGAIN and the two v6.10
map-walker changes, no change_pte notifier (v6.10); at.c's software walker appears."""

V6_18 = replace(V6_12, name="v6.18", host_state_in_pte=False)
"""v6.18: the last release with HANDLE_FAULT, where pKVM's EL2 walks (which pass no flag)
swallow -EAGAIN (seed 000)."""

V6_19 = replace(V6_18, name="v6.19", eagain_rule=EagainRule.IGNORE_EAGAIN,
                relax_perms_xn_from_prot=True, max_owner_id=255,
                nested_exec=NestedExecRule.XNX_XN_DROPPED)
"""v6.19 (and v7.0): IGNORE_EAGAIN, passed only by wrprotect; the fault path passes
SHARED; FEAT_XNX reaches the nested fault path, and without it every L1 leaf is
executable."""

V7_1 = replace(V6_19, name="v7.1", nested_exec=NestedExecRule.XNX)
"""v7.1 onward (the current code): v6.19's rules with the XN[0] fix (49b32ddb87a3)."""

CURRENT = V7_1
"""The default profile."""

PRE_V6_3 = V6_2
"""The profile before HANDLE_FAULT (an older name of V6_2)."""

V6_3 = V6_12
"""A profile with HANDLE_FAULT (an older name of V6_12)."""

PROFILES = {p.name: p for p in (V6_1, V6_2, V6_6, V6_12, V6_18, V6_19, V7_1)}
"""Every profile by release name, oldest first."""


def profile_names() -> str:
    """Return the release names, oldest first, as messages list them."""
    return ", ".join(PROFILES)


def behaviour_profile(name: str) -> BehaviourProfile:
    """Return the profile of a release name; InputError listing the names otherwise."""
    if name not in PROFILES:
        raise InputError(f"unknown kernel profile {name!r} (known: {profile_names()})")
    return PROFILES[name]


COVERS_FROM = {"v6.1": (0, 0), "v6.2": (6, 2), "v6.6": (6, 3), "v6.12": (6, 7),
               "v6.18": (6, 14), "v6.19": (6, 19), "v7.1": (7, 1)}
"""The first release each profile stands for: v6.6 stands for v6.3 to v6.6 (6.3.y has
the 6.4-rc fixes; v6.3 and v6.4 still invalidate the TLB after relax_perms as v6.2 does),
v6.12 for v6.7 to v6.13 (at.c's software walker is 6.12's), v6.18 for v6.14 to v6.18
(pKVM's EL2 guest stage 2 came with commit fce886a60207, "KVM: arm64: Plumb the pKVM MMU
in KVM"; the release it first shipped in, v6.14 here, is not pinned), v6.19 for v6.19 and
v7.0 (7.0.y stable takes the XN[0] fix: a v7.0.y kernel with it is v7.1's)."""


def profile_for_release(version: int, patchlevel: int) -> BehaviourProfile:
    """Return the profile standing for Linux VERSION.PATCHLEVEL (older than v6.1: v6.1's)."""
    chosen = V6_1
    for name, first in COVERS_FROM.items():
        if first <= (version, patchlevel):
            chosen = PROFILES[name]
    return chosen


def knob_value(profile: BehaviourProfile, knob: Knob) -> object:
    """Return the value a profile gives a knob."""
    return getattr(profile, knob.name)

