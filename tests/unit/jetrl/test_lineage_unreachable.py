"""Lineage without a database: an unreachable one is refused with what to do (the rest of the
lineage tests need a real Postgres: tests/integration/jetrl/test_lineage.py)."""

import pytest

from jetrl.lineage.db import DatabaseUnreachable, check_database


async def test_unreachable_database_says_what_to_do():
    with pytest.raises(DatabaseUnreachable, match="JETRL_DATABASE_URL"):
        await check_database("postgresql+psycopg://nobody@127.0.0.1:1/none")
