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
# The database password is in no committed file (conf/services.toml): soads reads it from
# SOADS_DB_PASSWORD, or from the file SOADS_DB_PASSWORD_FILE names. Make's development default is
# a file outside the clone that `make up` fills once with a random password (mode 600); set
# either variable yourself to use another one.
export SOADS_DB_PASSWORD_FILE ?= $(SOADS_CACHE)/services/mariadb/password
# V=1: every step of `make up` / `make down` and the client libraries' INFO lines
SERVICES := $(PY) -m soads.services$(if $(V), --verbose)

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

# The real parts (Kafka, MariaDB, HBase + Thrift, Alertmanager) are installed and started by the project itself.
# A part that fails to start fails `make test` (after the tests ran, and the parts are stopped):
# under CI=true its integration tests fail too, elsewhere they skip, but the run is not green.
test: venv
	@up=0; $(MAKE) --no-print-directory up || up=$$?; \
	$(PY) -m pytest -q; rc=$$?; \
	$(MAKE) --no-print-directory down; \
	if [ $$up -ne 0 ]; then echo "make test: FAILED, make up failed: the integration tests" \
	  "ran without the real services" >&2; exit $$up; fi; exit $$rc

up: venv
	@if [ -z "$$SOADS_DB_PASSWORD" ] && [ ! -s "$$SOADS_DB_PASSWORD_FILE" ]; then \
	  mkdir -p "$$(dirname "$$SOADS_DB_PASSWORD_FILE")" && (umask 077; \
	  $(PY) -c 'import secrets; print(secrets.token_urlsafe(18))' > "$$SOADS_DB_PASSWORD_FILE") && \
	  echo "wrote a development database password to $$SOADS_DB_PASSWORD_FILE"; fi
	$(SERVICES) up

down:
	$(SERVICES) down

status:
	$(SERVICES) status

bench: venv
	$(VENV)/bin/soads bench parse
	$(VENV)/bin/soads bench score
	$(VENV)/bin/soads bench mine

clean-data:
	rm -rf soads-data
