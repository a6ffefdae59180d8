"""Dump a KVM stage 2 the way debugfs stage2_page_tables does, through the architecture.

``kvm_pgtable_stage2_dump`` points the architecture's table dump (s2mmu.arch.dump) at a
``KvmPgtable``: the VTCR_EL2 and VTTBR_EL2 KVM would program, HCR_EL2.FWB as the
table's MemAttr encoding says, and the features the host capabilities imply. The
software bits get KVM's names here (the architecture leaves them to software).

Kernel: arch/arm64/kvm/ptdump.c (kvm_ptdump_guest_show: a LEAF walk over the whole IPA
space, one "Guest IPA" marker); KVM_PGTABLE_PROT_SW0..SW3 (asm/kvm_pgtable.h);
enum pkvm_page_state and pkvm_getstate (s2mmu.pgtable.page_state, from
arch/arm64/kvm/hyp/include/nvhe/mem_protect.h).
"""

from __future__ import annotations

from s2mmu.arch.config import DEFAULT_CHOICES
from s2mmu.arch.dump import AddrRange, RangePredicate, TableDump, dump_s2
from s2mmu.arch.features import FeatureSet, qemu_7_2_max
from s2mmu.arch.params import S2TTWParams, get_s2_ttw_params
from s2mmu.arch.state import SysRegs
from s2mmu.arch.translate import Env
from s2mmu.pgtable.page_state import PKVM_NOPAGE, pkvm_sw_state
from s2mmu.pgtable.prot import stage2_has_fwb
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.pgtable.vtcr import kvm_get_vttbr

HCR_EL2_VM = 1 << 0
HCR_EL2_FWB = 1 << 46


def kvm_pte_sw_bits_names(sw: int) -> str:
    """Return the KVM_PGTABLE_PROT_SW* bits set in sw (bits [58:55] as a 4-bit value)."""
    return " ".join(f"SW{i}" for i in range(4) if sw >> i & 1)


def kvm_pte_sw_annotation(sw: int, pkvm: bool = False) -> str:
    """Return what KVM means by a leaf's software bits, for a dump line.

    Host KVM sets none (an empty string, or the SW bit names if some are set); pKVM's
    guest and host stage 2 keep the page state in SW1:SW0.
    """
    if pkvm:
        state = pkvm_sw_state(sw)
        # NOPAGE is a meta-state: a PTE that carries its encoding is out of the model
        name = "RESERVED(PKVM_NOPAGE)" if state is PKVM_NOPAGE else state.name
        return name + (" SW2" if sw & 0b100 else "") + (" SW3" if sw & 0b1000 else "")
    return kvm_pte_sw_bits_names(sw)


def kvm_pgtable_stage2_params(pgt: KvmPgtable, fs: FeatureSet) -> S2TTWParams:
    """Return the stage-2 walk parameters of pgt as KVM would program the hardware.

    VTCR_EL2 from the stage-2 MMU, VTTBR_EL2 from the PGD and VMID, HCR_EL2.VM, and
    HCR_EL2.FWB when the table uses the FWB MemAttr encoding (stage2_has_fwb).
    """
    if pgt.pgd is None:
        raise ValueError("kvm_pgtable_stage2_dump: the page table is not initialised (no PGD)")
    mmu = pgt.s2_mmu
    g = pgt.ops.g
    hcr = HCR_EL2_VM | (HCR_EL2_FWB if stage2_has_fwb(pgt) else 0)
    regs = SysRegs(VTCR_EL2=mmu.vtcr, VTTBR_EL2=kvm_get_vttbr(pgt.pgd, mmu.vmid, g),
                   HCR_EL2=hcr | 1 << 31)
    return get_s2_ttw_params(regs, fs, DEFAULT_CHOICES)


def host_features(pgt: KvmPgtable, fs: FeatureSet | None = None) -> FeatureSet:
    """Return the features a dump of pgt decodes with: fs, plus what the host caps imply."""
    fs = fs or qemu_7_2_max()
    caps = pgt.ops.caps
    add = [name for name, has in (("FEAT_S2FWB", caps.stage2_fwb), ("FEAT_XNX", caps.xnx),
                                  ("FEAT_HAFDBS", caps.hw_afdbm)) if has]
    return fs.with_features(*add)


def kvm_pgtable_stage2_dump(pgt: KvmPgtable, rng: AddrRange | None = None,
                            keep: RangePredicate | None = None,
                            fs: FeatureSet | None = None) -> TableDump:
    """Return the whole stage 2 of pgt as merged IPA ranges (s2mmu.arch.dump records).

    rng limits the dump to [start, end); keep (e.g. PermFilter(w=True)) keeps only the
    ranges it accepts. Nothing is written to the tables.

    Kernel: kvm_ptdump_guest_show (debugfs stage2_page_tables).
    """
    fs = host_features(pgt, fs)
    p = kvm_pgtable_stage2_params(pgt, fs)
    return dump_s2(p, Env(pgt.ops.mem, fs), rng, keep)
