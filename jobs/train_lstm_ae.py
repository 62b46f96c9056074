"""Batch job "LSTM-AE training": sensor history (CSV/Parquet readings or SKAB CSV) -> a new
version in the model registry (soads.sensor.train), optionally promoted.

Usage: spark-submit jobs/train_lstm_ae.py --data history.parquet [--sensor-conf conf/sensor.toml]
    [--set sensor.stream.registry=soads-data/sensor-models] [--preset skab] [--promote]
   or: python jobs/train_lstm_ae.py ...

Training runs on the driver (torch, one thread): the history of a plant's sensors fits in memory
(SKAB: 9,405 rows); Spark is not needed for the fit itself.
"""
import argparse
import logging
import sys

from soads import config
from soads.sensor import train


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--sensor-conf", default="conf/sensor.toml")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--preset")
    p.add_argument("--promote", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    conf = config.load([args.sensor_conf], args.set).sensor
    version = train.train_version(train.read_history(args.data), conf.params(args.preset),
                                  conf.stream.registry, promote=args.promote,
                                  drift_conf=conf.drift, source=args.data)
    logging.getLogger("train_lstm_ae").info("registered %s", version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
