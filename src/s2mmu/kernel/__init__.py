"""The kernel's own code as an oracle for s2mmu.pgtable and s2mmu.nested.at.

``build`` compiles arch/arm64/kvm/hyp/pgtable.c (and, from 6.12, arch/arm64/kvm/at.c)
from an installed kernel source with s2mmu's shims; ``binding`` and ``at_binding`` load
them with ctypes; ``diff`` runs pgtable.c and the model side by side on random
operations and compares everything after each one; ``at_diff`` runs at.c's software
walk and the nested AT emulation on random guest states and compares PAR_EL1 and
descriptor updates. This package may import every model layer up to nested; only cli
and tests import it.
"""
