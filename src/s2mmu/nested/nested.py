"""The guest hypervisor's stage 2, walked by KVM: kvm_walk_nested_s2.

A guest hypervisor (L1) runs at virtual EL2 with its own VTCR_EL2/VTTBR_EL2 and stage-2
tables in its memory. KVM walks them in software to learn what L1 maps for its guest
(L2). The walk here is the architecture's stage-2 walk (s2mmu.arch.translate.s2_walk)
read through a guest-memory port, with KVM's decoding of L1's registers and KVM's
checks around it:

- VTCR_EL2: TG0 (a reserved encoding is 64KB), SL0, T0SZ, PS; SCTLR_EL2.EE for the
  tables' byte order. DS, HA/HD and 52-bit addresses are ignored (48-bit descriptors).
- input size 25..48 bits and the start level's limits (check_base_s2_limits): outside
  them the walk is refused (-EFAULT), no fault is reported;
- output size: the smaller of KVM's IPA limit and PS (vtcr_to_walk_info);
- faults at their level: translation, address size (the table base at the start
  level), access flag (AF=0 always faults: the walker never sets it), a block below
  the first block level;
- no check of the IPA against T0SZ: bits above the input size are ignored;
- the output takes the contiguous hint: bits below the contiguous run come from the
  input (contiguous_bit_shift);
- readable/writable from S2AP, executable per EL from XN (FEAT_XNX as the VM has it).

Kernel: arch/arm64/kvm/nested.c (vtcr_to_walk_info, check_base_s2_limits,
check_output_size, walk_nested_s2_pgd, kvm_walk_nested_s2, read_guest_s2_desc).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from s2mmu.arch.access import AccessDescriptor, acc_gpr
from s2mmu.arch.bits import bits, mask, set_bits
from s2mmu.arch.config import ImplChoices
from s2mmu.arch.descriptors import af
from s2mmu.arch.faults import Fault, FaultRecord, as_stage2, fsc
from s2mmu.arch.features import NO_HW_UPDATE, FeatureSet, IdRegs
from s2mmu.arch.memory import PhysMem, TableMemory
from s2mmu.arch.params import FINAL_LEVEL, Granule, S2TTWParams, get_s2_ttw_params
from s2mmu.arch.perms import s2_direct_permissions
from s2mmu.arch.registers import SCTLR_EL2, VTCR_EL2
from s2mmu.arch.state import SysRegs
from s2mmu.arch.translate import Env, s2_output, s2_setup, s2_walk
from s2mmu.arch.walk import TTWState, WalkStep, oa_out_of_range
from s2mmu.kvm.cpu import arch_features
from s2mmu.kvm.vm import Kvm
from s2mmu.pgtable.s2trans import KvmS2Trans
from s2mmu.pgtable.s2trans import NestedWalkError as NestedWalkError  # re-exported


@dataclass(frozen=True)
class NestedVm:
    """What KVM knows about a VM that runs a guest hypervisor (built once, passed in).

    fs: the features the VM sees (its ID registers). ipa_limit: get_kvm_ipa_limit(),
    the host's IPA size. guest: the VM's physical memory as kvm_read_guest reads it.
    """

    fs: FeatureSet
    ipa_limit: int
    host: PhysMem
    guest: TableMemory


def _mask(*lsbs: int) -> int:
    """Return the mask of the 4-bit ID register fields starting at lsbs."""
    return sum(mask(lsb + 3, lsb) for lsb in set(lsbs))


# ID_AA64MMFR1_EL1 fields KVM keeps for a guest hypervisor: HCX, PAN, LO, HPDS, VH,
# VMIDBits.
_NV_MMFR1_KEPT = _mask(40, 20, 16, 12, 8, 4)
# ID_AA64MMFR2_EL1 fields KVM hides: BBM, TTL (then forced to 1), bits [47:44], ST, CCIDX,
# VARange.
_NV_MMFR2_HIDDEN = _mask(52, 48, 44, 28, 20, 16)
# ID_AA64MMFR0_EL1 fields KVM hides (6.12.118): ECV [63:60], ExS [47:44], TGran4_2 [43:40],
# TGran64_2 [39:36], TGran16_2 [35:32], SNSMEM [15:12]. (The current tree keeps ECV up to
# IMP; the model decodes no ECV.)
_NV_MMFR0_HIDDEN = _mask(60, 44, 40, 36, 32, 12)


# ID_AA64MMFR3_EL1 fields a guest sees: TCRX [3:0], S1PIE [11:8], S1POE [19:16].
_MMFR3_KEPT = _mask(0, 8, 16)


def limit_nv_id_regs(regs: IdRegs) -> IdRegs:
    """Return the ID registers a guest hypervisor sees, from the VM's.

    KVM hides what its emulated EL2 does not support (4K host pages):
    - ID_AA64MMFR0_EL1: ECV, ExS and Secure memory hidden, the stage-2
      granule fields TGran{4,16,64}_2 = 0b0010 (supported: a guest stage-2 granule
      smaller than the host's page is impossible, FEAT_GTG), PARange at most 48 bits;
    - ID_AA64MMFR1_EL1: only HCX, PAN, LO, HPDS, VH and VMIDBits kept, so no FEAT_XNX
      and no FEAT_HAFDBS (a series "KVM: arm64: nv: Expose FEAT_HAFDBS" was posted in
      2026; no release modelled here has it);
    - ID_AA64MMFR2_EL1: BBM, ST, CCIDX, VARange and bits [47:44] hidden, TTL forced to
      IMP (KVM's TLBI emulation reads the TTL hint);
    - ID_AA64ISAR0_EL1: TME hidden (range TLBIs kept);
    - ID_AA64ISAR2_EL1 unchanged (FEAT_ATS1A as the VM has it);
    - ID_AA64MMFR3_EL1: TCRX, S1PIE and S1POE as the VM has them, the only fields
      sys_regs.c's __kvm_read_sanitised_id_reg exposes (at.c emulates them for AT).

    Kernel: limit_nv_id_regs (arch/arm64/kvm/nested.c, Linux 6.12.118 as read; the
    current tree's limit_nv_id_reg keeps the same memory-model fields; before 6.11 the
    ID registers it did not name, ID_AA64ISAR2_EL1 among them, were zeroed, and range
    TLBIs were hidden: no release modelled with nested support is that old).
    """
    mmfr0 = regs.ID_AA64MMFR0_EL1 & ~_NV_MMFR0_HIDDEN
    for lsb in (40, 36, 32):
        mmfr0 = set_bits(mmfr0, lsb + 3, lsb, 0b0010)
    mmfr0 = set_bits(mmfr0, 3, 0, min(bits(mmfr0, 3, 0), 0b0101))
    mmfr2 = set_bits(regs.ID_AA64MMFR2_EL1 & ~_NV_MMFR2_HIDDEN, 51, 48, 1)
    isar0 = regs.ID_AA64ISAR0_EL1 & ~_mask(24)
    mmfr1 = regs.ID_AA64MMFR1_EL1 & _NV_MMFR1_KEPT
    mmfr3 = regs.ID_AA64MMFR3_EL1 & _MMFR3_KEPT
    return IdRegs(mmfr0, mmfr1, mmfr2, isar0, regs.ID_AA64ISAR2_EL1, mmfr3)


def nested_features(kvm: Kvm) -> FeatureSet:
    """Return the features a guest hypervisor in kvm sees: its ID registers, limited.

    The VM's ID registers (kvm.id_regs: the host's sanitised values unless userspace
    lowered them) through limit_nv_id_regs, decoded as the VM's own are
    (s2mmu.kvm.cpu.arch_features: FEAT_S2FWB, CTR_EL0.DIC/IDC from the host).
    """
    return arch_features(kvm, limit_nv_id_regs(kvm.id_regs))


# The walker's own view: 48-bit descriptors, no DS, no hardware updates.
WALKER_FS = FeatureSet(frozenset(), pa_bits=48)
WALKER_CHOICES = ImplChoices(reserved_tg_granule=64, contiguous_oa_from_ia=True)

# ps_to_output_size(): PS encodings, 0b110 and the reserved 0b111 read as 48 bits here.
PS_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48}


def vtcr_granule(tg0: int) -> Granule:
    """Return the granule KVM decodes from VTCR_EL2.TG0 (a reserved value is 64KB)."""
    return {0b00: Granule.G4K, 0b10: Granule.G16K}.get(tg0, Granule.G64K)


def kvm_start_level(granule: Granule, sl0: int) -> int:
    """Return the start level KVM derives from SL0 (2 - SL0 for 4KB, 3 - SL0 otherwise)."""
    return (2 if granule is Granule.G4K else 3) - sl0


def first_block_level(granule: Granule) -> int:
    """Return the first level a block descriptor is allowed at (48-bit descriptors)."""
    return 1 if granule is Granule.G4K else 2


def check_base_s2_limits(granule: Granule, level: int, ia_size: int) -> str:
    """Return why KVM refuses this start level for an ia_size-bit IPA, or "".

    Kernel: nested.c check_base_s2_limits (stricter than ASL AArch64.S2InconsistentSL:
    no level-0 start below a 43-bit IPA with 4KB, no level-1 start below 41 with 16KB).
    """
    low = {Granule.G64K: (1, 42), Granule.G16K: (1, 40), Granule.G4K: (0, 42)}[granule]
    if level < 0 or (granule is not Granule.G4K and level == 0):
        return f"start level {level} is not allowed with {granule.value}KB"
    if level == low[0] and ia_size <= low[1]:
        return f"start level {level} needs more than {low[1]} IPA bits with {granule.value}KB"
    start_size = ia_size - ((FINAL_LEVEL - level) * granule.stride + granule.bits)
    if not 1 <= start_size <= granule.stride + 4:
        return f"an IPA of {ia_size} bits cannot start at level {level}"
    return ""


def vtcr_to_walk_params(regs: SysRegs, vm: NestedVm) -> S2TTWParams | NestedWalkError:
    """Read L1's VTCR_EL2, VTTBR_EL2 and SCTLR_EL2.EE as KVM does into walk parameters.

    Kernel: nested.c vtcr_to_walk_info and the input checks of walk_nested_s2_pgd.
    """
    vtcr = VTCR_EL2.decode(regs.VTCR_EL2)
    g = vtcr_granule(vtcr.TG0)
    level, ia_size = kvm_start_level(g, vtcr.SL0), 64 - vtcr.T0SZ
    if not 25 <= ia_size <= 48:
        return NestedWalkError("EFAULT", f"VTCR_EL2.T0SZ={vtcr.T0SZ}: a {ia_size}-bit IPA "
                                         "is outside 25..48")
    why = check_base_s2_limits(g, level, ia_size)
    if why:
        return NestedWalkError("EFAULT", f"VTCR_EL2.SL0={vtcr.SL0}: {why}")
    p = get_s2_ttw_params(replace(SysRegs(), VTCR_EL2=regs.VTCR_EL2, VTTBR_EL2=regs.VTTBR_EL2,
                                  SCTLR_EL2=regs.SCTLR_EL2),
                          WALKER_FS, WALKER_CHOICES, NO_HW_UPDATE)
    ps = min(vm.ipa_limit, PS_BITS.get(vtcr.PS, 48))
    ee = bool(SCTLR_EL2.decode(regs.SCTLR_EL2).EE)
    return replace(p, tgx=g, ps=ps, ds=False, sl2=0, ee=ee)


def walker_env(vm: NestedVm) -> Env:
    """Return the environment the arch walk runs in: guest memory, KVM's walker view."""
    return Env(vm.host, WALKER_FS, WALKER_CHOICES, tables=vm.guest, hw=NO_HW_UPDATE)


def kvm_walk_nested_s2(vm: NestedVm, regs: SysRegs, gipa: int,
                       access: AccessDescriptor | None = None,
                       trace: list[WalkStep] | None = None) -> KvmS2Trans | NestedWalkError:
    """Walk L1's stage 2 for gipa: the output and permissions, the fault, or a refusal.

    regs are L1's virtual EL2 registers. A descriptor read that fails (no memslot) is a
    refusal (-EFAULT), as read_guest_s2_desc's error is in the kernel.
    Kernel: nested.c kvm_walk_nested_s2 / walk_nested_s2_pgd.
    """
    p = vtcr_to_walk_params(regs, vm)
    if isinstance(p, NestedWalkError):
        return p
    env, acc = walker_env(vm), access or acc_gpr(1, False)
    setup = s2_setup(p, env)
    base = setup.base_address()
    if oa_out_of_range(base, p.ps):
        return s2_fault(FaultRecord(Fault.ADDRESS_SIZE, setup.startlevel, acc, reason=(
            f"VTTBR_EL2 base {base:#x} exceeds the {p.ps}-bit output size")), gipa, 0)
    steps: list[WalkStep] = []
    # No IPA size check: the index takes the input bits below the IPA size only.
    got = s2_walk(p, gipa & ((1 << p.iasize()) - 1), acc, env, steps)
    if trace is not None:
        trace.extend(steps)
    desc = steps[-1].raw if steps else 0
    if isinstance(got, FaultRecord):
        if got.statuscode is Fault.SYNC_EXTERNAL_ON_WALK:
            return NestedWalkError("EFAULT", got.reason)
        return s2_fault(got, gipa, desc)
    if not af(got.leaf.raw):
        return s2_fault(FaultRecord(Fault.ACCESS_FLAG, got.level, acc, reason=(
            "L1 stage-2 access flag is 0 (the nested walker never sets it)")), gipa, desc)
    return s2_trans(got, p, env, gipa, vm)


def s2_fault(fault: FaultRecord, gipa: int, desc: int) -> KvmS2Trans:
    """Return the failed translation: the FSC at the fault's level, the descriptor read."""
    record = fault if fault.secondstage else as_stage2(fault, gipa, False)
    return KvmS2Trans(0, 0, False, False, False, False, fault.level, desc, fsc(record), record)


def s2_trans(state: TTWState, p: S2TTWParams, env: Env, gipa: int, vm: NestedVm) -> KvmS2Trans:
    """Return the successful translation of gipa from the leaf."""
    perms = s2_direct_permissions(state, vm.fs.has("FEAT_XNX"), False, False)
    return KvmS2Trans(s2_output(p, env, state, gipa), p.tgx.block_size(state.level),
                      perms.r, perms.w, perms.px, perms.ux, state.level, state.leaf.raw,
                      xnx=vm.fs.has("FEAT_XNX"))
