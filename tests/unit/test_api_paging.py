"""services/api/paging.py and the message list query: cursors and filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.paging import MAX_ID, CursorError, decode_cursor, encode_cursor, page
from services.api.schemas.messages import MessageFilters
from services.api.store.messages import list_query


@given(st.integers(1, MAX_ID))
def test_a_cursor_round_trips(last_id: int) -> None:
    assert decode_cursor(encode_cursor(last_id)) == last_id


@pytest.mark.parametrize("bad", ["", "!!!", "e30", "eyJpZCI6MH0", "eyJpZCI6IngifQ", "é", "W10"])
def test_foreign_cursors_are_refused(bad: str) -> None:
    with pytest.raises(CursorError):
        decode_cursor(bad)


def test_a_page_has_a_next_cursor_only_when_more_rows_exist() -> None:
    assert page([9, 8, 7], 3) == (3, None)
    count, cursor = page([9, 8, 7, 6], 3)
    assert count == 3 and cursor is not None and decode_cursor(cursor) == 7


def test_only_present_filters_become_numbered_conditions() -> None:
    # Given filters on status and creation time, after a cursor
    filters = MessageFilters(status="SENT", created_from=datetime(2024, 1, 1, tzinfo=UTC), limit=10)
    # When the list query is built
    sql, args = list_query("acme", filters, after_id=100)
    # Then each condition has its own parameter, the tenant first and the limit (+1) last
    assert "l.tenant = $1" in sql and "l.id < $2" in sql and "l.status = $3" in sql
    assert "l.created_at >= $4" in sql and sql.endswith("LIMIT $5")
    assert "channel" not in sql.split("WHERE")[1]
    assert args == ["acme", 100, "SENT", datetime(2024, 1, 1, tzinfo=UTC), 11]
