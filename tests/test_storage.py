import datetime as dt
import os
import sqlite3

import pytest

from soads import schema as S
from soads.storage import ddl, tables

SQL = os.path.join(os.path.dirname(__file__), "..", "sql")


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_sql_files_are_the_ddl_the_code_writes(dialect):
    with open(os.path.join(SQL, f"{dialect}.sql")) as fh:
        assert fh.read() == ddl.ddl(dialect), f"regenerate: python -m soads.storage.ddl {dialect}"


def test_sqlite_ddl_creates_exactly_the_schema_columns(tmp_path):
    con = sqlite3.connect(tmp_path / "x.db")
    with open(os.path.join(SQL, "sqlite.sql")) as fh:
        con.executescript(fh.read())
    for name, cols in S.TABLES.items():
        info = con.execute(f"PRAGMA table_info({name})").fetchall()
        assert [r[1] for r in info] == [c for c, _ in cols]
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        assert tuple(pk) == S.PRIMARY_KEYS[name]


def test_mysql_ddl_mentions_every_column_and_key():
    text = open(os.path.join(SQL, "mysql.sql")).read()
    for name, cols in S.TABLES.items():
        block = text.split(f"CREATE TABLE IF NOT EXISTS {name} (")[1].split(";")[0]
        assert [line.split()[0] for line in block.strip().splitlines()[:len(cols)]] == [c for c, _ in cols]
        assert f"PRIMARY KEY ({', '.join(S.PRIMARY_KEYS[name])})" in block


def test_upsert_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    eng = tables.engine(url)
    tables.create_tables(eng)
    rows = [{S.A: "a", S.B: "b", S.FREQ: 3, S.SUPPORT: 2}, {S.A: "b", S.B: "c", S.FREQ: 1, S.SUPPORT: 1}]
    tables.write_rows(url, "relational_dependency", rows)
    tables.write_rows(url, "relational_dependency", rows)
    tables.write_rows(url, "relational_dependency", [{S.A: "a", S.B: "b", S.FREQ: 4, S.SUPPORT: 2}])
    got = tables.read_table(url, "relational_dependency", order_by=[S.A])
    assert [(r[S.A], r[S.B], r[S.FREQ], r[S.SUPPORT]) for r in got] == [("a", "b", 4, 2), ("b", "c", 1, 1)]


def test_create_tables_adds_the_columns_an_older_version_lacked(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    eng = tables.engine(url)
    with eng.begin() as conn:  # object_score as it was before the surprisal column
        conn.exec_driver_sql("CREATE TABLE object_score (oid VARCHAR(255) PRIMARY KEY, "
                             "score FLOAT, raw FLOAT, pattern TEXT, last_time DATETIME, "
                             "run_id VARCHAR(255))")
        conn.exec_driver_sql("INSERT INTO object_score (oid, score) VALUES ('o1', 0.5)")
    tables.create_tables(eng)
    cols = [c["name"] for c in sa.inspect(eng).get_columns("object_score")]
    assert sorted(cols) == sorted(c for c, _ in S.TABLES["object_score"])
    tables.write_rows(url, "object_score", [{S.OID: "o2", S.SCORE: 0.25, S.SURPRISAL: 1.5}])
    got = {r[S.OID]: (r[S.SCORE], r[S.SURPRISAL]) for r in tables.read_table(url, "object_score")}
    assert got == {"o1": (0.5, None), "o2": (0.25, 1.5)}
    tables.create_tables(eng)  # nothing left to add

    with eng.begin() as conn:  # a key column cannot be added
        conn.exec_driver_sql("DROP TABLE sink_batch")
        conn.exec_driver_sql("CREATE TABLE sink_batch (batch_id INTEGER PRIMARY KEY)")
    with pytest.raises(RuntimeError, match="no key column sink"):
        tables.create_tables(eng)


def test_write_dataframe_from_executors_and_read_back(spark, tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    tables.create_tables(tables.engine(url))
    t = dt.datetime(2024, 1, 1, 10)
    df = spark.createDataFrame(
        [("o1", 1.0, 36.0, ["A", "B"], 0.1, t, "r1", 0.0, False, None, "m1", None),
         ("o2", 0.5, 10.0, None, 2.5, t, "r1", 7.5, True, '{"step": 1}', "m1", 3)],
        "oid string, score double, raw double, pattern array<string>, surprisal double, "
        "last_time timestamp, run_id string, anomaly double, is_anomaly boolean, "
        "explanation string, model_run_id string, batch_id bigint",
    ).repartition(2)
    tables.write_dataframe(df, url, "object_score")
    got = tables.read_table(url, "object_score", order_by=[S.OID])
    assert [(r[S.OID], r[S.SCORE], r[S.PATTERN], r[S.SURPRISAL], r[S.LAST_TIME]) for r in got] == [
        ("o1", 1.0, ["A", "B"], 0.1, t), ("o2", 0.5, None, 2.5, t)]
    # the context detector's columns: the explanation is JSON text already, stored as given
    assert [(r[S.ANOMALY], r[S.IS_ANOMALY], r[S.EXPLANATION], r[S.MODEL_RUN_ID]) for r in got] \
        == [(0.0, False, None, "m1"), (7.5, True, {"step": 1}, "m1")]
