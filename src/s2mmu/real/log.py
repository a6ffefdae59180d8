"""What real KVM did, read from the console: the VMM's records and the kvm tracepoints.

The VMM prints one record a line, each starting ``S2R``:

    S2R boot RELEASE                 the booted kernel's release (once per boot)
    S2R host ctr_el0 VALUE           the host CPU's CTR_EL0 (DIC, IDC)
    S2R plan FILE / plan-end FILE ST  one plan (one scenario, one VM) begins / ends
    S2R vm ok IPA_BITS | vm err ERRNO WHAT
    S2R vma START ok|ERRNO
    S2R vcpu ok | vcpu err ERRNO WHAT
    S2R step N ioctl ok|ERRNO        a memslot / clear-dirty ioctl
    S2R step N host ok|ERRNO         munmap / madvise / mmap
    S2R step N dirty SLOT COUNT PAGES  GET_DIRTY_LOG (pages as ranges a-b,c or -)
    S2R step N exit mmio IPA LEN WRITE
    S2R step N exit nisv IPA ESR_ISS
    S2R step N exit error ERRNO       KVM_RUN failed (the VMM steps over the access)
    S2R step N exit exception ESR ELR the guest took an exception (its vector reported it)
    S2R step N exit timeout|loop|other|marker ...  the plan cannot go on
    S2R step N done | step N ok
    S2R end

and after each plan the trace buffer, each line starting ``S2T``: trace_marker lines
``s2mmu step N`` cut it into steps; ``kvm_guest_fault: ipa I, hsr E, hxfar F, pc P`` is one
stage-2 abort handed to kvm_handle_guest_abort (Kernel: trace_kvm_guest_fault in
arch/arm64/kvm/trace_arm.h, called from kvm_handle_guest_abort in mmu.c).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from s2mmu.arch.errors import InputError
from s2mmu.kvm.abort import GuestAbort


@dataclass(frozen=True)
class MmioSeen:
    """KVM_EXIT_MMIO."""

    ipa: int
    length: int
    is_write: bool

    def __str__(self) -> str:
        return f"KVM_EXIT_MMIO {'write' if self.is_write else 'read'} {self.length} " \
               f"@{self.ipa:#x}"


@dataclass(frozen=True)
class NisvSeen:
    """KVM_EXIT_ARM_NISV."""

    ipa: int
    esr_iss: int

    def __str__(self) -> str:
        return f"KVM_EXIT_ARM_NISV @{self.ipa:#x} ESR_ISS={self.esr_iss:#x}"


@dataclass(frozen=True)
class RunFailed:
    """KVM_RUN returned -1 with errno (a name like "EFAULT")."""

    errno: str

    def __str__(self) -> str:
        return f"KVM_RUN {self.errno}"


@dataclass(frozen=True)
class GuestException:
    """The guest took an exception to EL1 (an injected abort, an undefined instruction)."""

    esr: int
    elr: int
    far: int | None = None
    """FAR_EL1 (None from a VMM that does not report it)."""

    def __str__(self) -> str:
        far = f" FAR_EL1={self.far:#x}" if self.far is not None else ""
        return f"guest exception ESR_EL1={self.esr:#x} ELR_EL1={self.elr:#x}{far}"


@dataclass(frozen=True)
class Stuck:
    """The plan could not go on: timeout, too many exits, an unknown exit reason."""

    what: str

    def __str__(self) -> str:
        return f"stuck: {self.what}"


Exit = MmioSeen | NisvSeen | RunFailed | GuestException | Stuck


@dataclass(frozen=True)
class TraceFault:
    """One kvm_guest_fault tracepoint: ESR_EL2, FAR_EL2, the page-aligned fault IPA, PC."""

    ipa: int
    esr: int
    far: int
    pc: int

    @property
    def abort(self) -> GuestAbort:
        """Return the abort as the model takes it (HPFAR_EL2.FIPA from the traced IPA)."""
        return GuestAbort(self.esr, self.far, (self.ipa >> 12) << 4)


@dataclass(frozen=True)
class RealStep:
    """One step as real KVM ran it."""

    index: int
    exits: tuple[Exit, ...]
    faults: tuple[TraceFault, ...]
    """Every stage-2 abort traced during the step, the VMM's own included."""
    done: bool
    """The VMM finished the step (False: the plan stopped in it)."""
    errno: str | None
    """A failed ioctl or host call's errno ("EINVAL"), None when it succeeded."""
    dirty: tuple[int, ...] | None
    """GET_DIRTY_LOG's pages (slot-relative)."""


@dataclass(frozen=True)
class PagemapRun:
    """Present pages of the VMM's memory: pages HVAs from hva on, mapping the PFNs from pfn
    on, with the kept /proc/kpageflags bits (KPF_ZERO_PAGE, KPF_THP, KPF_HUGE)."""

    hva: int
    pages: int
    pfn: int
    flags: int


KPF_HUGE, KPF_THP, KPF_ZERO_PAGE = 17, 22, 24


@dataclass(frozen=True)
class RealRun:
    """One scenario (one plan, one VM) as real KVM ran it."""

    plan: str
    release: str
    setup: tuple[str, ...]
    """Set-up records that failed (vm err ..., vma ... ERRNO), empty when all succeeded."""
    steps: Mapping[int, RealStep]
    ended: bool
    ctr_el0: int | None = None
    """The host CPU's CTR_EL0 as the VMM read it (DIC, IDC), None if not reported."""
    pagemaps: Mapping[int, tuple[PagemapRun, ...]] = field(default_factory=dict)
    """The VMM's /proc/self/pagemap when the stage 2 was read, by step."""


@dataclass
class _StepDraft:
    index: int
    exits: list[Exit] = field(default_factory=list)
    faults: list[TraceFault] = field(default_factory=list)
    done: bool = False
    errno: str | None = None
    dirty: tuple[int, ...] | None = None

    def freeze(self) -> RealStep:
        return RealStep(self.index, tuple(self.exits), tuple(self.faults), self.done,
                        self.errno, self.dirty)


@dataclass
class _RunDraft:
    plan: str
    release: str
    ctr_el0: int | None = None
    setup: list[str] = field(default_factory=list)
    steps: dict[int, _StepDraft] = field(default_factory=dict)
    ended: bool = False
    pagemaps: dict[int, dict[int, PagemapRun]] = field(default_factory=dict)

    def step(self, n: int) -> _StepDraft:
        return self.steps.setdefault(n, _StepDraft(n))

    def freeze(self) -> RealRun:
        return RealRun(self.plan, self.release, tuple(self.setup),
                       {n: st.freeze() for n, st in sorted(self.steps.items())}, self.ended,
                       self.ctr_el0, {n: tuple(r[h] for h in sorted(r))
                                      for n, r in self.pagemaps.items()})


class ConsoleError(InputError):
    """The console shows the boot did not get to run the plans."""


TRACE_MARK = re.compile(r"tracing_mark_write: s2mmu step (\d+)")
TRACE_FAULT = re.compile(r"kvm_guest_fault: ipa (0x[0-9a-f]+), hsr (0x[0-9a-f]+), "
                         r"hxfar (0x[0-9a-f]+), pc (0x[0-9a-f]+)")


def pages_of(text: str) -> tuple[int, ...]:
    """Return the pages "0-2,7" names."""
    out: list[int] = []
    for part in text.split(",") if text != "-" else []:
        lo, _, hi = part.partition("-")
        out += range(int(lo), int(hi or lo) + 1)
    return tuple(out)


def exit_of(kind: str, args: list[str]) -> Exit:
    """Return the exit a "step N exit KIND ..." record names."""
    if kind == "mmio":
        return MmioSeen(int(args[0], 16), int(args[1]), args[2] == "1")
    if kind == "nisv":
        return NisvSeen(int(args[0], 16), int(args[1], 16))
    if kind == "error":
        return RunFailed(args[0])
    if kind == "exception":
        far = int(args[2], 16) if len(args) > 2 else None
        return GuestException(int(args[0], 16), int(args[1], 16), far)
    return Stuck(" ".join([kind, *args]))


def step_record(run: _RunDraft, words: list[str]) -> None:
    """Apply one "step N ..." record."""
    st = run.step(int(words[1]))
    what, args = words[2], words[3:]
    if what == "exit":
        st.exits.append(exit_of(args[0], args[1:]))
    elif what in ("done", "ok"):
        st.done = True
    elif what in ("ioctl", "host"):
        st.done = True
        st.errno = None if args[0] == "ok" else args[1] if args[0] == "err" else args[0]
    elif what == "dirty":
        st.done = True
        st.dirty = pages_of(args[2])
    else:
        st.exits.append(Stuck(" ".join(words[2:])))


def trace_line(run: _RunDraft, line: str, current: list[int]) -> None:
    """Apply one trace line: a step marker, or a fault within the current step."""
    if m := TRACE_MARK.search(line):
        current[0] = int(m.group(1))
    elif (m := TRACE_FAULT.search(line)) and current[0]:
        ipa, esr, far, pc = (int(g, 16) for g in m.groups())
        run.step(current[0]).faults.append(TraceFault(ipa, esr, far, pc))


@dataclass(frozen=True)
class ConsoleLog:
    """A boot's console: the kernel release, KVM's own messages, one run per plan."""

    release: str
    kvm_messages: tuple[str, ...]
    runs: tuple[RealRun, ...]

    @property
    def kvm_mode(self) -> str | None:
        """Return the mode KVM says it initialised ("Protected nVHE mode", "VHE mode"...)."""
        for line in self.kvm_messages:
            if m := re.search(r"\]: (.*mode) initialized successfully", line):
                return m.group(1)
        return None


def parse_console(text: str) -> ConsoleLog:
    """Return what a boot's console shows: release, KVM's messages, the runs."""
    runs: list[_RunDraft] = []
    release = ""
    ctr: int | None = None
    kvm: list[str] = []
    current = [0]
    for raw in text.splitlines():
        if raw.startswith("S2K "):
            kvm.append(raw[4:].strip())
            continue
        if raw.startswith("S2T ") and runs:
            trace_line(runs[-1], raw, current)
            continue
        if not raw.startswith("S2R "):
            continue
        words = raw.split()[1:]
        if not words:
            continue
        head = words[0]
        if head == "boot":
            release = words[1] if len(words) > 1 else ""
        elif head == "host" and words[1:2] == ["ctr_el0"]:
            ctr = int(words[2], 16)
        elif head == "plan":
            runs.append(_RunDraft(words[1], release, ctr))
            current[0] = 0
        elif not runs:
            continue
        elif head == "step":
            step_record(runs[-1], words)
        elif head == "end":
            runs[-1].ended = True
        elif head == "dump" and words[2:3] == ["pagemap"] and len(words) == 7:
            hva, pages, pfn, flags = (int(w, 0) for w in words[3:])
            runs[-1].pagemaps.setdefault(int(words[1]), {})[hva] = PagemapRun(
                hva, pages, pfn, flags)
        elif head in ("vm", "vcpu", "reg", "poke") and words[1:2] == ["err"] or \
                head == "vma" and words[2:3] != ["ok"]:
            runs[-1].setup.append(" ".join(words))
    if not release:
        tail = " / ".join(text.strip().splitlines()[-3:]) or "no output"
        raise ConsoleError(f"real KVM: the VMM never ran (console ends: {tail[:300]})")
    return ConsoleLog(release, tuple(kvm), tuple(r.freeze() for r in runs))
