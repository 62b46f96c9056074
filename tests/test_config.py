import os

import pytest

from soads import config

CONF = os.path.join(os.path.dirname(__file__), "..", "conf", "soads.toml")


def test_committed_conf_loads_and_matches_defaults():
    cfg = config.load([CONF])
    # the embedded default streams from a directory of files; the dataclass default is Kafka
    assert cfg.stream.source == "files" and cfg.stream.db_url == cfg.storage.db_url
    assert cfg.stream.__class__.__name__ == "StreamConf"
    import dataclasses
    assert dataclasses.replace(cfg, stream=config.StreamConf()) == config.Config()


def test_services_stream_conf_is_a_stream_section():
    here = os.path.dirname(CONF)
    cfg = config.load([CONF, os.path.join(here, "services-stream.toml")])
    assert cfg.stream.source == "kafka" and cfg.stream.event_log.startswith("hbase://")
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
