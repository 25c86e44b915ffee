# chat-triage entry points. Every install step lives here, so a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A tiny random Gemma 2-architecture preset, built offline; the default --model_preset.
TINY_PRESET := models/tiny-gemma2

.PHONY: setup test lint format demo demo-files clean

setup: $(BIN)/.installed $(TINY_PRESET)/config.json

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(TINY_PRESET)/config.json: handlers/tiny_preset.py $(wildcard prompts/*.toml) | $(BIN)/.installed
	$(BIN)/python -m handlers.tiny_preset $(TINY_PRESET) --corpus prompts/*.toml

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: setup lint
	$(BIN)/python -m pytest

# The streaming service on local Pub/Sub and BigQuery emulators, then a report.
demo: setup
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl

# The same chats in file mode (no emulators): out/file-demo/*.jsonl and a report.
demo-files: setup
	$(BIN)/triage run --input examples/chats.jsonl --output-dir out/file-demo
	$(BIN)/python -m triage.report out/file-demo

clean:
	rm -rf $(VENV) models out .pytest_cache .ruff_cache
