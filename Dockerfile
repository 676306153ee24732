# syntax=docker/dockerfile:1
#
# Two images from one file (docker-compose.yml builds both):
#   docker build --target bot    -t likeness-bot .      Discord + Telegram bots: no torch, a few hundred MB
#   docker build --target worker -t likeness-worker .   GPU worker: PyTorch with CUDA, diffusers, dlib
#
# Nothing secret is baked in: tokens and URLs come from the environment at run time (`.env` via compose).
# Both images run as the unprivileged user `likeness` (uid 10001) and keep state under /data.

ARG PYTHON_IMAGE=python:3.11-slim
# A PyTorch runtime image brings Python 3.11, torch and the CUDA/cuDNN runtime matched to each other.
# Override with `--build-arg WORKER_BASE=...` (or WORKER_BASE_IMAGE in .env) for another CUDA version.
ARG WORKER_BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

# --- wheel: build the likeness package once, install it into both images ----------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY likeness ./likeness
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- bot: the chat front ends ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS bot
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LIKENESS_DATA_DIR=/data/likeness
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin likeness \
 && mkdir -p /data/likeness && chown -R likeness:likeness /data
COPY --from=wheel /wheels /wheels
# Only the bot extras: the bots never import torch (a test checks), so the image stays small.
RUN wheel="$(ls /wheels/*.whl)" && pip install "${wheel}[discord,telegram]" && rm -rf /wheels
USER likeness
WORKDIR /home/likeness
HEALTHCHECK --interval=60s --timeout=15s --start-period=20s --retries=3 \
  CMD ["likeness", "doctor", "--only", "redis"]
ENTRYPOINT ["likeness"]
CMD ["--help"]

# --- worker: generation on one GPU ---------------------------------------------------------------------
FROM ${WORKER_BASE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/data/hf \
    LIKENESS_DATA_DIR=/data/likeness \
    LIKENESS_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin likeness \
 && mkdir -p /data/hf /data/likeness && chown -R likeness:likeness /data
COPY --from=wheel /wheels /wheels
# torch is already in the base image at the CUDA build we want: pip keeps it because it satisfies
# `torch>=…` in the worker extra, so no CPU wheel replaces it.
RUN wheel="$(ls /wheels/*.whl)" && pip install "${wheel}[worker]" && rm -rf /wheels \
 && python -c "import torch; assert torch.version.cuda, 'torch in the worker image must be a CUDA build'"
USER likeness
WORKDIR /home/likeness
# The Hugging Face cache lives on a volume: weights survive rebuilds and are shared by scaled workers.
VOLUME ["/data/hf"]
# Healthy = Redis answers and the GPU is usable (the process itself is watched by the restart policy).
HEALTHCHECK --interval=60s --timeout=30s --start-period=120s --retries=3 \
  CMD ["likeness", "doctor", "--only", "redis,device"]
ENTRYPOINT ["likeness"]
CMD ["worker"]
