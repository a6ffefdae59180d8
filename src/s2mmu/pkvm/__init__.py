"""Protected KVM: the deprivileged host, page ownership and the hypercalls that move pages.

Built on the page-table library (s2mmu.pgtable): the host's identity stage 2, the
hypervisor's stage 1 and each guest's stage 2 are KvmPgtables driven by the library's
operations; page states live where the kernel keeps them (host: hyp_page in the
vmemmap plus host stage-2 owner annotations; hypervisor: stage-1 software bits; guest:
stage-2 software bits).

Modules: errno, states, memory, mem_protect, pkvm (VMs and the host's side: the
pkvm_mappings record and pkvm_pgtable_stage2_*), backend (the stage-2 backend a KVM VM
takes under protected KVM: s2mmu.pgtable.backend.Stage2Backend), host_fault (host aborts
and what a host access gets), invariants.
"""
