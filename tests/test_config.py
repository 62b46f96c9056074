import dataclasses
import os

import pytest

from soads import config

CONF = os.path.join(os.path.dirname(__file__), "..", "conf", "soads.toml")
SENSOR = os.path.join(os.path.dirname(CONF), "sensor.toml")
PW = {"SOADS_DB_PASSWORD": "pw"}


def test_committed_conf_loads_and_matches_defaults():
    cfg = config.load([CONF], env={})
    # the embedded default streams from a directory of files; the dataclass default is Kafka
    assert cfg.stream.source == "files"
    # the stream's event log and tables are [storage]'s: on the embedded default the Parquet
    # event log under root, the one the batch commands read
    assert not {"event_log", "db_url"} & {f.name for f in dataclasses.fields(cfg.stream)}
    assert "db_url" not in {f.name for f in dataclasses.fields(cfg.sensor.stream)}
    assert config.event_log_location(cfg) == os.path.abspath("soads-data")
    assert cfg.stream.__class__.__name__ == "StreamConf"
    assert dataclasses.replace(cfg, stream=config.StreamConf()) == config.Config()


def test_services_stream_conf_is_a_stream_and_a_storage_section():
    here = os.path.dirname(CONF)
    cfg = config.load([CONF, os.path.join(here, "services-stream.toml")], env=PW)
    # one [storage] for the event job and the batch commands: the miner given the same files
    # reads the HBase event log and the MariaDB tables the stream wrote
    assert cfg.stream.source == "kafka" and cfg.storage.event_log.startswith("hbase://")
    assert config.event_log_location(cfg) == "hbase://127.0.0.1:9090/soads"
    # the committed URL names the user; the password comes from the environment
    assert cfg.storage.db_url == "mysql+pymysql://soads:pw@127.0.0.1:3306/soads"
    with pytest.raises(config.ConfigError, match="storage.db_url: the MySQL URL has no password"):
        config.load([CONF, os.path.join(here, "services-stream.toml")], env={})
    # the stream job's Spark settings ride in the same file
    assert cfg.spark.java_options == "-XX:TieredStopAtLevel=1"
    assert cfg.spark.whole_stage_codegen is False and cfg.spark.shuffle_partitions == 2
    assert cfg.stream.state_operator == "jvm"
    assert cfg.spark.codegen_factory_mode == "NO_CODEGEN"
    assert cfg.spark.checkpoint_file_manager.endswith(".FileSystemBasedCheckpointFileManager")
    # small micro-batches in 2 tasks, full ones (400 records) in 4
    assert (cfg.stream.min_partitions, cfg.stream.max_records_per_partition) == (2, 100)


def test_overrides_coerce_types():
    cfg = config.load([CONF], ["scoring.gap_open=-3", "scoring.maximal_only=true", "mining.max_length=5"])
    assert cfg.scoring.gap_open == -3.0 and cfg.scoring.maximal_only is True
    assert cfg.mining.max_length == 5


@pytest.mark.parametrize("override, message", [
    ("scoring.nope=1", "unknown key"), ("nosection.x=1", "unknown section"),
    ("scoring.match=abc", "expected float"), ("scoring", "section.key=value"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load([CONF], [override])


def test_missing_file_is_clear_error(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read config"):
        config.load([str(tmp_path / "none.toml")])


@pytest.mark.parametrize("override, message", [
    ("sensor.train.promote=maybe", "sensor.train.promote: expected true or false, got 'maybe'"),
    ("scoring.maximal_only=2", "scoring.maximal_only: expected true or false"),
    ("sensor.stream.window=ten", "sensor.stream.window: expected int"),
    ("sensor.presets.skab.epochs=1.5", "sensor.presets.skab.epochs: expected int"),
    ("sensor.presets.skab.epoch=3", r"unknown key\(s\) in \[sensor.presets.skab\]: epoch"),
    ("sensor.stream.nope=1", r"unknown key\(s\) in \[sensor.stream\]: nope"),
    ("hbase.thrift_port=x", "hbase.thrift_port: expected int"),
])
def test_every_section_is_strict(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load([CONF, SENSOR], [override], env={})


@pytest.mark.parametrize("text, message", [
    ('[scoring]\nmatch = "two"\n', "scoring.match: expected float, got 'two'"),
    ("[spark]\napp_name = 5\n", "spark.app_name: expected a string"),
    ("[sensor.train]\npromote = 1\n", "sensor.train.promote: expected true or false, got 1"),
    ('[sensor.stream]\nsensors = "a"\nwindow = 2.5\n', "sensor.stream.window: expected int"),
])
def test_wrong_types_in_a_file_name_the_key(tmp_path, text, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(config.ConfigError, match=message):
        config.load([bad], env={})


@pytest.mark.parametrize("text, message", [
    ('[stream]\ndb_url = "mysql+pymysql://soads@127.0.0.1:3306/soads"\n',
     "stream.db_url: moved to storage.db_url (one database for every job)"),
    ('[stream]\nevent_log = "hbase://127.0.0.1:9090/soads"\n',
     "stream.event_log: moved to storage.event_log (one event log for every job)"),
    ('[sensor.stream]\ndb_url = "sqlite:///soads-data/soads.db"\n',
     "sensor.stream.db_url: moved to storage.db_url (one database for every job)"),
])
def test_an_old_location_key_says_where_it_moved(tmp_path, text, message):
    # a conf file written before [storage] became the one place of the event log and the
    # database fails with one line naming the key and its new place, never silently
    old = tmp_path / "old.toml"
    old.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load([CONF, old], env={})
    assert str(err.value) == message
    key = message.split(":")[0]
    with pytest.raises(config.ConfigError) as err:  # as an override too
        config.load([CONF], [f"{key}=x"], env={})
    assert str(err.value) == message


def test_sensor_sections_load_through_the_one_loader():
    from soads.sensor.skab import SKAB_SENSORS

    sensor = config.load([SENSOR], ["sensor.presets.skab.epochs=3", "sensor.stream.sensors=a,b",
                                    "sensor.train.promote=yes"], env={}).sensor
    assert sensor.preset == "skab" and set(sensor.presets) == {"paper", "skab"}
    assert sensor.params() == {"window": 10, "hidden_size": 32, "latent_size": 4,
                               "batch_size": 128, "lr": 0.001, "epochs": 3,
                               "error_vector": "full", "shrinkage": 0.1, "smoothing": 1,
                               "score_method": "mahalanobis", "fpr": 0.01, "seed": 0}
    assert sensor.params("paper")["window"] == 3 and "score_method" not in sensor.params("paper")
    assert sensor.skab.kwargs() == {"pretrain": True, "pretrain_params": {"epochs": 5},
                                    "threshold_factor": 1.5, "inflate_scale": True}
    assert sensor.stream.sensors == ("a", "b") and sensor.train.promote is True
    assert sensor.drift.bound == 0.1 and sensor.stream.window == 10
    # the committed list and the default are SKAB's eight, as the SKAB reader names them
    assert config.load([SENSOR], env={}).sensor.stream.sensors == tuple(SKAB_SENSORS)
    assert config.SensorStreamConf().sensors == tuple(SKAB_SENSORS)
    with pytest.raises(KeyError, match="unknown sensor preset 'nope'"):
        sensor.params("nope")


def test_password_fills_mysql_urls_without_one(tmp_path):
    over = ["storage.db_url=mysql+pymysql://soads@db:3306/soads"]
    cfg = config.load(overrides=over, env={"SOADS_DB_PASSWORD": "p@ss"})
    assert cfg.storage.db_url == "mysql+pymysql://soads:p%40ss@db:3306/soads"
    given = config.load(overrides=["storage.db_url=mysql+pymysql://other:given@db/soads"],
                        env={"SOADS_DB_PASSWORD": "p@ss"})
    assert given.storage.db_url == "mysql+pymysql://other:given@db/soads"  # kept as given
    assert cfg.mariadb.password == "p@ss"
    with pytest.raises(config.ConfigError, match="storage.db_url: the MySQL URL has no password"):
        config.load(overrides=over, env={})
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(config.ConfigError, match="SOADS_DB_PASSWORD_FILE=.*empty"):
        config.load(overrides=over, env={"SOADS_DB_PASSWORD_FILE": str(empty)})
