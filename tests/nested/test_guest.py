"""Guest memory as KVM reads it: memslots over host memory, as a table port."""

from s2mmu.arch.memory import ExternalAbort, PhysMem
from s2mmu.nested.guest import GuestMemory, GuestRegion, identity_guest


def test_reads_go_to_the_memslots_host_address():
    host = PhysMem()
    g = GuestMemory(host, (GuestRegion(0x1000_0000, 0x10_0000, 0x5_0000_0000),))
    g.write64(0x1000_0008, 0xDEAD)
    assert host.read64(0x5_0000_0008) == 0xDEAD
    assert g.read64(0x1000_0008) == 0xDEAD


def test_read_outside_memslots_is_an_external_abort_naming_the_address():
    g = GuestMemory(PhysMem(), (GuestRegion(0, 0x1000, 0),))
    got = g.read64(0x1000)
    assert got == ExternalAbort(0x1000, "guest PA 0x1000 is in no memslot (kvm_read_guest fails)")


def test_word_straddling_the_end_of_a_memslot_is_outside():
    g = GuestMemory(PhysMem(), (GuestRegion(0, 0x1000, 0),))
    assert isinstance(g.read64(0xFFC), ExternalAbort)


def test_swap_needs_a_writable_memslot():
    host = PhysMem()
    g = GuestMemory(host, (GuestRegion(0, 0x1000, 0, writable=False),))
    got = g.cas64(0x10, 0, 1)
    assert isinstance(got, ExternalAbort) and "read-only memslot (EPERM)" in got.reason
    assert host.read64(0x10) == 0 and host.hw_writes == []


def test_swap_in_guest_byte_order_is_recorded_at_the_host_address():
    host = PhysMem()
    g = GuestMemory(host, (GuestRegion(0x4000, 0x1000, 0x9000),))
    g.write64(0x4010, 0x1, big_endian=True)
    assert g.cas64(0x4010, 0x1, 0x401, big_endian=True) is True
    (w,) = host.hw_writes
    assert (w.pa, w.before, w.after, w.big_endian) == (0x9010, 0x1, 0x401, True)
    assert g.cas64(0x4010, 0x1, 0x2, big_endian=True) is False


def test_identity_guest_is_host_memory():
    host = PhysMem()
    host.write64(0x2000, 7)
    assert identity_guest(host).read64(0x2000) == 7
