"""The VM's stage 2 as a scenario's steps leave it: ptdump-style dumps between steps.

A :class:`Stage2Recorder` is a runner hook (``run_scenario(scn, on_step=recorder)``): after
each step it dumps the VM's stage 2 (s2mmu.pgtable.dump.kvm_pgtable_stage2_dump, the
records s2mmu.arch.dump defines) when asked for that step, or, watching every step, when
the step changed it. Text, JSON and HTML render the same :class:`Stage2After` records.

Kernel: arch/arm64/kvm/ptdump.c (debugfs stage2_page_tables: a dump of the stage 2 as it
is at the moment it is read).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from s2mmu.arch.dump import AddrRange, RangePredicate, TableDump
from s2mmu.arch.errors import InputError
from s2mmu.pgtable.dump import kvm_pgtable_stage2_dump
from s2mmu.pgtable.table import KvmPgtable
from s2mmu.scenario.kvm_events import KvmWorld
from s2mmu.scenario.records import StepRecord, World

LAST = "last"
"""The step number --dump-after also accepts: the run's last step (its final state)."""


@dataclass(frozen=True)
class Stage2After:
    """The stage 2 as one step left it.

    changed: whether it differs from the stage 2 before the step (known only when the
    recorder watched every step; None otherwise).
    """

    step: StepRecord
    dump: TableDump
    changed: bool | None = None


def parse_step_number(text: str, steps: int, option: str = "--dump-after") -> int:
    """Return the step a --dump-after value names: '#N' or 'N' (1..steps), or 'last'.

    Raises InputError for a step the run does not have.
    """
    value = text.strip().removeprefix("#")
    if value == LAST:
        if steps == 0:
            raise InputError(f"{option} last: the scenario has no step")
        return steps
    if not value.isdigit() or not 1 <= int(value) <= steps:
        raise InputError(f"{option} {text}: no such step (the run has steps #1-#{steps}, "
                         f"or 'last')" if steps else
                         f"{option} {text}: no such step (the scenario has no step)")
    return int(value)


def vm_stage2(world: World) -> KvmPgtable:
    """Return the VM's stage-2 page table in a scenario's world."""
    return world.part(KvmWorld).kvm.pgt


def stage2_content(dump: TableDump) -> tuple[object, ...]:
    """Return what a dump says of the mappings (ranges and faults), for comparing two dumps."""
    return tuple((region.ranges, region.faults) for region in dump.regions)


@dataclass
class Stage2Recorder:
    """A runner hook that keeps the stage 2 after the steps asked for.

    after: the step numbers to dump (filtered by rng and keep); changed_only: instead,
    watch every step (unfiltered) and keep the dump of each step that changed the stage
    2, up to limit dumps (the numbers of the changing steps past the limit are kept in
    ``dropped``).
    """

    after: Collection[int] = ()
    rng: AddrRange | None = None
    keep: RangePredicate | None = None
    changed_only: bool = False
    limit: int | None = None
    dumps: list[Stage2After] = field(default_factory=list)
    dropped: set[int] = field(default_factory=set)
    _last: tuple[object, ...] | None = field(default=None, init=False, repr=False)

    def __call__(self, step: StepRecord, world: World) -> None:
        """Dump the stage 2 if this step is wanted (the runner's on_step)."""
        if not self.changed_only:
            if step.index in self.after:
                dump = kvm_pgtable_stage2_dump(vm_stage2(world), self.rng, self.keep)
                self.dumps.append(Stage2After(step, dump))
            return
        dump = kvm_pgtable_stage2_dump(vm_stage2(world))
        content = stage2_content(dump)
        # before the first step: the empty stage 2 kvm_init_stage2_mmu leaves
        before = self._last if self._last is not None else tuple(
            ((), ()) for _ in dump.regions)
        if content == before:
            return
        self._last = content
        if self.limit is not None and len(self.dumps) >= self.limit:
            self.dropped.add(step.index)
            return
        self.dumps.append(Stage2After(step, dump, changed=True))

    def was_dropped(self, index: int) -> bool:
        """Return whether step index changed the stage 2 past the limit (no dump kept)."""
        return index in self.dropped

    def of(self, index: int) -> Stage2After | None:
        """Return the dump kept for step index, if any."""
        return next((d for d in self.dumps if d.step.index == index), None)
