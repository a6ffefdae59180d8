"""The host capabilities that KVM's page-table code reads from global state.

pgtable.c asks ``cpus_have_final_cap()`` and ``system_supports_*()``; the model takes
the answers as one frozen record injected through the mm_ops, never from a global.

Kernel: stage2_has_fwb, stage2_set_xn_attr, kvm_tlb_flush_vmid_range,
stage2_unmap_defer_tlb_flush, hyp_set_prot_attr (arch/arm64/kvm/hyp/pgtable.c);
KVM_PTE_LEAF_ATTR_LO_S1_AP_RO/RW (asm/kvm_pgtable.h); kvm_get_vtcr.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KvmCaps:
    """What the host CPUs support, as pgtable.c sees it.

    stage2_fwb: ARM64_HAS_STAGE2_FWB (FEAT_S2FWB): stage-2 MemAttr uses the FWB encoding.
    xnx: ARM64_HAS_XNX (FEAT_XNX): stage-2 XN[1:0] may differ for EL0 and EL1.
    tlb_range: system_supports_tlb_range() (FEAT_TLBIRANGE): range TLBIs instead of a
        whole-VMID flush, and deferred TLBIs in unmap when FWB is also present.
    hvhe: ARM64_KVM_HVHE: the hypervisor runs with HCR_EL2.E2H=1, which changes the
        stage-1 AP encoding used for hyp mappings.
    bti_kernel: system_supports_bti_kernel(): executable hyp mappings get GP.
    hw_afdbm: CONFIG_ARM64_HW_AFDBM without the AC03_CPU_38 erratum: VTCR_EL2.HA is set.
    dic: ARM64_HAS_CACHE_DIC (CTR_EL0.DIC): instruction-cache invalidation to the PoU is
        not needed; icache_inval_pou is only an ISB.
    """

    stage2_fwb: bool = False
    xnx: bool = False
    tlb_range: bool = False
    hvhe: bool = False
    bti_kernel: bool = False
    hw_afdbm: bool = True
    dic: bool = False
