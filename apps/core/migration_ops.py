"""Operations shared by migrations."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def drop_like_index(table: str, column: str) -> migrations.RunPython:
    """Drop the second index Django gives every unique or indexed `CharField` on PostgreSQL
    (`varchar_pattern_ops`, for `LIKE 'abc%'`) — for identifiers never searched by prefix, where each
    index is one more write per row on the hot path. Nothing on other databases."""

    def forward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s"
                " AND indexdef LIKE %s",
                [table, f"%({column} varchar_pattern_ops)%"],
            )
            names = [row[0] for row in cursor.fetchall()]
        for name in names:
            schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")

    def backward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        qn = schema_editor.quote_name
        name = qn(f"{table}_{column}_like")
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {qn(table)} ({qn(column)} varchar_pattern_ops)")

    return migrations.RunPython(forward, backward)
