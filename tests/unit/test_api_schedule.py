"""services/api/schedule.py: cron expressions, next runs in a time zone, the campaign state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.api.schedule import (
    Action,
    CampaignStatus,
    ScheduleError,
    TransitionError,
    initial_status,
    next_run,
    resumed_status,
    transition,
    validate_cron,
)

NOW = datetime(2024, 3, 30, 12, 0, tzinfo=UTC)


def test_cron_expressions_have_five_valid_fields() -> None:
    assert validate_cron("  */15  * * * 1-5 ") == "*/15 * * * 1-5"
    for bad in ["* * * *", "* * * * * *", "61 * * * *", "a b c d e", ""]:
        with pytest.raises(ScheduleError):
            validate_cron(bad)


def test_the_next_run_is_read_in_the_campaign_time_zone_and_returned_in_utc() -> None:
    # 09:00 in Paris on the day after the switch to summer time is 07:00 UTC
    assert next_run("0 9 * * *", "Europe/Paris", NOW) == datetime(2024, 3, 31, 7, 0, tzinfo=UTC)
    assert next_run("0 9 * * *", "UTC", NOW) == datetime(2024, 3, 31, 9, 0, tzinfo=UTC)
    # strictly after: a run at exactly `after` is not the next one
    assert next_run("0 12 * * *", "UTC", NOW) == NOW + timedelta(days=1)


def test_unknown_time_zones_are_refused() -> None:
    with pytest.raises(ScheduleError, match="time zone"):
        next_run("* * * * *", "Mars/Olympus", NOW)


@pytest.mark.parametrize(
    ("status", "action", "allowed"),
    [
        (CampaignStatus.RUNNING, Action.PAUSE, True),
        (CampaignStatus.SCHEDULED, Action.PAUSE, True),
        (CampaignStatus.PAUSED, Action.PAUSE, False),
        (CampaignStatus.PAUSED, Action.RESUME, True),
        (CampaignStatus.RUNNING, Action.RESUME, False),
        (CampaignStatus.PAUSED, Action.CANCEL, True),
        (CampaignStatus.COMPLETED, Action.CANCEL, False),
        (CampaignStatus.CANCELLED, Action.CANCEL, False),
        (CampaignStatus.CANCELLED, Action.RESUME, False),
    ],
)
def test_campaign_transitions(status: CampaignStatus, action: Action, allowed: bool) -> None:
    if allowed:
        transition(status, action)
    else:
        with pytest.raises(TransitionError, match=f"cannot {action.value}"):
            transition(status, action)


def test_initial_and_resumed_statuses() -> None:
    later = NOW + timedelta(hours=1)
    assert initial_status(None, None, NOW) is CampaignStatus.RUNNING
    assert initial_status(later, None, NOW) is CampaignStatus.SCHEDULED
    assert initial_status(None, "* * * * *", NOW) is CampaignStatus.SCHEDULED
    assert resumed_status(later, None, 0, NOW) is CampaignStatus.SCHEDULED
    assert resumed_status(NOW - timedelta(hours=1), None, 1, NOW) is CampaignStatus.RUNNING
    assert resumed_status(None, "* * * * *", 0, NOW) is CampaignStatus.SCHEDULED
    assert resumed_status(None, "* * * * *", 3, NOW) is CampaignStatus.RUNNING
