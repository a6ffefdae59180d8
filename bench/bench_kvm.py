"""Stage-2 faults handled per second, and a full dirty-logging cycle, printed.

1. faults/s: kvm_handle_guest_abort on translation faults (raw ESR/FAR/HPFAR as hardware
   reports them), 4K pages (no THP) and 2M blocks (THP); then write-permission faults
   that relax a read-only page (the dirty-logging hot path). Each is measured twice in
   the same run: with the page-table library on its plain twins (the default) and on its
   stepped generators (s2mmu.pgtable.steps.generator_path), side by side, in alternating
   rounds; the median round counts.
2. A dirty-logging cycle over one slot (16 GiB by default): populate with 2M blocks,
   enable logging (write-protect, eager split off), write 10% of the pages (each a
   fault), KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG (manual protect), with the time of
   each phase and the peak memory (RSS; --tracemalloc for Python's own count). The
   writes are real guest stores translated by the architectural walker, so each
   stage-2 fault has the FSC and level hardware would report. The written pages are
   the first fraction of an affine permutation of the slot's pages (distinct, spread
   over the slot, generated one at a time so the benchmark holds no list of them).

All times are process time (time.process_time): the machine is shared, and wall time
would count other jobs' share of the CPU.

3. Host-model memory: the bytes the host model (HostMm: VMAs, folios, page tables)
   keeps per mapped 4K page, for 4K folios and for 2M THP folios (tracemalloc, guest
   data excluded: PhysMem stores only what is written).
4. munmap of a mostly-unpopulated VMA (256 GiB and 1 TiB, a few folios touched) under a
   memslot, with the MMU notifier reaching KVM.

    python bench/bench_kvm.py [--gib 16] [--fraction 0.1] [--faults 20000]
                              [--only faults,dirty,memory,munmap] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import tracemalloc

from s2mmu.arch.memory import PhysMem
from s2mmu.arch.state import SysRegs
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
from s2mmu.pgtable.steps import generator_path

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


def guest_write(kvm: Kvm, vcpu: KvmVcpu, ipa: int, counts: dict[str, int],
                regs: SysRegs | None = None) -> None:
    """Write ipa as the guest (MMU off) until it completes, handling each stage-2 fault.

    regs: the vCPU's registers (vcpu_regs(kvm) if not given; they do not change while
    the guest runs).
    """
    regs = regs or vcpu_regs(kvm)
    counts["accesses"] += 1
    for _ in range(4):
        o = guest_access(kvm, regs, ipa, "write")
        if not isinstance(o, Stage2Abort):
            return
        counts["faults"] += 1
        kvm_handle_guest_abort(o.abort, kvm, vcpu)


FIGURES: dict[str, float] = {}
QUIET = False


def say(text: str) -> None:
    """Print a line of the text report (nothing under --json)."""
    if not QUIET:
        print(text)


def rate(label: str, n: int, fn, key: str | None = None) -> float:  # type: ignore[no-untyped-def]
    """Time fn (process time), print n/s under label, record it as FIGURES[key]; return
    seconds."""
    t = time.process_time()
    fn()
    dt = max(time.process_time() - t, 1e-9)
    say(f"  {label:<46} {n:>8} in {dt:7.2f} s = {n / dt:9.0f} /s")
    if key is not None:
        FIGURES[key] = n / dt if n > 1 else dt
    return dt


ROUNDS: dict[str, list[float]] = {}


def bench_faults(n: int, rounds: int = 5) -> None:
    """Fault rates on both paths, in alternating rounds on fresh VMs; the median counts.

    Alternating keeps a change of machine load from favouring one path.
    """
    say("faults handled per second (kvm_handle_guest_abort -> user_mem_abort -> map), "
        f"page-table library on its plain twins and on its stepped generators, median of "
        f"{rounds} alternating rounds (process time)")
    per = max(n // rounds, 1)
    nb = max(per // 16, 1)
    for r in range(rounds):
        for path, generators in (("plain", False), ("generator", True)):
            with generator_path(generators):
                _fault_round(path, per, nb, r)
    for key, values in ROUNDS.items():
        FIGURES[key] = statistics.median(values)
    for kind in ("4k", "thp", "relax_dirty"):
        ratio = FIGURES[f"fault_{kind}_plain_per_s"] / FIGURES[f"fault_{kind}_generator_per_s"]
        say(f"  {kind} faults: plain {FIGURES[f'fault_{kind}_plain_per_s']:,.0f}/s, generator "
            f"{FIGURES[f'fault_{kind}_generator_per_s']:,.0f}/s: plain twins {ratio:.2f}x")


def _fault_round(path: str, n: int, nb: int, r: int) -> None:
    """One round of the three fault kinds on one path; keep each kind's rate."""
    def best(kind: str, label: str, count: int, fn) -> None:  # type: ignore[no-untyped-def]
        secs = rate(f"{label} ({path}, round {r + 1})", count, fn)
        ROUNDS.setdefault(f"fault_{kind}_{path}_per_s", []).append(count / secs)

    kvm, vcpu = vm(n * 4096, thp=False)
    best("4k", "translation fault, 4K page", n, lambda: [
        kvm_handle_guest_abort(abort(IPA + i * 4096, TRANS_L3, True), kvm, vcpu)
        for i in range(n)])
    kvm2, vcpu2 = vm(nb << 21, thp=True)
    best("thp", "translation fault, 2M THP block", nb, lambda: [
        kvm_handle_guest_abort(abort(IPA + (i << 21), TRANS_L3, True), kvm2, vcpu2)
        for i in range(nb)])
    set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES)
    best("relax_dirty", "write permission fault, relax + dirty", n, lambda: [
        kvm_handle_guest_abort(abort(IPA + i * 4096, PERM_L3, True), kvm, vcpu)
        for i in range(n)])


def written_pages(npages: int, count: int):  # type: ignore[no-untyped-def]
    """Yield count distinct pages of [0, npages): i * STRIDE + 5 mod npages, i = 0, 1, ...

    STRIDE is odd and npages a power of two, so the map is a permutation: no page twice,
    and no list or set of them is held (a random.sample of 419,430 pages of 4 Mi holds
    about 40 MiB while it draws).
    """
    assert npages & (npages - 1) == 0, "the slot's page count must be a power of two"
    stride = 0x9E3779B1 % npages | 1
    for i in range(count):
        yield (i * stride + 5) % npages


def rss_mib() -> float:
    """Return the process's resident set now, in MiB (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_dirty_cycle(gib: int, fraction: float, trace_memory: bool) -> None:
    size = gib << 30
    npages = size >> 12
    say(f"dirty-logging cycle over a {gib} GiB slot ({npages} pages), "
        f"{fraction:.0%} written, manual protect, no eager split (process time)")
    if trace_memory:
        tracemalloc.start()
    kvm, vcpu = vm(size, thp=True)
    kvm.manual_dirty_log_protect = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
    blocks = size >> 21
    total = rate("populate: translation faults, 2M blocks", blocks, lambda: [
        kvm_handle_guest_abort(abort(IPA + (i << 21), TRANS_L3, False), kvm, vcpu)
        for i in range(blocks)], "dirty_populate_per_s")
    total += rate("enable logging: write-protect the slot", 1,
                  lambda: set_slot_flags(kvm, 0, KVM_MEM_LOG_DIRTY_PAGES),
                  "dirty_enable_logging_s")
    written = int(npages * fraction)
    counts = {"accesses": 0, "faults": 0}
    regs = vcpu_regs(kvm)

    def writes() -> None:
        for p in written_pages(npages, written):
            guest_write(kvm, vcpu, IPA + p * 4096, counts, regs)

    total += rate("guest writes (real stage-2 walks; faults as they come)", written, writes,
                  "dirty_guest_writes_per_s")
    say(f"  ... {counts['faults']} stage-2 faults for {counts['accesses']} writes; "
        f"RSS now {rss_mib():.0f} MiB")
    got: list[bytes] = []
    total += rate("KVM_GET_DIRTY_LOG", 1, lambda: got.append(kvm_get_dirty_log_protect(kvm, 0)),
                  "dirty_get_log_s")
    dirty = sum(bin(b).count("1") for b in got[0])
    total += rate("KVM_CLEAR_DIRTY_LOG (all, write-protect again)", 1,
                  lambda: kvm_clear_dirty_log_protect(kvm, 0, 0, npages, got[0]),
                  "dirty_clear_log_s")
    FIGURES["dirty_cycle_s"] = total
    say(f"  whole cycle: {total:.1f} s of process time")
    say(f"  dirty pages reported: {dirty} (expected {written})")
    if trace_memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        FIGURES["dirty_peak_traced_mib"] = peak / 2**20
        say(f"  peak Python memory (tracemalloc): {peak / 2**20:.0f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    FIGURES["dirty_peak_rss_mib"] = rss / 1024
    say(f"  peak RSS of the process: {rss / 1024:.0f} MiB")


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
    say("host-model memory per mapped 4K page (tracemalloc, HostMm bookkeeping only)")
    for key, label, size, thp in (("host_4k", "4K folios, 1 GiB populated", 1 << 30, False),
                                  ("host_2m", "2M THP folios, 16 GiB populated", 16 << 30,
                                   True)):
        t = time.process_time()
        b = FIGURES[f"{key}_bytes_per_page"] = host_bytes_per_page(size, thp)
        say(f"  {label:<46} {b:8.2f} B/page ({time.process_time() - t:.1f} s)")
    say("whole VM per mapped 4K page (host model + stage-2 tables, through guest faults)")
    for key, label, size, thp in (("vm_4k", "4K folios and pages, 64 MiB faulted", 64 << 20,
                                   False),
                                  ("vm_2m", "2M THP folios and blocks, 1 GiB faulted", 1 << 30,
                                   True)):
        t = time.process_time()
        b = FIGURES[f"{key}_bytes_per_page"] = kvm_bytes_per_page(size, thp)
        say(f"  {label:<46} {b:8.2f} B/page ({time.process_time() - t:.1f} s)")


def bench_munmap() -> None:
    say("munmap of a mostly-unpopulated anonymous THP VMA under a memslot")
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
             lambda h=host, n=size: h.munmap(HVA, n), f"munmap_{gib}g_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=16)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--faults", type=int, default=20000)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="Measure peak Python memory exactly (about 3x slower).")
    ap.add_argument("--only", default="faults,dirty,memory,munmap",
                    help="Comma-separated parts to run.")
    ap.add_argument("--json", action="store_true", help="print one JSON object of figures")
    args = ap.parse_args()
    global QUIET
    QUIET = args.json
    parts = set(args.only.split(","))
    FIGURES["load_average_1min_before"] = os.getloadavg()[0]
    say(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    if "faults" in parts:
        bench_faults(args.faults)
    if "dirty" in parts:
        bench_dirty_cycle(args.gib, args.fraction, args.tracemalloc)
    if "memory" in parts:
        bench_memory()
    if "munmap" in parts:
        bench_munmap()
    FIGURES["load_average_1min_after"] = os.getloadavg()[0]
    say(f"load average (1 min): {os.getloadavg()[0]:.2f}")
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in sorted(FIGURES.items())}))


if __name__ == "__main__":
    main()
