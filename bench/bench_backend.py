"""Guest accesses per second through the direct and the pKVM stage-2 backend.

The same seeded sequence of guest reads, writes and fetches (MMU off) over a 64M THP
slot, with a dirty-logging round every 500 accesses, through a VM whose stage 2 is the
page-table library (plain KVM) and one whose stage 2 is built by EL2 through pKVM's
hypercalls (non-protected), then a protected VM (pages donated one by one).
Usage: python3 bench/bench_backend.py [accesses]
"""

from __future__ import annotations

import random
import sys
import time

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.cpu import Completed, guest_access, vcpu_regs
from s2mmu.kvm.fault import kvm_handle_guest_abort
from s2mmu.kvm.host import HOST_RAM_BASE, HostFeatures, HostMm, Vma, VmaKind
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import (
    Kvm,
    kvm_create_vm,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
    set_slot_flags,
)
from s2mmu.pkvm.backend import pkvm_backend
from s2mmu.pkvm.mem_protect import new_pkvm
from s2mmu.pkvm.memory import MemblockRegion

GPA, HVA, SLOT = 0x4000_0000, 0x7F00_0000_0000, 64 << 20


def build(mode: str) -> Kvm:
    host = HostMm(PhysMem(), HostFeatures())
    if mode == "direct":
        kvm = kvm_create_vm(host, 40)
    else:
        hyp = new_pkvm(mem=host.mem, caps=host.features.kvm_caps(),
                       host_ram=MemblockRegion(HOST_RAM_BASE, 2 * SLOT))
        protected = mode == "pkvm-protected"
        kvm = kvm_create_vm(host, 40, env=hyp.env, backend=pkvm_backend(hyp, 1, protected),
                            protected=protected)
    host.mmap(Vma(HVA, HVA + SLOT, VmaKind.ANON, thp=True))
    kvm_set_memory_region(kvm, 0, 0, GPA, SLOT, HVA)
    kvm_vm_ioctl_create_vcpu(kvm)
    return kvm


def run(mode: str, n: int) -> tuple[int, float]:
    kvm, rng = build(mode), random.Random(1)
    vcpu, regs, faults = kvm.vcpus[0], vcpu_regs(kvm), 0
    start = time.perf_counter()
    for i in range(n):
        if mode != "pkvm-protected" and i % 500 == 499:
            set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES if i % 1000 == 499 else 0)
        ipa = GPA + rng.randrange(SLOT // 0x1000) * 0x1000
        kind = rng.choice(["read", "write", "exec"])
        for _ in range(4):
            o = guest_access(kvm, regs, ipa, kind)
            if isinstance(o, Completed):
                break
            kvm_handle_guest_abort(o.abort, kvm, vcpu)
            faults += 1
    return faults, time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    for mode in ("direct", "pkvm-shared", "pkvm-protected"):
        faults, secs = run(mode, n)
        print(f"{mode:15} {n} accesses ({faults} faults handled) in {secs:.2f} s: "
              f"{n / secs:,.0f} accesses/s")


if __name__ == "__main__":
    main()
