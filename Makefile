# SOADS. Two commands for a fresh machine:  make demo   |   make test
# Downloads are cached outside the clone: the venv under ~/.cache/soads, pip's cache, ~/.m2.
SHELL := /bin/bash
PYTHON ?= python3
SOADS_CACHE ?= $(HOME)/.cache/soads
VENV ?= $(SOADS_CACHE)/venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.soads-$(shell cat setup.cfg constraints.txt | sha1sum | cut -c1-12)-$(shell pwd | sha1sum | cut -c1-8)
export PIP_CACHE_DIR ?= $(HOME)/.cache/pip
export PYSPARK_PYTHON := $(PY)
export PYSPARK_DRIVER_PYTHON := $(PY)
export SPARK_LOCAL_IP := 127.0.0.1
# The venv is shared by every clone (an editable install points at one of them): this clone's
# code comes first for the driver, subprocesses and Spark's Python workers alike.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv demo test bench up down status clean-data

$(STAMP): setup.cfg constraints.txt
	@mkdir -p $(SOADS_CACHE)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test,mysql,kafka,hbase,torch]'
	@rm -f $(VENV)/.soads-*; touch $@

venv: $(STAMP)

# This clone's `soads` and jobs in your shell (venv, PYTHONPATH, PYSPARK_PYTHON, SPARK_LOCAL_IP)
env: venv
	@echo 'run:  source env.sh'

demo: venv
	$(VENV)/bin/soads demo

# The real parts (Kafka, MariaDB, HBase + Thrift) are installed and started by the project itself;
# a part that fails to start makes its integration tests fail (CI=true), never skip.
test: venv
	-$(MAKE) --no-print-directory up
	$(PY) -m pytest -q; rc=$$?; $(MAKE) --no-print-directory down; exit $$rc

up: venv
	$(PY) -m soads.services up
	$(PY) -m soads.hbase_service up

down:
	-$(PY) -m soads.hbase_service down
	-$(PY) -m soads.services down

status:
	$(PY) -m soads.services status
	$(PY) -m soads.hbase_service status

bench: venv
	$(VENV)/bin/soads bench parse
	$(VENV)/bin/soads bench score
	$(VENV)/bin/soads bench mine

clean-data:
	rm -rf soads-data
