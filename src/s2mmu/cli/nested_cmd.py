"""`s2mmu demo --nested`: the built-in nested example as text or one JSON document."""

from __future__ import annotations

import sys
from typing import Any

from s2mmu.cli import output
from s2mmu.kvm.abort import kvm_is_write_fault, kvm_vcpu_get_fault_ipa
from s2mmu.scenario.nested_demo import L1Tlbi, L2Access, NestedDemo, nested_demo_ok, run_nested_demo
from s2mmu.scenario.render_text import decision_text, result_text, size_name


def step_lines(step: L2Access | L1Tlbi) -> list[str]:
    """Return one step's lines: its title, what KVM decided, the result, the invariant."""
    if isinstance(step, L2Access):
        a = step.abort
        head = (f"{step.title}: {'write' if kvm_is_write_fault(a) else 'read'} "
                f"L2 IPA {kvm_vcpu_get_fault_ipa(a):#x}")
        lines = [head] + [f"    {d.step}: {decision_text(d)}" for d in step.handled.decisions]
        lines.append(f"    => {result_text(step.handled.result, a, step.handled.decisions)}")
    else:
        lines = [f"{step.title}: Xt {step.xt:#x}"]
        lines += [f"    VMID {u.vmid}: shadow IPA {u.ipa:#x} {size_name(u.size)} unmapped"
                  for u in step.unmapped]
    lines.append(f"    invariant: {'holds' if not step.violations else step.violations}")
    return lines


def demo_doc(demo: NestedDemo) -> dict[str, Any]:
    """Return the s2mmu.nested-demo/1 document."""
    steps: list[dict[str, Any]] = []
    for s in demo.steps:
        if isinstance(s, L2Access):
            m = s.handled.mapping
            steps.append({"kind": "l2-access", "title": s.title,
                          "l2_ipa": hex(kvm_vcpu_get_fault_ipa(s.abort)),
                          "write": kvm_is_write_fault(s.abort), "esr": hex(s.abort.esr),
                          "decisions": [{"step": d.step, "text": decision_text(d)}
                                        for d in s.handled.decisions],
                          "result": result_text(s.handled.result, s.abort, s.handled.decisions),
                          "mapping": None if m is None else {
                              "ipa": hex(m.ipa), "size": hex(m.size), "pa": hex(m.pa),
                              "prot": hex(m.prot)},
                          "violations": [repr(v) for v in s.violations]})
        else:
            steps.append({"kind": "l1-tlbi", "title": s.title, "xt": hex(s.xt),
                          "unmapped": [{"vmid": u.vmid, "ipa": hex(u.ipa), "size": hex(u.size)}
                                       for u in s.unmapped],
                          "violations": [repr(v) for v in s.violations]})
    return {"schema": "s2mmu.nested-demo/1", "ok": nested_demo_ok(demo),
            "vtcr_el2": hex(demo.vtcr), "vttbr_el2": hex(demo.vttbr), "steps": steps}


def run_nested(as_json: bool) -> None:
    """Run the nested example; exit 1 if the invariant broke."""
    demo = run_nested_demo()
    if as_json:
        output.print_json(demo_doc(demo))
    else:
        out = output.console()
        out.print("s2mmu demo --nested: an L1 guest hypervisor's stage 2 under KVM's shadow "
                  "stage 2", markup=False)
        out.print(f"L1 VTCR_EL2={demo.vtcr:#x} VTTBR_EL2={demo.vttbr:#x}", markup=False)
        for step in demo.steps:
            for line in step_lines(step):
                out.print(line, markup=False, highlight=False)
    sys.exit(0 if nested_demo_ok(demo) else 1)
