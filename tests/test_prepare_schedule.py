"""The just-in-time preparation schedule and the slot waits the preprocessing thread relies on."""

from __future__ import annotations

import threading

import pytest

from stream.latest_slot import LatestSlots
from stream.prepare_schedule import MARGIN_S, PREPARE_LEAD, SMOOTHING, PrepareSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_wait_until_a_run_was_measured():
    clock = Clock()
    schedule = PrepareSchedule(clock)
    assert schedule.delay() == 0.0
    schedule.run_started()
    assert schedule.delay() == 0.0  # the first call's duration is not known yet


def test_waits_until_the_running_call_is_due_less_preparation_and_margin():
    clock = Clock()
    schedule = PrepareSchedule(clock)
    started = schedule.run_started()
    clock.now += 0.200
    schedule.run_finished(started)
    schedule.prepared(0.010)
    schedule.run_started()  # the next call begins now and should last 0.2 s
    clock.now += 0.050
    assert schedule.delay() == pytest.approx(0.200 - PREPARE_LEAD * 0.010 - MARGIN_S - 0.050)
    clock.now += 1.0  # the call overran its estimate: prepare at once
    assert schedule.delay() == 0.0


def test_durations_are_moving_averages():
    clock = Clock()
    schedule = PrepareSchedule(clock)
    for seconds in (0.2, 0.1):
        started = schedule.run_started()
        clock.now += seconds
        schedule.run_finished(started)
    schedule.run_started()
    expected_run = 0.2 * (1 - SMOOTHING) + 0.1 * SMOOTHING
    spread = 0.1 * SMOOTHING  # |0.1 - 0.2|, averaged in from 0
    assert schedule.delay() == pytest.approx(expected_run - spread - MARGIN_S)


def _wakes(wait, act) -> bool:
    """True when ``wait`` (blocking) returns after ``act`` runs on this thread."""
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (wait(), done.set()))
    waiter.start()
    assert not done.wait(0.1)  # still blocked
    act()
    waiter.join(5)
    return done.is_set()


@pytest.mark.parametrize("act", ["take_each", "discard", "close"])
def test_wait_until_empty_wakes_on_every_way_an_item_leaves(act):
    slots: LatestSlots[int] = LatestSlots(1)
    slots.put("a", 1)
    actions = {"take_each": slots.take_each, "discard": lambda: slots.discard("a"), "close": slots.close}
    assert _wakes(slots.wait_until_empty, actions[act])


def test_wait_closed_sleeps_and_wakes_on_close():
    slots: LatestSlots[int] = LatestSlots(1)
    assert slots.wait_closed(0.01) is False
    assert _wakes(lambda: slots.wait_closed(30), slots.close)
