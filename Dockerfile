# syntax=docker/dockerfile:1
# One image for the Dataflow workers (the Beam SDK harness, GPU-ready) and the flex-template
# launcher: the launcher binary is copied in from Google's launcher base image.
#
#   make image                      # builds and pushes $(IMAGE); see the README's Dataflow section
#   docker build --build-arg BAKE_MODEL=models/my-gemma -t IMAGE .   # bake a preset into /opt/model
ARG BEAM_VERSION=2.77.0
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS launcher

FROM apache/beam_python3.11_sdk:${BEAM_VERSION}
COPY --from=launcher /opt/google/dataflow/python_template_launcher \
     /opt/google/dataflow/python_template_launcher

# Keras reads KERAS_BACKEND at import: set for every process, the SDK harness's included.
ENV KERAS_BACKEND=jax \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_ENABLE_ONEDNN_OPTS=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIAGE_CACHE_DIR=/opt/chat-triage/cache

WORKDIR /opt/chat-triage

# Dependencies first (jax[cuda12] included): this layer is rebuilt only when pyproject.toml
# changes, not for every code change. The stub packages let pip resolve the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p triage handlers prompts review \
 && touch triage/__init__.py handlers/__init__.py prompts/__init__.py review/__init__.py \
 && pip install '.[gpu]' \
 && pip uninstall -y chat-triage \
 && rm -rf triage handlers prompts review

# The code, with the prompt templates as package data.
COPY triage triage
COPY handlers handlers
COPY prompts prompts
COPY review review
RUN pip install --no-deps . && python -c "import triage.pipeline, handlers.gemma"

# Optionally a model preset baked in (a directory in the build context): --model_preset=/opt/model.
# The default bakes the triage model that `make setup` builds (Gemma 3 270M with the committed
# LoRA adapter merged); BAKE_MODEL=dataflow/no-model bakes none, for jobs that load a gs://
# preset at load_model instead.
ARG BAKE_MODEL=models/triage-gemma3-270m
COPY ${BAKE_MODEL} /opt/model

# The flex-template launcher runs this file; the workers run Beam's boot entrypoint.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/chat-triage/triage/dataflow_main.py
ENTRYPOINT ["/opt/apache/beam/boot"]
