"""JobFollower's re-attach budget: MAX_REATTACH re-attaches per outage, counted from the last event, with
a backoff that starts over too; the time one outage may last."""

from __future__ import annotations

import pytest

from lossd.client import _training
from lossd.client._training import MAX_REATTACH, JobFollower
from lossd.v1 import training_pb2 as pb


def _event(seq: int) -> pb.JobEvent:
    return pb.JobEvent(job_id="0123456789ab", seq=seq, kind=pb.JOB_EVENT_KIND_EPOCH)


def _outage(follower: JobFollower, failed_attempts: int) -> list[float]:
    """The backoffs of an outage in which ``failed_attempts`` re-attaches fail before one succeeds."""
    waits = []
    for _ in range(failed_attempts + 1):
        assert follower.may_reattach()
        waits.append(follower.backoff_s())
    return waits


def test_an_event_after_a_reattach_restores_the_whole_budget_and_backoff() -> None:
    follower = JobFollower()
    follower.feed(_event(1))
    for outage in range(3 * MAX_REATTACH):  # many outages over one run, each within the budget
        assert _outage(follower, MAX_REATTACH - 1)[:3] == [0.2, 0.4, 0.8], f"outage {outage}"
        follower.feed(_event(outage + 2))  # the re-attached stream delivers
    assert follower.after_seq == 3 * MAX_REATTACH + 1


def test_one_outage_longer_than_the_budget_gives_up() -> None:
    follower = JobFollower("0123456789ab")
    waits = _outage(follower, MAX_REATTACH - 1)
    assert not follower.may_reattach()  # no event since: the outage outlasted the budget
    window = _training.REATTACH_WINDOW_S  # what docs/sdk.md says one outage may last: about 30 s
    assert sum(waits) == pytest.approx(window) and 30 <= window <= 32
    follower.feed(_event(1))  # an old event (seq <= after_seq) would not count; a new one does
    assert follower.may_reattach() and follower.backoff_s() == 0.2


def test_an_already_seen_event_does_not_restore_the_budget() -> None:
    follower = JobFollower("0123456789ab", after_seq=5)
    _outage(follower, MAX_REATTACH - 1)
    follower.feed(_event(5))
    assert not follower.may_reattach()


def test_no_reattach_before_the_job_id_is_known() -> None:
    assert not JobFollower().may_reattach()
