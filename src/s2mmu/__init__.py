"""s2mmu: an executable model of Arm64 two-stage memory virtualisation as KVM/arm64 does it."""

__version__ = "0.1.0"
