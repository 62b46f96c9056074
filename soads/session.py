"""SparkSession from configuration."""
from __future__ import annotations

import logging
import os
import sys

from soads.config import SparkConf

logger = logging.getLogger(__name__)

# Spark's own start-up INFO lines and console progress bars stay off unless a caller asks
# (``extra``): the CLI and the jobs print their own progress, and two displays garble each other.
QUIET = {"spark.log.level": "WARN", "spark.ui.showConsoleProgress": "false"}


def build(conf: SparkConf, master: str | None = None, extra: dict[str, str] | None = None):
    """Create (or return the running) SparkSession for ``conf``.

    Python workers must run the same interpreter as the driver (they need pyarrow, numpy,
    Biopython); we pin ``spark.pyspark.python`` to it unless the environment already chose one.

    Under ``spark-submit`` (the JVM is already running: ``PYSPARK_GATEWAY_PORT`` is set) the
    submit's ``--master`` wins over ``[spark] master`` unless ``master`` is passed here. The driver
    binds to 127.0.0.1 only for a ``local`` master: on a cluster the executors must reach it.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if master is None and "PYSPARK_GATEWAY_PORT" in os.environ:
        master = _submitted_master()
    else:
        master = master or conf.master
        builder = builder.master(master)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1")
    builder = (
        builder.appName(conf.app_name)
        .config("spark.sql.shuffle.partitions", str(conf.shuffle_partitions))
        .config("spark.driver.memory", conf.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.enabled", "false")
    )
    if conf.java_options:
        builder = (builder.config("spark.driver.extraJavaOptions", conf.java_options)
                   .config("spark.executor.extraJavaOptions", conf.java_options))
    if not conf.whole_stage_codegen:
        builder = builder.config("spark.sql.codegen.wholeStage", "false")
    if conf.codegen_factory_mode:
        builder = builder.config("spark.sql.codegen.factoryMode", conf.codegen_factory_mode)
    if conf.checkpoint_file_manager:
        builder = builder.config("spark.sql.streaming.checkpointFileManagerClass",
                                 conf.checkpoint_file_manager)
    for k, v in {**QUIET, **(extra or {})}.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    logger.info("spark session %s on %s", spark.version, spark.sparkContext.master)
    return spark


def _submitted_master() -> str:
    """The master spark-submit started this driver with (its JVM's ``spark.master``)."""
    from pyspark import SparkConf as _PySparkConf

    return _PySparkConf().get("spark.master", "local[*]")
