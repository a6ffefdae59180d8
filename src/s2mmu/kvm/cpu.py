"""The CPU running a guest access: the architectural two-stage translation, and the abort
that reaches EL2 when stage 2 faults.

The guest's stage 1 lives in guest memory (built through the memslots, as a VMM loads a
guest image); stage 2 is the table KVM built. s2mmu.arch translates the access with both,
so a stage-2 fault on the guest's own table walk (S1PTW) is a real architectural outcome,
and the ESR/FAR/HPFAR handed to kvm_handle_guest_abort() are the architectural encodings.

ASL: AArch64.FullTranslate, AArch64.FaultSyndrome (via s2mmu.arch).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from s2mmu.arch.access import AccessDescriptor, AccessType, acc_gpr, acc_ifetch, access_pieces
from s2mmu.arch.builder import BumpAllocator, TableBuilder, s1_attrs
from s2mmu.arch.faults import FaultRecord, esr_abort, hpfar
from s2mmu.arch.features import FeatureSet, IdRegs, feature_set_of
from s2mmu.arch.params import Granule
from s2mmu.arch.registers import TCR_EL1
from s2mmu.arch.state import Regime, SysRegs
from s2mmu.arch.translate import AddressDescriptor, Env, full_translate
from s2mmu.kvm.abort import GuestAbort
from s2mmu.kvm.host import PAGE_SHIFT
from s2mmu.kvm.memslot import gfn_to_hva_memslot, gfn_to_memslot
from s2mmu.kvm.vm import Kvm
from s2mmu.pgtable.vtcr import kvm_get_vttbr

HCR_EL2_VM = 1 << 0
HCR_EL2_RW = 1 << 31
SCTLR_EL1_M = 1 << 0
MAIR_GUEST = 0x00_44_04_FF
"""Attr0 Normal WB, Attr1 Device-nGnRE, Attr2 Normal NC."""


def arch_features(kvm: Kvm, regs: IdRegs | None = None) -> FeatureSet:
    """Return the architecture features the guest's accesses are translated with.

    The VM's ID registers (kvm.id_regs, decoded by feature_set_of) give the
    features, PA size and granules, so a VM whose ID_AA64MMFR1_EL1.PAN >= 2 has
    FEAT_PAN2 (AT S1E1RP/WP defined). Stage 2 is KVM's, on the host's hardware: its
    FEAT_S2FWB and CTR_EL0.DIC/IDC come from the host, whatever the VM is told. regs:
    other ID register values to decode in place of kvm.id_regs (a guest hypervisor's,
    limited by limit_nv_id_regs).
    """
    f = kvm.host.features
    return _arch_features(kvm.id_regs if regs is None else regs, f.fwb, f.dic, f.idc)


@lru_cache(maxsize=64)
def _arch_features(id_regs: IdRegs, fwb: bool, dic: bool, idc: bool) -> FeatureSet:
    """arch_features on its inputs (frozen values), decoded once per distinct input."""
    fs = feature_set_of(id_regs)
    host_only = {"FEAT_S2FWB": fwb, "FEAT_DIC": dic, "FEAT_IDC": idc}
    return fs.with_features(*(n for n, on in host_only.items() if on),
                            remove=tuple(n for n, on in host_only.items() if not on))


class GuestMemView:
    """Guest-physical memory as the VMM sees it: IPA -> memslot -> HVA -> host page."""

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm

    def _pa(self, ipa: int) -> int:
        slot = gfn_to_memslot(self.kvm.slots(), ipa >> PAGE_SHIFT)
        if slot is None:
            raise ValueError(f"guest stage-1 table at IPA {ipa:#x} is outside every memslot")
        hva = gfn_to_hva_memslot(slot, ipa >> PAGE_SHIFT) + (ipa & 0xFFF)
        return self.kvm.host.populate(hva)

    def read64(self, addr: int, big_endian: bool = False) -> int:
        return self.kvm.host.mem.read64(self._pa(addr), big_endian)

    def write64(self, addr: int, value: int, big_endian: bool = False) -> None:
        self.kvm.host.mem.write64(self._pa(addr), value, big_endian)


@dataclass(frozen=True)
class S1Map:
    """One guest stage-1 mapping: VA -> IPA, with the guest's own permissions."""

    va: int
    ipa: int
    size: int
    ro: bool = False
    xn: bool = False
    device: bool = False


def build_guest_stage1(kvm: Kvm, tables_ipa: int, maps: list[S1Map]) -> SysRegs:
    """Write a 4K, 39-bit-VA TTBR0 stage 1 into guest memory; return the vCPU's EL1 registers.

    Leaves are 2M blocks when size and alignment allow, else 4K pages.
    """
    view = GuestMemView(kvm)
    b = TableBuilder(view, BumpAllocator(tables_ipa, tables_ipa + (1 << 20)), Granule.G4K,
                     iasize=39, startlevel=1)
    for m in maps:
        attrs = s1_attrs(attrindx=1 if m.device else 0, ro=m.ro, pxn=m.xn, uxn=True)
        level = 2 if m.size % (1 << 21) == 0 and m.va % (1 << 21) == 0 and m.ipa % (1 << 21) == 0 \
            else None
        b.map(m.va, m.ipa, m.size, attrs, level=level)
    tcr = TCR_EL1.encode(T0SZ=25, EPD1=1, TG0=0, IRGN0=1, ORGN0=1, SH0=3, IPS=5, HA=1)
    return vcpu_regs(kvm, SysRegs(SCTLR_EL1=0x30D00800 | SCTLR_EL1_M, TCR_EL1=tcr,
                                  MAIR_EL1=MAIR_GUEST, TTBR0_EL1=b.root))


def vcpu_regs(kvm: Kvm, el1: SysRegs | None = None) -> SysRegs:
    """Return the registers a vCPU runs with: its EL1 state (MMU off if none) over KVM's stage 2."""
    el1 = el1 or SysRegs(SCTLR_EL1=0x30D00800)
    vttbr = kvm_get_vttbr(kvm.pgt.pgd or 0, kvm.pgt.s2_mmu.vmid, kvm.env.g)
    return replace(el1, HCR_EL2=HCR_EL2_VM | HCR_EL2_RW, VTCR_EL2=kvm.vtcr, VTTBR_EL2=vttbr)


@dataclass(frozen=True)
class Completed:
    """The access translated: the PA and attributes it used."""

    out: AddressDescriptor


@dataclass(frozen=True)
class GuestFault:
    """A stage-1 fault: the guest's own exception, KVM is not involved."""

    fault: FaultRecord


@dataclass(frozen=True)
class Stage2Abort:
    """A stage-2 fault taken to EL2: the registers as reported, and the fault behind them."""

    abort: GuestAbort
    fault: FaultRecord


AccessOutcome = Completed | GuestFault | Stage2Abort


def access_descriptor(kind: str) -> AccessDescriptor:
    """Return the EL1 access for 'read', 'write' or 'exec'."""
    if kind == "exec":
        return acc_ifetch(1)
    return acc_gpr(1, kind == "write")


GUEST_PAGE_SIZE = 1 << 12
"""The guest's translation granule (build_guest_stage1 builds 4K tables; with the MMU
off the access is split at the same 4K boundaries, the smallest granule)."""


def guest_access(kvm: Kvm, regs: SysRegs, va: int, kind: str,
                 syndrome: tuple[int, int] | None = None, cm: bool = False,
                 size: int = 1) -> AccessOutcome:
    """Translate one guest EL1 access of size bytes through both stages, as the CPU would.

    An access that crosses a page boundary translates page by page (s2mmu.arch.access
    .access_pieces): the first piece that faults ends it, and the fault reports that
    piece's first byte as FAR (the next page's first byte when only the second page
    faults); Completed gives the first piece's output.

    syndrome: (size in bytes, register) for a load/store that reports ISV=1; cm: the
    access is a cache maintenance instruction (ESR.CM, WnR=1).

    ASL: Mem (the unaligned-access loop), AArch64.FullTranslate, AArch64.FaultSyndrome.
    """
    access = access_descriptor(kind)
    if cm:
        access = AccessDescriptor(AccessType.DC, 1, True)
    env = Env(kvm.host.mem, arch_features(kvm))
    first: AddressDescriptor | None = None
    for addr, _ in access_pieces(va, size, GUEST_PAGE_SIZE):
        out = full_translate(regs, Regime.EL10, addr, access, env)
        if isinstance(out, AddressDescriptor):
            first = first or out
            continue
        if not out.secondstage:
            return GuestFault(out)
        esr = esr_abort(out, same_el=False)
        if syndrome is not None and not out.s2fs1walk and kind != "exec":
            sas, srt = syndrome
            esr |= 1 << 24 | (sas.bit_length() - 1) << 22 | srt << 16
        return Stage2Abort(GuestAbort(esr, addr, hpfar(out.ipaddress or 0)), out)
    assert first is not None
    return Completed(first)
