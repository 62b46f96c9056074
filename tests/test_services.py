"""Real Kafka, MariaDB, HBase and Alertmanager (soads.services): start them first with
``make up`` (or ``python -m soads.services up`` with SOADS_DB_PASSWORD or
SOADS_DB_PASSWORD_FILE set).

Under ``CI=true`` an unreachable service fails these tests; elsewhere they skip with the reason.
"""
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from soads import config, jars, schema as S
from soads import services
from soads.config import AlertmanagerConf, Config, HBaseConf, KafkaConf, MariaDBConf, ServicesConf
from soads.services import alertmanager as am_part, kafka as kafka_part, proc
from streamtools import require  # fail under CI=true, skip elsewhere

SQL = os.path.join(os.path.dirname(__file__), "..", "sql")
TEN_MB = 10 * 1024 * 1024


def test_committed_conf_and_env_overrides():
    conf = config.load([services.DEFAULT_CONF],
                       env={"SOADS_DB_PASSWORD": "x'y", "SOADS_SERVICES_ROOT": "/tmp/r"})
    kafka = conf.kafka
    assert (kafka.host, kafka.port, kafka.controller_port) == ("127.0.0.1", 9092, 9093)
    assert (kafka.version, kafka.spark_connector_version) == ("4.3.1", "4.2.0")
    assert conf.kafka.message_max_bytes >= TEN_MB
    assert (conf.mariadb.host, conf.mariadb.port, conf.mariadb.user) == ("127.0.0.1", 3306, "soads")
    assert conf.mariadb.password == "x'y" and "x'y" not in repr(conf)
    assert (conf.hbase.host, conf.hbase.thrift_port, conf.hbase.master_heap) == (
        "127.0.0.1", 9090, "2g")
    am = conf.alertmanager
    assert (am.host, am.port, am.webhook_url) == ("127.0.0.1", 9095, "")
    assert am.port not in (kafka.port, kafka.controller_port, conf.hbase.thrift_port)
    assert services.alertmanager_url(conf) == "http://127.0.0.1:9095"
    assert kafka_part.home(conf) == Path("/tmp/r/kafka")
    assert am_part.config_file(conf) == Path("/tmp/r/alertmanager/alertmanager.yml")
    assert services.mysql_url(conf) == "mysql+pymysql://soads:x%27y@127.0.0.1:3306/soads"
    assert services.hbase_location(conf, "p") == "127.0.0.1:9090/p"


def test_password_comes_from_a_file_or_is_a_clear_error(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    conf = config.load([services.DEFAULT_CONF], env={"SOADS_DB_PASSWORD_FILE": str(secret)})
    assert conf.mariadb.password == "from-file"
    # the variable wins over the file
    conf = config.load([services.DEFAULT_CONF],
                       env={"SOADS_DB_PASSWORD": "v", "SOADS_DB_PASSWORD_FILE": str(secret)})
    assert conf.mariadb.password == "v"
    with pytest.raises(config.ConfigError, match="SOADS_DB_PASSWORD_FILE=.*cannot read"):
        config.load([services.DEFAULT_CONF], env={"SOADS_DB_PASSWORD_FILE": str(tmp_path / "x")})
    bare = config.load([services.DEFAULT_CONF], env={})
    assert bare.mariadb.password == ""
    with pytest.raises(services.ServiceError, match="no database password.*SOADS_DB_PASSWORD"):
        services.mysql_url(bare)


def test_conf_rejects_unknown_keys_and_a_password_in_a_file(tmp_path):
    bad = tmp_path / "services.toml"
    bad.write_text("[kafka]\nprot = 9092\n")
    with pytest.raises(config.ConfigError, match="unknown key.*kafka.*prot"):
        config.load([bad], env={})
    bad.write_text("[hbase]\nthrift_port = \"ninety\"\n")
    with pytest.raises(config.ConfigError, match="hbase.thrift_port: expected int"):
        config.load([bad], env={})
    bad.write_text("[mariadb]\npassword = \"soads-dev\"\n")
    with pytest.raises(config.ConfigError, match="mariadb.password does not belong in a file"):
        config.load([bad], env={})


def test_no_committed_file_holds_the_development_password():
    root = os.path.join(os.path.dirname(__file__), "..")
    for name in ("conf/services.toml", "conf/services-stream.toml", "conf/docker.toml",
                 "docker-compose.yml", ".env.example"):
        with open(os.path.join(root, name)) as fh:
            assert "soads-dev" not in fh.read(), name


def test_kafka_properties_bind_loopback_and_allow_16mb():
    props = kafka_part.properties(Config())
    lines = set(props.splitlines())
    assert "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in lines
    assert "controller.quorum.voters=1@127.0.0.1:9093" in lines
    assert "message.max.bytes=16777216" in lines
    assert "replica.fetch.max.bytes=16777216" in lines
    assert "offsets.topic.replication.factor=1" in lines


def _amtool():
    found = shutil.which("amtool")
    if found is None:
        raise FileNotFoundError("amtool is not on PATH (package prometheus-alertmanager)")
    return found


def test_alertmanager_runs_our_rendered_config_on_loopback_without_gossip(tmp_path):
    conf = Config(services=ServicesConf(root=str(tmp_path)),
                  alertmanager=AlertmanagerConf(webhook_url="http://127.0.0.1:8080/hook"))
    argv = am_part._argv(conf, am_part.BINARY)
    assert "--web.listen-address=127.0.0.1:9095" in argv
    assert "--cluster.listen-address=" in argv  # one node: no gossip port
    assert f"--config.file={tmp_path / 'alertmanager' / 'alertmanager.yml'}" in argv
    assert f"--storage.path={tmp_path / 'alertmanager' / 'data'}" in argv
    text = am_part.render_config(conf)
    lines = text.splitlines()
    assert "  receiver: default" in lines and "  - name: default" in lines
    assert '  group_by: ["alertname", "line"]' in lines
    assert '      - url: "http://127.0.0.1:8080/hook"' in lines
    assert "webhook_configs" not in am_part.render_config(Config())
    # Alertmanager's own checker accepts both (amtool comes with the package `make up` installs)
    amtool = require("amtool", _amtool)
    for cfg in (conf, Config()):
        path = tmp_path / "alertmanager.yml"
        path.write_text(am_part.render_config(cfg))
        res = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
    # a bad setting is refused before Alertmanager starts, with amtool's reason
    bad = Config(services=ServicesConf(root=str(tmp_path)),
                 alertmanager=AlertmanagerConf(group_wait="soon"))
    am_part.home(bad).mkdir(parents=True)
    am_part.config_file(bad).write_text(am_part.render_config(bad))
    with pytest.raises(services.ServiceError, match='not a valid duration string: "soon"'):
        am_part.check_config(bad)


def test_status_of_services_that_never_ran(tmp_path, caplog):
    conf = Config(services=ServicesConf(root=str(tmp_path)))
    st = services.status(None, conf)
    assert list(st) == ["kafka", "mariadb", "hbase", "alertmanager"]
    for name, s in st.items():
        assert (s["running"], s["pid"], s["healthy"], s["error"]) == (False, None, False, None)
        assert s["dir"] == str(tmp_path.resolve() / name) or s["dir"] == str(tmp_path / name)
    with caplog.at_level(logging.INFO, logger="soads.services"):
        services.down(None, conf)  # nothing to stop is fine; stopped in reverse start order
    said = [r.getMessage() for r in caplog.records if r.getMessage().endswith("not running")]
    assert said == ["alertmanager is not running", "hbase is not running",
                    "mariadb is not running", "kafka is not running"]
    with pytest.raises(services.ServiceError, match="unknown service"):
        services.status(["hbase2"], conf)


def test_command_line_status_prints_json(tmp_path, capsys):
    conf = tmp_path / "services.toml"
    conf.write_text(f'[services]\nroot = "{tmp_path}"\n')
    assert services.main(["status", "--conf", str(conf)]) == 3  # reported: none healthy
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"kafka", "mariadb", "hbase", "alertmanager"}
    assert not any(s["running"] for s in out.values())
    assert services.main(["status", "nosuch", "--conf", str(conf)]) == 1


# --------------------------------------------------------------------------- real services

@pytest.fixture(scope="module")
def conf():
    return config.load([services.DEFAULT_CONF])


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


@pytest.fixture(scope="module")
def hbase(conf):
    _require("hbase", conf)
    return services.hbase_location(conf)


@pytest.mark.integration
def test_up_is_idempotent_when_running(kafka, mariadb, hbase, alertmanager, conf):
    # the services `make up` started: running under soads.services, with pid files
    before = services.status(None, conf)
    assert all(s["running"] and s["healthy"] for s in before.values()), before
    after = services.up(None, conf)
    for name in services.NAMES:
        assert after[name]["healthy"], (name, after[name]["error"])
        assert after[name]["pid"] == before[name]["pid"], name
    assert after["hbase"]["thrift_pid"] == before["hbase"]["thrift_pid"]


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
    connector = jars.spark_kafka_jars(conf.kafka.spark_connector_version, conf.services.jars)
    assert any(os.path.basename(j).startswith("spark-sql-kafka-0-10_2.13-4.2.0") for j in connector)
    script = tmp_path / "read_kafka.py"
    script.write_text(_SPARK_READ)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1"}
    res = subprocess.run([sys.executable, str(script), kafka, topic, ",".join(connector)],
                         capture_output=True,
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
    pid_file, log = tmp_path / "x.pid", tmp_path / "x.log"
    pid = proc.spawn(["sh", "-c", "echo 'bind failed: port busy'; exit 3"], log, pid_file, tmp_path)
    assert pid_file.read_text().strip() == str(pid)
    with pytest.raises(services.ServiceError, match="(?s)exited during start-up.*port busy"):
        proc.wait_healthy("kafka", lambda: 1 / 0, 20, [(pid, pid_file)], [log])
    assert not pid_file.exists()


def test_a_service_that_never_answers_times_out_and_is_stopped(tmp_path):
    pid_file, log = tmp_path / "x.pid", tmp_path / "x.log"
    pid = proc.spawn(["sh", "-c", "echo still starting; exec sleep 60"], log, pid_file, tmp_path)

    def probe():
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(services.ServiceError, match="(?s)did not answer within 2s.*still starting"):
        proc.wait_healthy("mariadb", probe, 1.5, [(pid, pid_file)], [log])
    assert not proc.alive(pid)
    assert not pid_file.exists()


def test_a_pid_file_of_another_program_is_stale(tmp_path):
    pid_file = tmp_path / "kafka.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but this is pytest, not kafka.Kafka
    assert proc.running_pid(pid_file, ["kafka.Kafka", str(tmp_path)]) is None
    assert not pid_file.exists()


@pytest.mark.parametrize("name", services.NAMES)
def test_up_refuses_a_port_held_by_another_process(tmp_path, name):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        conf = Config(services=ServicesConf(root=str(tmp_path), jars=str(tmp_path / "jars")),
                      kafka=KafkaConf(port=port), mariadb=MariaDBConf(port=port, password="x"),
                      hbase=HBaseConf(thrift_port=port), alertmanager=AlertmanagerConf(port=port))
        with pytest.raises(services.ServiceError,
                           match=f"{name}: .*127.0.0.1:{port}.* already in use"):
            services.up([name], conf)
        # nothing was started or fetched
        assert not (tmp_path / "jars").exists()
        assert services.status([name], conf)[name]["running"] is False


def test_a_jar_set_is_fetched_once_per_pom_and_versions(tmp_path):
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    out = tmp_path / "spark-4.2.0"
    out.mkdir()
    assert not jars.ready(out, pom, "spark", {"spark.kafka.version": "4.2.0"})
    (out / ".resolved").write_text(jars._stamp(pom, "spark", {"spark.kafka.version": "4.2.0"}))
    assert jars.ready(out, pom, "spark", {"spark.kafka.version": "4.2.0"})
    assert not jars.ready(out, pom, "spark", {"spark.kafka.version": "4.3.0"})
    pom.write_text("<project><!-- changed --></project>")
    assert not jars.ready(out, pom, "spark", {"spark.kafka.version": "4.2.0"})
    # a copy stamped by an older soads, under a directory named by its version: kept
    old = tmp_path / "broker-4.3.1"
    old.mkdir()
    (old / ".complete").write_text("mvn ...\n")
    assert jars.ready(old, pom, "broker", {"kafka.version": "4.3.1"})
