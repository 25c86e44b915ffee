# chat-triage entry points. Every install step lives here, so a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A tiny random Gemma 2-architecture preset, built offline: its replies are noise (tests).
TINY_PRESET := models/tiny-gemma2
# The demo model: a small Gemma 2-architecture model trained from scratch on synthetic chats by
# `make demo-model` (committed, about 4 MB; the default --model_preset for local runs).
DEMO_MODEL := models/demo-gemma2
# Recipe of the demo model (make demo-model): data, size, training.
DEMO_TRAIN_N := 2400
DEMO_TRAIN_SEED := 1
DEMO_EVAL_N := 300
DEMO_EVAL_SEED := 2

.PHONY: setup test lint format demo demo-review demo-files demo-model eval bench browser clean

setup: $(BIN)/.installed $(TINY_PRESET)/config.json browser

# Headless Chromium and its WebDriver for the review app's browser test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

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
demo: setup $(DEMO_MODEL)/config.json
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(DEMO_MODEL) \
		--no_warm_up

# The demo, then the review queue on its drafts in a browser (until Ctrl-C).
demo-review: setup $(DEMO_MODEL)/config.json
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(DEMO_MODEL) \
		--no_warm_up --review

# Train the demo model from scratch on synthetic chats (about 8 minutes on 2 CPU cores).
demo-model: $(BIN)/.installed
	rm -rf $(DEMO_MODEL) models/demo-base
	$(MAKE) $(DEMO_MODEL)/config.json

$(DEMO_MODEL)/config.json: | $(BIN)/.installed
	mkdir -p data
	$(BIN)/python -m triage.synthetic --n $(DEMO_TRAIN_N) --seed $(DEMO_TRAIN_SEED) --out data/train.jsonl
	$(BIN)/python -m handlers.tiny_preset models/demo-base --vocab_size 4000 --num_layers 4 \
		--hidden_dim 128 --corpus data/train.jsonl prompts/*.toml
	$(BIN)/triage finetune --model_preset models/demo-base --examples data/train.jsonl \
		--out $(DEMO_MODEL) --epochs 2 --lora_rank 0 --seed 0
	rm -rf models/demo-base

# Held-out synthetic chats (another seed) through the real handler and parser.
eval: setup $(DEMO_MODEL)/config.json
	mkdir -p data
	$(BIN)/python -m triage.synthetic --n $(DEMO_EVAL_N) --seed $(DEMO_EVAL_SEED) --out data/heldout.jsonl
	$(BIN)/triage eval --model_preset $(DEMO_MODEL) --examples data/heldout.jsonl

# The same chats in file mode (no emulators): out/file-demo/*.jsonl and a report.
demo-files: setup
	$(BIN)/triage run --input examples/chats.jsonl --output-dir out/file-demo
	$(BIN)/python -m triage.report out/file-demo

# reference vs naive vs ours on the same model and stream; MODEL=<preset> for another model.
MODEL ?= $(DEMO_MODEL)
bench: setup
	$(BIN)/python -m bench.run --model $(MODEL)

clean:
	rm -rf $(VENV) $(TINY_PRESET) models/demo-base data out .pytest_cache .ruff_cache
