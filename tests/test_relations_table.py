"""mining.relations = "table": the miner reads the RELATIONAL DEPENDENCY TABLE instead of
recomputing it (unit tests on SQLite + Parquet; the MySQL + HBase run, fed by the streaming
job, is in tests/test_stream_failures.py)."""
import pytest
from pyspark.testing import assertDataFrameEqual

from soads import config, pipeline, schema as S
from soads.dependencies import relation_counts
from soads.mining.brute_force import frequent_patterns, minsup_count
from soads.simulator.generate import simulate
from soads.storage import tables


def test_read_relations_gives_the_stored_rows(spark, tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    eng = tables.engine(url)
    tables.create_tables(eng)
    eng.dispose()
    tables.write_rows(url, "relational_dependency", [
        {S.A: "A", S.B: "B", S.FREQ: 3, S.SUPPORT: 2}, {S.A: "B", S.B: "C", S.FREQ: 1,
                                                        S.SUPPORT: 1}])
    got = pipeline.read_relations(spark, url)
    assert got.columns == [S.A, S.B, S.FREQ, S.SUPPORT]
    assertDataFrameEqual(got, [("A", "B", 3, 2), ("B", "C", 1, 1)])


def test_mining_from_the_table_reads_it_and_equals_brute_force(spark, tmp_path):
    root = tmp_path
    base = [f"storage.root={root}", f"storage.db_url=sqlite:///{root}/soads.db",
            "mining.minsup=0.05"]
    simulate(str(root / "epcis"), n_objects=200, seed=9, events_per_file=2000)
    report = pipeline.Report()
    cfg = config.load(overrides=base)
    pipeline.ingest(spark, [str(root / "epcis")], cfg, report)
    seqs, rel = pipeline.sequences_and_relations(spark, cfg, report)  # writes the table
    sequences = [list(r[S.SEQUENCE]) for r in seqs.collect()]
    assert {(r[S.A], r[S.B]): (r[S.FREQ], r[S.SUPPORT]) for r in rel.collect()} == \
        relation_counts(sequences)

    cfg_t = config.load(overrides=base + ["mining.relations=table"])
    seqs_t, rel_t = pipeline.sequences_and_relations(spark, cfg_t, pipeline.Report())
    assertDataFrameEqual(rel_t, rel.select(S.A, S.B, S.FREQ, S.SUPPORT))
    rows = pipeline.mine(spark, seqs_t, rel_t, cfg_t, pipeline.Report())
    expected = frequent_patterns(sequences, minsup_count(0.05, len(sequences)), 25)
    assert {tuple(r[S.PATTERN]): r[S.SUPPORT] for r in rows} == \
        {tuple(p): n for p, n in expected.items()}

    # the table really is the source: a relation removed from it is no longer a seed
    tables.clear(cfg.storage.db_url, "relational_dependency")
    empty = pipeline.sequences_and_relations(spark, cfg_t, pipeline.Report())[1]
    assert pipeline.mine(spark, seqs_t, empty, cfg_t, pipeline.Report()) == []


def test_unknown_relations_source_is_an_error(spark, tmp_path):
    cfg = config.load(overrides=[f"storage.root={tmp_path}", "mining.relations=guess",
                                 f"storage.db_url=sqlite:///{tmp_path}/x.db"])
    (tmp_path / "event_log").mkdir()
    with pytest.raises(ValueError, match="recompute or table"):
        pipeline.sequences_and_relations(spark, cfg, pipeline.Report())
