"""The kernel's own page-table code as an oracle for s2mmu.pgtable.

``build`` compiles arch/arm64/kvm/hyp/pgtable.c from an installed kernel source with
s2mmu's shim; ``binding`` loads it with ctypes; ``diff`` runs it and the model side by
side on random operations and compares everything after each one. This package may
import arch and pgtable; only cli and tests import it.
"""
