import os

import pytest

from soads import config

CONF = os.path.join(os.path.dirname(__file__), "..", "conf", "soads.toml")


def test_committed_conf_loads_and_matches_defaults():
    assert config.load([CONF]) == config.Config()


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
