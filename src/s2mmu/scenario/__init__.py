"""Scenarios: a guest's life written as data, run against the model, checked as it goes.

:func:`load_scenario` parses a TOML file into typed events (one frozen dataclass per kind,
registered by the layer that owns it, see :mod:`s2mmu.scenario.schema`);
:func:`run_scenario` runs it and returns a :class:`Run`: typed step records (number, source
line, the event, an :class:`Outcome`, the faults KVM handled with their typed decisions,
the step's result, TLBI/CMO events, broken expectations and invariants), each layer's
summary, and the final world (``run.world``). The command line renders the same records
as text (:mod:`~s2mmu.scenario.render_text`), JSON (:mod:`~s2mmu.scenario.render_json`)
and HTML.

>>> from s2mmu.scenario import Outcome, load_scenario, run_scenario
>>> scn = load_scenario("example.toml", '''
... [host]
... features = ["fwb", "dic"]
... [[vma]]
... start = 0x7f0000000000
... size = "4M"
... thp = true
... [[memslot]]
... id = 0
... gpa = 0x40000000
... size = "4M"
... hva = 0x7f0000000000
... flags = ["log_dirty_pages"]
... [[event]]
... do = "write"
... ipa = 0x40003000
... expect = "completed"
... [[event]]
... do = "get_dirty_log"
... slot = 0
... expect_dirty = [3]
... ''')
>>> run = run_scenario(scn)
>>> run.ok, [(s.index, s.event.do, s.outcome.value) for s in run.steps]
(True, [(1, 'memslot', 'done'), (2, 'write', 'completed'), (3, 'get_dirty_log', 'done')])
>>> write = run.steps[1]
>>> write.outcome is Outcome.COMPLETED, hex(write.result.pa)
(True, '0x1000003000')
>>> [d.step for d in write.faults[0].handled.decisions][-1]
'kvm_pgtable_stage2_map'
>>> write.faults[0].handled.dirtied
(SlotPage(slot=0, page=3),)
>>> run.steps[2].result
DirtyLog(slot=0, pages=(3,))

The final VM state stays reachable:

>>> from s2mmu.scenario import KvmWorld
>>> run.world.part(KvmWorld).kvm.mmu_invalidate_seq
0

The words are rendered from the same records:

>>> from s2mmu.scenario.render_text import step_lines
>>> print(step_lines(run.steps[2])[0])
#3  [line  18] slot 0: KVM_GET_DIRTY_LOG: 1 dirty [0x3]
"""

from s2mmu.scenario.kvm_events import KvmSummary, KvmWorld
from s2mmu.scenario.records import FaultStep, Mismatch, Outcome, Run, StepRecord, World
from s2mmu.scenario.runner import run_scenario, run_step
from s2mmu.scenario.schema import (
    REGISTRY,
    Event,
    EventKind,
    Expectation,
    ExpectationKind,
    Invariant,
    Layer,
    Scenario,
    ScenarioError,
    load_scenario,
)

__all__ = [
    "REGISTRY", "Event", "EventKind", "Expectation", "ExpectationKind", "FaultStep",
    "Invariant", "KvmSummary", "KvmWorld", "Layer", "Mismatch", "Outcome", "Run", "Scenario",
    "ScenarioError", "StepRecord", "World", "load_scenario", "run_scenario", "run_step",
]
