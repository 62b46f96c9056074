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

.PHONY: venv demo test bench clean-data

$(STAMP): setup.cfg constraints.txt
	@mkdir -p $(SOADS_CACHE)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@rm -f $(VENV)/.soads-*; touch $@

venv: $(STAMP)

demo: venv
	$(VENV)/bin/soads demo

test: venv
	$(PY) -m pytest -q

bench: venv
	$(VENV)/bin/soads bench parse
	$(VENV)/bin/soads bench score
	$(VENV)/bin/soads bench mine

clean-data:
	rm -rf soads-data
