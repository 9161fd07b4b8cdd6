"""The providers.kind CHECK constraint and the provider-kind registry (shared/core/providers.py) agree: the
API never accepts a kind the database refuses, and a kind the database accepts without an adapter is
caught here."""

from __future__ import annotations

import re

import asyncpg

from shared.core.providers import ProviderKind

# Kinds a migration already allows whose adapter is not on main yet.
AWAITING_AN_ADAPTER: set[str] = set()


async def test_the_kind_check_constraint_lists_the_registered_kinds(pool: asyncpg.Pool) -> None:
    # Given the migrated database, When its providers.kind CHECK constraint is read
    definition = await pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'providers_kind_check'"
    )
    allowed = set(re.findall(r"'([a-z_]+)'::text", definition))
    # Then it allows exactly the registered kinds (and those on their way)
    assert allowed - AWAITING_AN_ADAPTER == {k.value for k in ProviderKind}
