"""The just-in-time preparation schedule and the waits the preprocessing thread relies on."""

from __future__ import annotations

import threading
import time

import pytest

from stream.latest_slot import LatestSlots
from stream.prepare_schedule import MARGIN_S, PREPARE_LEAD, SMOOTHING, PrepareSchedule


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scheduled(*calls: float) -> tuple[PrepareSchedule, Clock]:
    """A schedule on a fake clock that has seen engine calls of these durations."""
    clock = Clock()
    schedule = PrepareSchedule(clock)
    for seconds in calls:
        started = schedule.run_started()
        clock.now += seconds
        schedule.run_finished(started)
    return schedule, clock


def test_no_wait_until_a_run_was_measured():
    clock = Clock()
    schedule = PrepareSchedule(clock)
    assert schedule.delay() == 0.0
    schedule.run_started()
    assert schedule.delay() == 0.0  # the first call's duration is not known yet


def test_waits_until_the_running_call_is_due_less_preparation_and_margin():
    schedule, clock = scheduled(0.200)
    schedule.prepared(0.010)
    schedule.run_started()  # the next call begins now and should last 0.2 s
    clock.now += 0.050
    assert schedule.delay() == pytest.approx(0.200 - PREPARE_LEAD * 0.010 - MARGIN_S - 0.050)
    clock.now += 1.0  # the call overran its estimate: prepare at once
    assert schedule.delay() == 0.0


def test_durations_are_moving_averages_and_failed_calls_do_not_count():
    schedule, clock = scheduled(0.2, 0.1)
    started = schedule.run_started()
    clock.now += 5.0
    schedule.run_finished(started, failed=True)
    schedule.run_started()
    assert schedule.delay() == pytest.approx(0.2 * (1 - SMOOTHING) + 0.1 * SMOOTHING - MARGIN_S)


def test_no_wait_between_calls():
    """The engine finished before its estimate and waits for a frame: preparing must not wait for the estimate."""
    schedule, _ = scheduled(0.5, 0.1)
    assert schedule.delay() == 0.0


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


def _running_schedule() -> tuple[PrepareSchedule, float]:
    """A schedule whose engine is 30 s into a call estimated at 60 s."""
    schedule, clock = scheduled(60)
    started = schedule.run_started()
    clock.now += 30
    return schedule, started


def test_wait_until_due_wakes_when_the_call_ends_early():
    schedule, started = _running_schedule()
    assert _wakes(schedule.wait_until_due, lambda: schedule.run_finished(started))


def test_wait_until_due_wakes_on_release_and_never_waits_after_it():
    schedule, _ = _running_schedule()
    assert _wakes(schedule.wait_until_due, schedule.release)
    schedule.wait_until_due()  # returns at once


def test_wait_until_due_sleeps_until_due():
    schedule = PrepareSchedule()  # the real clock
    started = schedule.run_started()
    time.sleep(0.05)
    schedule.run_finished(started)
    schedule.run_started()
    began = time.monotonic()
    schedule.wait_until_due()
    assert 0.02 < time.monotonic() - began < 1.0  # ~0.05 s less the margin
