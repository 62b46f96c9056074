"""Real Kafka and MariaDB (soads.services): start them first with ``python -m soads.services up``.

Under ``CI=true`` an unreachable service fails these tests; elsewhere they skip with the reason.
"""
import json
import os
import random
import subprocess
import sys
import uuid

import pytest

from soads import schema as S
from soads import services
from streamtools import require  # fail under CI=true, skip elsewhere

SQL = os.path.join(os.path.dirname(__file__), "..", "sql")
TEN_MB = 10 * 1024 * 1024


def test_load_conf_reads_the_committed_file_and_env_overrides():
    conf = services.load_conf(env={"SOADS_DB_PASSWORD": "x'y", "SOADS_SERVICES_ROOT": "/tmp/r"})
    kafka = conf.kafka
    assert (kafka.host, kafka.port, kafka.controller_port) == ("127.0.0.1", 9092, 9093)
    assert conf.kafka.message_max_bytes >= TEN_MB
    assert (conf.mariadb.host, conf.mariadb.port, conf.mariadb.user) == ("127.0.0.1", 3306, "soads")
    assert conf.mariadb.password == "x'y"
    assert services.service_dir("kafka", conf) == services.Path("/tmp/r/kafka")
    assert services.mysql_url(conf) == "mysql+pymysql://soads:x%27y@127.0.0.1:3306/soads"


def test_load_conf_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "services.toml"
    bad.write_text("[kafka]\nprot = 9092\n")
    with pytest.raises(services.ServiceError, match="prot"):
        services.load_conf(bad)


def test_kafka_properties_bind_loopback_and_allow_16mb():
    props = services._kafka_properties(services.ServicesConf())
    lines = set(props.splitlines())
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in lines
    assert "controller.quorum.voters=1@127.0.0.1:9093" in lines
    assert "message.max.bytes=16777216" in lines
    assert "replica.fetch.max.bytes=16777216" in lines
    assert "offsets.topic.replication.factor=1" in lines


def test_status_of_a_service_that_never_ran(tmp_path):
    conf = services.ServicesConf(root=str(tmp_path))
    st = services.status(["kafka"], conf)["kafka"]
    assert (st["running"], st["pid"], st["healthy"]) == (False, None, False)
    services.down(["kafka"], conf)  # nothing to stop is fine
    with pytest.raises(services.ServiceError, match="unknown service"):
        services.status(["hbase2"], conf)


# --------------------------------------------------------------------------- real services

@pytest.fixture(scope="module")
def conf():
    return services.load_conf(env=os.environ)


def _require(name, conf):
    require(name, lambda: services.check(name, conf))


@pytest.fixture(scope="module")
def kafka(conf):
    _require("kafka", conf)
    return services.kafka_bootstrap(conf)


@pytest.fixture(scope="module")
def mariadb(conf):
    _require("mariadb", conf)
    return conf


@pytest.fixture()
def topic(kafka):
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"soads-test-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    admin.create_topics([NewTopic(name, 1, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


def _fresh_db(conf):
    """A new empty database the application user owns (soads_<hex>); dropped by the caller."""
    import pymysql

    m = conf.mariadb
    name = f"{m.database}_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    return conn, name


@pytest.fixture()
def fresh_db(mariadb):
    conn, name = _fresh_db(mariadb)
    yield name
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


@pytest.mark.integration
def test_up_is_idempotent_when_running(kafka, mariadb, conf):
    before = services.status(None, conf)
    after = services.up(None, conf)
    if before["kafka"]["running"]:  # started by soads.services (not, e.g., docker-compose)
        assert after["kafka"]["pid"] == before["kafka"]["pid"]
    if before["mariadb"]["running"]:
        assert after["mariadb"]["pid"] == before["mariadb"]["pid"]
    assert after["kafka"]["healthy"] and after["mariadb"]["healthy"]


@pytest.mark.integration
def test_kafka_round_trips_a_10mb_message(kafka, topic):
    from kafka import KafkaConsumer, KafkaProducer

    payload = random.Random(7).randbytes(TEN_MB)
    producer = KafkaProducer(bootstrap_servers=kafka, max_request_size=16 * 1024 * 1024, acks="all")
    producer.send(topic, key=b"doc-1", value=payload).get(timeout=60)
    producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                             max_partition_fetch_bytes=16 * 1024 * 1024,
                             fetch_max_bytes=32 * 1024 * 1024)
    got = []
    for _ in range(30):  # poll until the one record arrived (at most ~30 s)
        for records in consumer.poll(timeout_ms=1000).values():
            got += [(m.key, m.value) for m in records]
        if got:
            break
    consumer.close()
    assert len(got) == 1
    assert got[0][0] == b"doc-1"
    assert len(got[0][1]) == TEN_MB and got[0][1] == payload


_SPARK_READ = """
import json, sys
from soads.config import SparkConf
from soads.session import build

bootstrap, topic, jars = sys.argv[1], sys.argv[2], sys.argv[3]
spark = build(SparkConf(master="local[2]", shuffle_partitions=2, driver_memory="1g"),
              extra={"spark.jars": jars})
rows = (spark.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .selectExpr("CAST(key AS STRING) AS k", "CAST(value AS STRING) AS v", "offset")
        .orderBy("offset")
        .collect())
sys.stdout.write(json.dumps([[r.k, r.v, r.offset] for r in rows]) + "\\n")
spark.stop()
"""


@pytest.mark.integration
def test_spark_reads_a_kafka_topic_through_the_connector(kafka, topic, conf, tmp_path):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka)
    for i, doc in enumerate(["<a/>", "<b/>", "<c/>"]):
        producer.send(topic, key=f"k{i}".encode(), value=doc.encode())
    producer.flush()
    producer.close()

    # spark.jars counts only when the JVM starts, and the session-scoped `spark` fixture may
    # already be running without the connector: read in a fresh Python process
    jars = ",".join(services.spark_kafka_jars(conf))
    script = tmp_path / "read_kafka.py"
    script.write_text(_SPARK_READ)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    res = subprocess.run([sys.executable, str(script), kafka, topic, jars], capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert rows == [["k0", "<a/>", 0], ["k1", "<b/>", 1], ["k2", "<c/>", 2]]


@pytest.mark.integration
def test_mysql_upsert_is_idempotent(fresh_db, conf):
    from soads.storage import tables

    url = services.mysql_url(conf, fresh_db)
    eng = tables.engine(url)
    tables.create_tables(eng)
    eng.dispose()
    rows = [{S.A: "rp:assembly", S.B: "rp:test", S.FREQ: 3, S.SUPPORT: 2},
            {S.A: "rp:receiving", S.B: "rp:assembly", S.FREQ: 5, S.SUPPORT: 4}]
    assert tables.write_rows(url, "relational_dependency", rows) == 2
    assert tables.write_rows(url, "relational_dependency", rows) == 2
    order = [S.A, S.B]
    assert tables.read_table(url, "relational_dependency", order_by=order) == rows
    # an upsert with the same key replaces the value columns
    tables.write_rows(url, "relational_dependency", [{**rows[0], S.FREQ: 9}])
    got = tables.read_table(url, "relational_dependency", order_by=order)
    assert got == [{**rows[0], S.FREQ: 9}, rows[1]]


def _show_columns(conf, database):
    import pymysql

    m = conf.mariadb
    conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password,
                           database=database)
    out = {}
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        for (name,) in cur.fetchall():
            cur.execute(f"SHOW COLUMNS FROM `{name}`")
            out[name] = [(f, t, null, key) for f, t, null, key, _default, _extra in cur.fetchall()]
    conn.close()
    return out


@pytest.mark.integration
def test_mysql_sql_creates_the_columns_of_schema_tables(fresh_db, conf):
    import pymysql

    m = conf.mariadb
    ddl = open(os.path.join(SQL, "mysql.sql")).read()
    body = "\n".join(line for line in ddl.splitlines() if not line.lstrip().startswith("--"))
    conn = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password,
                           database=fresh_db)
    with conn.cursor() as cur:
        for stmt in filter(str.strip, body.split(";")):
            cur.execute(stmt)
    conn.commit()
    conn.close()

    cols = _show_columns(conf, fresh_db)
    assert set(cols) == set(S.TABLES)
    for name, spec in S.TABLES.items():
        assert [c[0] for c in cols[name]] == [c for c, _ in spec], name
        assert [c[0] for c in cols[name] if c[3] == "PRI"] == list(S.PRIMARY_KEYS[name]), name

    # and exactly what soads.storage.tables.create_tables makes (types, nullability, keys)
    from soads.storage import tables

    conn2, other = _fresh_db(conf)
    try:
        eng = tables.engine(services.mysql_url(conf, other))
        tables.create_tables(eng)
        eng.dispose()
        assert _show_columns(conf, other) == cols
    finally:
        with conn2.cursor() as cur:
            cur.execute(f"DROP DATABASE `{other}`")
        conn2.close()


def test_a_service_that_dies_at_start_reports_its_log(tmp_path):
    conf = services.ServicesConf(root=str(tmp_path), start_timeout=20)
    services.service_dir("kafka", conf).mkdir(parents=True)
    pid = services._spawn("kafka", ["sh", "-c", "echo 'bind failed: port busy'; exit 3"], conf)
    with pytest.raises(services.ServiceError, match="(?s)exited during start-up.*port busy"):
        services._wait_healthy("kafka", pid, lambda: 1 / 0, conf)


def test_a_service_that_never_answers_times_out_and_is_stopped(tmp_path):
    conf = services.ServicesConf(root=str(tmp_path), start_timeout=1.5)
    services.service_dir("mariadb", conf).mkdir(parents=True)
    pid = services._spawn("mariadb", ["sh", "-c", "echo still starting; exec sleep 60"], conf)

    def probe():
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(services.ServiceError, match="(?s)did not answer within 2s.*still starting"):
        services._wait_healthy("mariadb", pid, probe, conf)
    assert not services._alive(pid)
    assert not services._pid_file("mariadb", conf).exists()


def test_up_refuses_a_port_held_by_another_process(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        conf = services.ServicesConf(root=str(tmp_path),
                                     mariadb=services.MariaDBConf(port=port))
        with pytest.raises(services.ServiceError, match=f"127.0.0.1:{port} already in use"):
            services.up(["mariadb"], conf)
