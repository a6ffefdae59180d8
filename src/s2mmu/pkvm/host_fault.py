"""Host aborts at EL2, and what a host kernel access gets for memory it gave away.

handle_host_mem_abort maps what the host may touch (host_stage2_idmap) and never maps a
page the host does not own: host_stage2_adjust_range answers -EPERM for an annotated
entry. What the host then sees is the hypervisor's policy, an input here (seed 002):

- BUG: mainline as read panics the hypervisor (BUG_ON(ret && ret != -EAGAIN)).
- INJECT_DATA_ABORT: inject a data abort the host kernel handles like any kernel
  translation fault (pKVM per the seed: "pKVM injects a data abort back into the
  kernel in case of a stage-2 fault, so the EXTABLE trick in load_unaligned_zeropad()
  should work").
- INJECT_SEA: inject a synchronous external abort (Gunyah per the seed): the host
  kernel's SEA handling does not consult the exception table, so a kernel access dies.

A host access has a size and may cross a page boundary: it is one access, and when its
second page faults, load_unaligned_zeropad()'s exception-table fixup returns the bytes
of the first page and zeros for the rest. The host's direct map can have pages
removed (set_direct_map_invalid_noflush), so that a kernel access to a donated page
faults at stage 1 and never reaches EL2.

Kernel: handle_host_mem_abort, host_stage2_idmap (nvhe/mem_protect.c); the host-side
names load_unaligned_zeropad, fixup_exception, set_direct_map_invalid_noflush,
set_direct_map_default_noflush are cited from the seed and by name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from s2mmu.arch.access import access_pieces
from s2mmu.pgtable.errno import EAGAIN, EPERM
from s2mmu.pgtable.pte import kvm_pte_valid
from s2mmu.pgtable.walk import kvm_pgtable_get_leaf
from s2mmu.pkvm.errno import errname
from s2mmu.pkvm.mem_protect import Pkvm, host_stage2_idmap

PAGE_OFFSET = 0xFFFF_0000_0000_0000
"""Where the host kernel's linear map puts PA 0 (the model's; the host's VA layout)."""


class HostFaultPolicy(enum.Enum):
    """What the hypervisor does when the host touches a page it does not own."""

    BUG = "the hypervisor panics (BUG_ON in handle_host_mem_abort)"
    INJECT_DATA_ABORT = "inject a data abort the host can fix up (pKVM)"
    INJECT_SEA = "inject a synchronous external abort (Gunyah)"


@dataclass(frozen=True)
class HostMapped:
    """The hypervisor identity-mapped the block holding the address; the host retries."""

    addr: int

    def __str__(self) -> str:
        return f"mapped the block holding {self.addr:#x}"


@dataclass(frozen=True)
class HostRetry:
    """-EAGAIN: the address was mapped meanwhile (another CPU); the host retries."""

    addr: int

    def __str__(self) -> str:
        return f"-EAGAIN: {self.addr:#x} already mapped, retry"


@dataclass(frozen=True)
class InjectedDataAbort:
    """A data abort injected into the host at addr (nothing mapped)."""

    addr: int

    def __str__(self) -> str:
        return f"data abort injected at {self.addr:#x}"


@dataclass(frozen=True)
class InjectedSea:
    """A synchronous external abort injected into the host at addr (nothing mapped)."""

    addr: int

    def __str__(self) -> str:
        return f"SEA injected at {self.addr:#x}"


@dataclass(frozen=True)
class HypPanic:
    """The hypervisor stopped: BUG_ON with the result of host_stage2_idmap."""

    addr: int
    ret: int

    def __str__(self) -> str:
        return f"hyp BUG_ON: host_stage2_idmap({self.addr:#x}) = {errname(self.ret)}"


HostAbortOutcome = HostMapped | HostRetry | InjectedDataAbort | InjectedSea | HypPanic


def handle_host_mem_abort(pkvm: Pkvm, addr: int, policy: HostFaultPolicy) -> HostAbortOutcome:
    """Handle a host stage-2 fault at physical address addr.

    Kernel: handle_host_mem_abort (the injection branches are the policies above).
    """
    ret = host_stage2_idmap(pkvm, addr)
    if ret == 0:
        return HostMapped(addr)
    if ret == -EAGAIN:
        return HostRetry(addr)
    if ret == -EPERM and policy is HostFaultPolicy.INJECT_DATA_ABORT:
        return InjectedDataAbort(addr)
    if ret == -EPERM and policy is HostFaultPolicy.INJECT_SEA:
        return InjectedSea(addr)
    return HypPanic(addr, ret)


class DirectMap:
    """The host kernel's linear map: which pages are currently unmapped from it."""

    def __init__(self) -> None:
        self.invalid: set[int] = set()

    def set_direct_map_invalid_noflush(self, pfn: int) -> None:
        """Remove page pfn from the linear map."""
        self.invalid.add(pfn)

    def set_direct_map_default_noflush(self, pfn: int) -> None:
        """Put page pfn back in the linear map."""
        self.invalid.discard(pfn)


class Fixup(enum.Enum):
    """The exception-table entry covering the access instruction, if any."""

    NONE = "no fixup: a fault is an Oops"
    ZEROPAD = "load_unaligned_zeropad: zeros for bytes past a faulting page boundary"


@dataclass(frozen=True)
class HostAccess:
    """A host kernel load or store through the linear map: VA, size in bytes, kind."""

    va: int
    size: int
    write: bool = False
    fixup: Fixup = Fixup.NONE


@dataclass(frozen=True)
class AccessDone:
    """The access completed; data is what was read (or written)."""

    data: bytes

    def __str__(self) -> str:
        return f"done: {self.data.hex()}"


@dataclass(frozen=True)
class ZeropadFixedUp:
    """The exception-table fixup ran: the bytes before far, zeros from far on; stage says
    which translation faulted (1: the host's direct map, 2: EL2 injected a data abort)."""

    data: bytes
    far: int
    stage: int = 2

    def __str__(self) -> str:
        return f"fixed up at FAR {self.far:#x}: {self.data.hex()}"


@dataclass(frozen=True)
class HostOops:
    """A kernel data abort with no fixup: the host kernel dies (stage names who faulted)."""

    far: int
    stage: int

    def __str__(self) -> str:
        return f"Oops: kernel data abort at stage {self.stage}, FAR {self.far:#x}"


@dataclass(frozen=True)
class HostSeaPanic:
    """An SEA taken by the host kernel: fatal, the exception table is not consulted."""

    far: int

    def __str__(self) -> str:
        return f"panic: SEA in the kernel, FAR {self.far:#x}"


@dataclass(frozen=True)
class HostAccessHypPanic:
    """The hypervisor panicked handling the host's abort."""

    panic: HypPanic

    def __str__(self) -> str:
        return str(self.panic)


AccessOutcome = AccessDone | ZeropadFixedUp | HostOops | HostSeaPanic | HostAccessHypPanic


def _kernel_fault(access: HostAccess, far: int, first: bool, stage: int) -> AccessOutcome | None:
    """The host's __do_kernel_fault: an exception-table fixup or an Oops."""
    if access.fixup is Fixup.ZEROPAD and not first and not access.write:
        return None
    return HostOops(far, stage)


def _stage2_fault(
    pkvm: Pkvm, pa: int, policy: HostFaultPolicy
) -> HostAbortOutcome:
    """Let the hypervisor handle a host stage-2 fault until it maps or refuses."""
    outcome = handle_host_mem_abort(pkvm, pa, policy)
    if isinstance(outcome, (HostMapped, HostRetry)):
        leaf = kvm_pgtable_get_leaf(pkvm.host_pgt, pa)
        if not kvm_pte_valid(leaf.pte):
            raise AssertionError(f"host abort at {pa:#x} resolved but nothing mapped")
    return outcome


def host_access(
    pkvm: Pkvm,
    dm: DirectMap,
    access: HostAccess,
    policy: HostFaultPolicy,
    data: bytes = b"",
) -> AccessOutcome:
    """Perform one host kernel access through the linear map, page by page.

    Each page is translated at stage 1 (the direct map) and stage 2 (the host stage 2,
    faulting to EL2 as needed); the bytes move only if every page translates.

    Kernel: the host's __do_kernel_fault/fixup_exception and do_sea as the seed
    describes them; handle_host_mem_abort at EL2.
    """
    page = pkvm.page_size
    if access.write and len(data) != access.size:
        raise ValueError(f"a {access.size}-byte store needs {access.size} bytes of data")
    pieces = access_pieces(access.va, access.size, page)
    for i, (va, _) in enumerate(pieces):
        pa = va - PAGE_OFFSET
        fault = _translate(pkvm, dm, access, va, pa, i == 0, policy)
        if fault is not None:
            return fault
    return _move(pkvm, access, data)


def _translate(
    pkvm: Pkvm,
    dm: DirectMap,
    access: HostAccess,
    va: int,
    pa: int,
    first: bool,
    policy: HostFaultPolicy,
) -> AccessOutcome | None:
    """Translate one page of the access; return how the access ends if it faults."""
    if pa // pkvm.page_size in dm.invalid:
        return _kernel_fault(access, va, first, 1) or _zeropad(pkvm, access, va, 1)
    for _ in range(2):
        if kvm_pte_valid(kvm_pgtable_get_leaf(pkvm.host_pgt, pa).pte):
            return None
        outcome = _stage2_fault(pkvm, pa, policy)
        match outcome:
            case HostMapped() | HostRetry():
                continue
            case InjectedDataAbort():
                return _kernel_fault(access, va, first, 2) or _zeropad(pkvm, access, va)
            case InjectedSea():
                return HostSeaPanic(va)
            case HypPanic():
                return HostAccessHypPanic(outcome)
    raise AssertionError(f"host stage 2 still faults at {pa:#x} after it was mapped")


def _zeropad(pkvm: Pkvm, access: HostAccess, far: int, stage: int = 2) -> ZeropadFixedUp:
    """Read the bytes of the access before far, and zeros from far on."""
    head = far - access.va
    got = pkvm.env.mem.read_bytes(access.va - PAGE_OFFSET, head)
    return ZeropadFixedUp(got + bytes(access.size - head), far, stage)


def _move(pkvm: Pkvm, access: HostAccess, data: bytes) -> AccessDone:
    pa = access.va - PAGE_OFFSET
    if access.write:
        pkvm.env.mem.write_bytes(pa, data)
        return AccessDone(data)
    return AccessDone(pkvm.env.mem.read_bytes(pa, access.size))
