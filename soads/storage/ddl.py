"""The DDL of every table for MySQL and SQLite, as kept in ``sql/`` (``python -m soads.storage.ddl``)."""
from __future__ import annotations

import sys

from sqlalchemy.schema import CreateIndex, CreateTable

from soads.storage.tables import TABLE

HEADER = "-- SOADS tables ({dialect}). Generated from soads/schema.py by `python -m soads.storage.ddl {dialect}`;\n-- tests/test_storage.py checks this file is current.\n"


def ddl(dialect: str) -> str:
    """CREATE TABLE statements for ``dialect`` ("mysql" or "sqlite")."""
    if dialect == "mysql":
        from sqlalchemy.dialects import mysql as d
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite as d
    else:
        raise ValueError(f"unknown dialect {dialect!r}")
    parts = [HEADER.format(dialect=dialect)]
    for t in TABLE.values():
        stmt = str(CreateTable(t, if_not_exists=True).compile(dialect=d.dialect())).strip()
        stmt = "\n".join(line.rstrip() for line in stmt.splitlines())
        parts.append(stmt + ";\n")
        for ix in sorted(t.indexes, key=lambda i: i.name):
            parts.append(str(CreateIndex(ix, if_not_exists=True).compile(
                dialect=d.dialect())).strip() + ";\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(ddl(sys.argv[1]))
