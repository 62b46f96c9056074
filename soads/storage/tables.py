"""Relational tables (RELATIONAL DEPENDENCY, PATTERN, mining runs, scores) through SQLAlchemy.

One URL picks the backend: ``sqlite:///path.db`` (embedded default) or
``mysql+pymysql://user:pass@127.0.0.1/soads`` (real MySQL/MariaDB). The table layout comes from
:data:`soads.schema.TABLES`; ``sql/sqlite.sql`` and ``sql/mysql.sql`` are the same DDL for
people who create the schema by hand (a test keeps the three in step).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from typing import Iterable, Sequence

import sqlalchemy as sa

from soads import schema as S

logger = logging.getLogger(__name__)

_KEY_TEXT = 255  # MySQL indexes need a bounded length; read point ids and oids are URNs

_TYPES = {
    "text": lambda: sa.String(_KEY_TEXT),
    "int": sa.Integer,
    "bigint": sa.BigInteger,
    "float": sa.Double,
    "bool": sa.Boolean,
    "timestamp": lambda: sa.DateTime(timezone=False),
    "json": sa.Text,
    "longtext": sa.Text,
}

metadata = sa.MetaData()
TABLE = {
    name: sa.Table(
        name, metadata,
        *[sa.Column(col, _TYPES[kind](), primary_key=col in S.PRIMARY_KEYS[name],
                    nullable=col not in S.PRIMARY_KEYS[name])
          for col, kind in cols],
        *[sa.Index(f"ix_{name}_{'_'.join(cols)}", *cols) for cols in S.INDEXES.get(name, ())],
    )
    for name, cols in S.TABLES.items()
}


def engine(url: str) -> sa.Engine:
    """An engine for ``url``; for SQLite the file's directory is created and writers wait for
    each other (Spark partitions write concurrently) instead of failing with 'database is locked'.
    """
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return sa.create_engine(url, connect_args={"timeout": 120})
    return sa.create_engine(url, pool_pre_ping=True)


def create_tables(eng: sa.Engine) -> None:
    """Create every SOADS table, column and index that does not exist yet.

    A database made by an older version lacks the columns added since (for example
    ``object_score.surprisal``): they are all nullable value columns, so they are added with
    ``ALTER TABLE`` (logged). A missing key column cannot be added that way and raises.
    """
    try:
        metadata.create_all(eng)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as e:
        # another process (a job starting beside this one) created a table between the check
        # and the CREATE: what it made is what this one wanted, so go on from there
        if "already exists" not in str(e):
            raise
        metadata.create_all(eng)
    inspector = sa.inspect(eng)
    for name, t in TABLE.items():
        have = {c["name"] for c in inspector.get_columns(name)}
        for col in t.columns:
            if col.name in have:
                continue
            if col.primary_key:
                raise RuntimeError(
                    f"table {name} in {eng.url.render_as_string(hide_password=True)} has no key "
                    f"column {col.name}: it was made by another version; drop it or use a new "
                    "database")
            ddl = (f"ALTER TABLE {eng.dialect.identifier_preparer.quote(name)} ADD COLUMN "
                   f"{eng.dialect.identifier_preparer.quote(col.name)} "
                   f"{col.type.compile(dialect=eng.dialect)} NULL")
            with eng.begin() as conn:
                conn.exec_driver_sql(ddl)
            logger.warning("added column %s.%s (the table was made by an older version)",
                           name, col.name)
    for t in TABLE.values():  # create_all skips the indexes of tables that already existed
        for ix in t.indexes:
            ix.create(eng, checkfirst=True)


def _insert(eng: sa.Engine, name: str):
    if eng.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif eng.dialect.name in ("mysql", "mariadb"):
        from sqlalchemy.dialects.mysql import insert
    else:
        raise ValueError(f"unsupported database dialect {eng.dialect.name!r} (sqlite or mysql)")
    return insert(TABLE[name])


def upsert(conn: sa.Connection, name: str, rows: Sequence[dict],
           keep: Sequence[str] = ()) -> int:
    """Insert ``rows`` into table ``name``, replacing rows with the same primary key (but for
    the columns in ``keep``, which an existing row keeps).

    Idempotent: the same rows upserted twice leave the table as after once.
    """
    if not rows:
        return 0
    stmt = _insert(conn.engine, name)
    keys = S.PRIMARY_KEYS[name]
    values = [c for c, _ in S.TABLES[name] if c not in keys and c not in keep]
    if conn.dialect.name == "sqlite":
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: stmt.excluded[c] for c in values})
    else:
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in values})
    conn.execute(stmt, list(rows))
    return len(rows)


def _json_cols(name: str) -> list[str]:
    return [c for c, kind in S.TABLES[name] if kind == "json"]


def _to_row(name: str, rec: dict) -> dict:
    row = {}
    for col, kind in S.TABLES[name]:
        v = rec.get(col)
        if kind == "json" and v is not None and not isinstance(v, str):
            v = json.dumps(list(v) if not isinstance(v, (dict, list)) else v)
        elif hasattr(v, "item"):  # numpy scalar
            v = v.item()
        if kind == "timestamp" and v is not None and getattr(v, "tzinfo", None) is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)  # stored as naive UTC
        if hasattr(v, "to_pydatetime"):
            v = v.to_pydatetime()
        row[col] = v
    return row


def write_rows(url: str, name: str, records: Iterable[dict], chunk: int = 5000) -> int:
    """Upsert records (dicts with the table's columns) in chunks; returns the number written."""
    eng = engine(url)
    n = 0
    try:
        buf: list[dict] = []
        with eng.begin() as conn:
            for rec in records:
                buf.append(_to_row(name, rec))
                if len(buf) >= chunk:
                    n += upsert(conn, name, buf)
                    buf = []
            n += upsert(conn, name, buf)
    finally:
        eng.dispose()
    return n


def write_dataframe(df, url: str, name: str, chunk: int = 5000) -> None:
    """Upsert a Spark DataFrame into table ``name`` from the executors (no collect).

    The DataFrame must have the table's columns; array columns of json kind become JSON text.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType

    cols = [c for c, _ in S.TABLES[name]]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"DataFrame for table {name} lacks column(s) {missing}")
    as_json = {c for c in _json_cols(name) if not isinstance(df.schema[c].dataType, StringType)}
    sel = [F.to_json(F.col(c)).alias(c) if c in as_json else F.col(c) for c in cols]

    def write_partition(rows):
        write_rows(url, name, (r.asDict() for r in rows), chunk)

    df.select(*sel).foreachPartition(write_partition)


def clear(url: str, name: str, where: dict | None = None) -> None:
    """Delete the rows of table ``name`` (those matching ``where`` column=value, if given)."""
    eng = engine(url)
    try:
        with eng.begin() as conn:
            stmt = TABLE[name].delete()
            for k, v in (where or {}).items():
                stmt = stmt.where(TABLE[name].c[k] == v)
            conn.execute(stmt)
    finally:
        eng.dispose()


def read_table(url: str | sa.Engine, name: str, where: dict | None = None,
               order_by: Sequence[str] = ()) -> list[dict]:
    """Rows of a (small) table as dicts, JSON columns decoded. ``url`` may be an engine a
    caller keeps (a streaming writer: connecting to MySQL costs ~50 ms)."""
    eng = engine(url) if isinstance(url, str) else url
    try:
        stmt = sa.select(TABLE[name])
        for k, v in (where or {}).items():
            stmt = stmt.where(TABLE[name].c[k] == v)
        stmt = stmt.order_by(*[TABLE[name].c[c] for c in order_by])
        with eng.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
    finally:
        if isinstance(url, str):
            eng.dispose()
    for r in rows:
        for c in _json_cols(name):
            if r.get(c) is not None:
                r[c] = json.loads(r[c])
    return rows


def latest_run(url: str | sa.Engine) -> dict | None:
    """The newest mining run (by created_at), or None when nothing was mined yet."""
    runs = read_table(url, "mining_run", order_by=[S.CREATED_AT])
    return runs[-1] if runs else None


# -- streaming sinks: increments and the batch ledger (soads.storage.sinks) ------------------


def increment(conn: sa.Connection, name: str, rows: Sequence[dict], counters: Sequence[str]) -> int:
    """Insert ``rows``, or add their ``counters`` to the row with the same primary key.

    Not idempotent by itself: callers claim the batch in the ledger first (:func:`claim_batch`)
    in the same transaction.
    """
    if not rows:
        return 0
    stmt = _insert(conn.engine, name)
    t = TABLE[name]
    if conn.dialect.name == "sqlite":
        stmt = stmt.on_conflict_do_update(
            index_elements=list(S.PRIMARY_KEYS[name]),
            set_={c: t.c[c] + stmt.excluded[c] for c in counters})
    else:
        stmt = stmt.on_duplicate_key_update({c: t.c[c] + stmt.inserted[c] for c in counters})
    conn.execute(stmt, list(rows))
    return len(rows)


def claim_batch(conn: sa.Connection, sink: str, batch_id: int) -> bool:
    """Record ``(sink, batch_id)`` in the ledger (table sink_batch) inside the caller's
    transaction; False when it is already there (the batch was written: skip it)."""
    import datetime as dt

    t = TABLE["sink_batch"]
    done = conn.execute(sa.select(t.c[S.BATCH_ID]).where(
        t.c[S.SINK] == sink, t.c[S.BATCH_ID] == int(batch_id))).first()
    if done is not None:
        return False
    conn.execute(t.insert().values({
        S.SINK: sink, S.BATCH_ID: int(batch_id),
        S.CREATED_AT: dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}))
    return True
