"""The event log: ordered, typed, optionally counting only."""

from s2mmu.pgtable.events import Dsb, EventLog, Isb, TlbiVmid


def test_events_are_kept_in_order_and_filtered_by_type() -> None:
    log = EventLog()
    for e in (Dsb("ishst"), TlbiVmid(3), Isb(), Dsb("ish")):
        log.record(e)
    assert log.of_type(Dsb) == [Dsb("ishst"), Dsb("ish")]
    assert log.since(2) == [Isb(), Dsb("ish")]
    assert log.counts["Dsb"] == 2


def test_a_counting_log_keeps_no_events() -> None:
    log = EventLog(keep=False)
    log.record(TlbiVmid(1))
    assert len(log) == 0
    assert log.counts["TlbiVmid"] == 1


def test_clear_forgets_events_and_counts() -> None:
    log = EventLog()
    log.record(Isb())
    log.clear()
    assert len(log) == 0 and not log.counts


def test_events_have_hex_reprs_and_keep_equality_and_hash() -> None:
    from s2mmu.pgtable.events import PageAlloc, TlbiVmidIpa, TlbiVmidRange

    assert repr(PageAlloc(549755981824)) == "PageAlloc(pa=0x8000029000)"
    assert repr(TlbiVmidIpa(1, 0x40000000, 3)) == \
        "TlbiVmidIpa(vmid=1, ipa=0x40000000, level=3, nsh=False)"
    assert repr(TlbiVmidRange(1, 0x40000000, 512, 4096)) == \
        "TlbiVmidRange(vmid=1, ipa=0x40000000, pages=512, page_size=0x1000)"
    assert PageAlloc(0x1000) == PageAlloc(4096) == (4096,)
    assert hash(PageAlloc(0x1000)) == hash((4096,))
