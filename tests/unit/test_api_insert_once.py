"""The single send's one statement (services/api/store/idempotency.py): its parameters line up."""

from __future__ import annotations

import re

from services.api.store.idempotency import INSERT_ONCE_SQL
from services.api.store.messages import NewLog, insert_arguments


def test_the_statement_numbers_its_parameters_after_the_inserts_own() -> None:
    # Given the arguments the insert takes for one log, and the five the key adds
    inserted = len(insert_arguments("acme", [NewLog("sms", "+447911123456", {}, 0, 5)]))
    # Then the statement uses exactly $1..$(inserted + 5), none skipped
    used = {int(n) for n in re.findall(r"\$(\d+)", INSERT_ONCE_SQL)}
    assert used == set(range(1, inserted + 6))
