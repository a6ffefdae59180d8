"""Stage-2 faults handled per second, and a full dirty-logging cycle, printed.

1. faults/s: kvm_handle_guest_abort on translation faults (raw ESR/FAR/HPFAR as hardware
   reports them), 4K pages (no THP) and 2M blocks (THP); then write-permission faults
   that relax a read-only page (the dirty-logging hot path).
2. A dirty-logging cycle over one slot (16 GiB by default): populate with 2M blocks,
   enable logging (write-protect, eager split off), write 10% of the pages (each a
   fault), KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG (manual protect), with the time of
   each phase and the peak memory (RSS; --tracemalloc for Python's own count). The
   writes are real guest stores translated by the architectural walker, so each
   stage-2 fault has the FSC and level hardware would report.

3. Host-model memory: the bytes the host model (HostMm: VMAs, folios, page tables)
   keeps per mapped 4K page, for 4K folios and for 2M THP folios (tracemalloc, guest
   data excluded: PhysMem stores only what is written).
4. munmap of a mostly-unpopulated VMA (256 GiB and 1 TiB, a few folios touched) under a
   memslot, with the MMU notifier reaching KVM.

    python bench/bench_kvm.py [--gib 16] [--fraction 0.1] [--faults 20000]
                              [--only faults,dirty,memory,munmap]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import tracemalloc

from s2mmu.arch.memory import PhysMem
from s2mmu.kvm.abort import GuestAbort
from s2mmu.kvm.cpu import Stage2Abort, guest_access, vcpu_regs
from s2mmu.kvm.dirty import kvm_clear_dirty_log_protect, kvm_get_dirty_log_protect
from s2mmu.kvm.fault import kvm_handle_guest_abort
from s2mmu.kvm.host import HostFeatures, HostMm, Vma, VmaKind
from s2mmu.kvm.memslot import KVM_MEM_LOG_DIRTY_PAGES
from s2mmu.kvm.vm import (
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    Kvm,
    KvmVcpu,
    kvm_create_vm,
    kvm_set_memory_region,
    kvm_vm_ioctl_create_vcpu,
    set_slot_flags,
)

HVA, IPA = 0x7F00_0000_0000, 0x40_0000_0000
DABT_LOW = 0x24 << 26 | 1 << 25
TRANS_L3, PERM_L3, WNR = 0x07, 0x0F, 1 << 6


def abort(ipa: int, fsc: int, write: bool) -> GuestAbort:
    """Return the abort hardware reports for ipa."""
    return GuestAbort(DABT_LOW | fsc | (WNR if write else 0), ipa, (ipa >> 12) << 4)


def vm(size: int, thp: bool) -> tuple[Kvm, KvmVcpu]:
    """Return a 44-bit-IPA VM on an FWB+DIC host with one slot of size bytes."""
    host = HostMm(PhysMem(), HostFeatures(fwb=True, dic=True, idc=True, tlb_range=True))
    kvm = kvm_create_vm(host, 44)
    kvm.env.events.keep = False
    host.mmap(Vma(HVA, HVA + size, VmaKind.ANON, thp=thp))
    kvm_set_memory_region(kvm, 0, 0, IPA, size, HVA)
    return kvm, kvm_vm_ioctl_create_vcpu(kvm)


def guest_write(kvm: Kvm, vcpu: KvmVcpu, ipa: int, counts: dict[str, int]) -> None:
    """Write ipa as the guest (MMU off) until it completes, handling each stage-2 fault."""
    regs = vcpu_regs(kvm)
    counts["accesses"] += 1
    for _ in range(4):
        o = guest_access(kvm, regs, ipa, "write")
        if not isinstance(o, Stage2Abort):
            return
        counts["faults"] += 1
        kvm_handle_guest_abort(o.abort, kvm, vcpu)


def rate(label: str, n: int, fn) -> None:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    print(f"  {label:<46} {n:>8} in {dt:7.2f} s = {n / dt:9.0f} /s")


def bench_faults(n: int) -> None:
    print("faults handled per second (kvm_handle_guest_abort -> user_mem_abort -> map)")
    kvm, vcpu = vm(n * 4096, thp=False)
    rate("translation fault, 4K page", n, lambda: [
        kvm_handle_guest_abort(abort(IPA + i * 4096, TRANS_L3, True), kvm, vcpu)
        for i in range(n)])
    nb = max(n // 16, 1)
    kvm2, vcpu2 = vm(nb << 21, thp=True)
    rate("translation fault, 2M THP block", nb, lambda: [
        kvm_handle_guest_abort(abort(IPA + (i << 21), TRANS_L3, True), kvm2, vcpu2)
        for i in range(nb)])
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    rate("write permission fault, relax_perms + dirty", n, lambda: [
        kvm_handle_guest_abort(abort(IPA + i * 4096, PERM_L3, True), kvm, vcpu)
        for i in range(n)])


def bench_dirty_cycle(gib: int, fraction: float, trace_memory: bool) -> None:
    size = gib << 30
    npages = size >> 12
    print(f"dirty-logging cycle over a {gib} GiB slot ({npages} pages), "
          f"{fraction:.0%} written, manual protect, no eager split")
    if trace_memory:
        tracemalloc.start()
    kvm, vcpu = vm(size, thp=True)
    kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    blocks = size >> 21
    rate("populate: translation faults, 2M blocks", blocks, lambda: [
        kvm_handle_guest_abort(abort(IPA + (i << 21), TRANS_L3, False), kvm, vcpu)
        for i in range(blocks)])
    rate("enable logging: write-protect the slot", 1,
         lambda: set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES))
    pages = random.Random(5).sample(range(npages), int(npages * fraction))
    counts = {"accesses": 0, "faults": 0}
    rate("guest writes (real stage-2 walks; faults as they come)", len(pages),
         lambda: [guest_write(kvm, vcpu, IPA + p * 4096, counts) for p in pages])
    print(f"  ... {counts['faults']} stage-2 faults for {counts['accesses']} writes")
    got: list[bytes] = []
    rate("KVM_GET_DIRTY_LOG", 1, lambda: got.append(kvm_get_dirty_log_protect(kvm, 0)))
    dirty = sum(bin(b).count("1") for b in got[0])
    rate("KVM_CLEAR_DIRTY_LOG (all, write-protect again)", 1,
         lambda: kvm_clear_dirty_log_protect(kvm, 0, 0, npages, got[0]))
    print(f"  dirty pages reported: {dirty} (expected {len(pages)})")
    if trace_memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"  peak Python memory (tracemalloc): {peak / 2**20:.0f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"  peak RSS of the process: {rss / 1024:.0f} MiB")


def host_bytes_per_page(size: int, thp: bool) -> float:
    """Return the host model's traced bytes per 4K page after populating [HVA, HVA+size)."""
    host = HostMm(PhysMem(), HostFeatures())
    host.mmap(Vma(HVA, HVA + size, VmaKind.ANON, thp=thp))
    step = (2 << 20) if thp else 4096
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for hva in range(HVA, HVA + size, step):
        host.populate(hva)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (after - before) / (size >> 12)


def kvm_bytes_per_page(size: int, thp: bool) -> float:
    """Return the traced bytes per 4K page of host model + stage 2 after faulting size in."""
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    kvm, vcpu = vm(size, thp)
    step = (2 << 20) if thp else 4096
    for off in range(0, size, step):
        kvm_handle_guest_abort(abort(IPA + off, TRANS_L3, True), kvm, vcpu)
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (after - before) / (size >> 12)


def bench_memory() -> None:
    print("host-model memory per mapped 4K page (tracemalloc, HostMm bookkeeping only)")
    for label, size, thp in (("4K folios, 1 GiB populated", 1 << 30, False),
                             ("2M THP folios, 16 GiB populated", 16 << 30, True)):
        t = time.perf_counter()
        b = host_bytes_per_page(size, thp)
        print(f"  {label:<46} {b:8.2f} B/page ({time.perf_counter() - t:.1f} s)")
    print("whole VM per mapped 4K page (host model + stage-2 tables, through guest faults)")
    for label, size, thp in (("4K folios and pages, 64 MiB faulted", 64 << 20, False),
                             ("2M THP folios and blocks, 1 GiB faulted", 1 << 30, True)):
        t = time.perf_counter()
        b = kvm_bytes_per_page(size, thp)
        print(f"  {label:<46} {b:8.2f} B/page ({time.perf_counter() - t:.1f} s)")


def bench_munmap() -> None:
    print("munmap of a mostly-unpopulated anonymous THP VMA under a memslot")
    for gib in (256, 1024):
        size = gib << 30
        host = HostMm(PhysMem(), HostFeatures(fwb=True, dic=True))
        kvm = kvm_create_vm(host, 44)
        kvm.env.events.keep = False
        vcpu = kvm_vm_ioctl_create_vcpu(kvm)
        host.mmap(Vma(HVA, HVA + size, VmaKind.ANON, thp=True))
        kvm_set_memory_region(kvm, 0, 0, IPA, size, HVA)
        for i in range(16):  # a few 2M folios scattered over the VMA, mapped at stage 2
            kvm_handle_guest_abort(abort(IPA + i * (size // 16), TRANS_L3, True), kvm, vcpu)
        rate(f"munmap {gib} GiB (16 folios populated)", 1,
             lambda h=host, n=size: h.munmap(HVA, n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=16)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--faults", type=int, default=20000)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="Measure peak Python memory exactly (about 3x slower).")
    ap.add_argument("--only", default="faults,dirty,memory,munmap",
                    help="Comma-separated parts to run.")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    if "faults" in parts:
        bench_faults(args.faults)
    if "dirty" in parts:
        bench_dirty_cycle(args.gib, args.fraction, args.tracemalloc)
    if "memory" in parts:
        bench_memory()
    if "munmap" in parts:
        bench_munmap()


if __name__ == "__main__":
    main()
