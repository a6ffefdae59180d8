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
