# The README's commands. Each sets up .venv from the project's own files the first time.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3.11

.PHONY: demo test lint checkpoint bench system-deps kafka clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build first: a plain "torch" requirement would pull the multi-gigabyte CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

checkpoint: $(BIN)/.installed
	$(BIN)/python -m models.train --preset demo --out checkpoints/demo

demo: $(BIN)/.installed
	$(BIN)/streamproc demo $(ARGS)

test: $(BIN)/.installed system-deps kafka
	$(BIN)/pytest -q

# Apache Kafka's jars (deploy/kafka/pom.xml -> var/kafka/lib); the demo and the tests also fetch them on first use.
kafka: $(BIN)/.installed
	$(BIN)/python -c "from streamproc.kafka.runtime import ensure_kafka_jars; print(ensure_kafka_jars())"

# Lint, format and types: CI runs this before the tests.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Quix Streams, the peer in the pipeline bench, pins another confluent-kafka: its own venv.
QUIX_VENV := var/quix-venv

$(QUIX_VENV)/bin/python:
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install -q quixstreams

checkpoints/demo/config.json: $(BIN)/.installed
	$(BIN)/python -m models.train --preset demo --out checkpoints/demo

bench: $(BIN)/.installed checkpoints/demo/config.json $(QUIX_VENV)/bin/python
	$(BIN)/python bench/pipeline_bench.py --quix-python $(QUIX_VENV)/bin/python
	$(BIN)/python bench/scorer_bench.py --checkpoint checkpoints/demo --threads 1
	$(BIN)/python bench/latency_bench.py --checkpoint checkpoints/demo --rates 250,1000,1500 --keep-going --duration-s 25
	$(BIN)/python bench/commit_bench.py --checkpoint checkpoints/demo

clean:
	rm -rf $(VENV) var checkpoints
