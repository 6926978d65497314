# Phenexplain image: the `phenexplain` CLI as entry point, plus prefect, mlflow and dvc for workers.
#
#   CPU (default):  docker build -t phenexplain:cpu .
#   CUDA:           docker build --build-arg TORCH_VARIANT=cuda -t phenexplain:cuda .
#   other wheels:   docker build --build-arg TORCH_VARIANT=cuda \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t ... .
#
# TORCH_VARIANT picks where torch==TORCH_VERSION comes from: `cpu` takes the CPU-only wheel from
# PyTorch's CPU index (about 200 MB); `cuda` takes PyPI's Linux wheel, which bundles the CUDA
# runtime (several GB), so no CUDA base image is needed: the host needs an NVIDIA driver and the
# NVIDIA container toolkit (`docker run --gpus all ...`). TORCH_INDEX_URL, when set, overrides the
# index for either variant. Everything else installs with the exact pins of constraints.txt;
# torch is installed first so that the constraints (torch==2.13.0, which 2.13.0+cpu satisfies)
# never swap it for another build.
#
# Two stages: the build stage fills a virtual environment at /opt/venv, the runtime stage copies
# it next to a plain Python and runs as an unprivileged user with a numeric UID (so Kubernetes'
# runAsNonRoot can check it). No HEALTHCHECK: the image runs one-shot CLI commands and Prefect
# workers; the long-running services that use it define their own checks (infra/docker-compose.yml).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN python -m venv /opt/venv

RUN case "${TORCH_VARIANT}" in \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, not '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac \
    && pip install --index-url "${index}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY phenexplain ./phenexplain
RUN pip install -c constraints.txt '.[service]' \
    && python -c "import torch, phenexplain; print('torch', torch.__version__)"


FROM ${PYTHON_IMAGE} AS runtime

ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="phenexplain" \
      org.opencontainers.image.description="Conditional StyleGAN2 for cell microscopy: CLI and workers" \
      org.opencontainers.image.licenses="MIT" \
      org.phenexplain.torch-variant="${TORCH_VARIANT}"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    PHENEXPLAIN_CACHE=/home/phenexplain/.cache/phenexplain

# git: DVC and Prefect's git_clone pull step call it. Debian's stable point releases are what we
# want here, so the version is left to the base image's suite rather than pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 phenexplain \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/phenexplain phenexplain \
    && mkdir -p /work \
    && chown 10001:10001 /work

COPY --from=build /opt/venv /opt/venv
# Flow code for process workers (prefect.yaml's working directory in the image).
COPY flows /app/flows
COPY params.yaml /app/params.yaml

USER 10001:10001
WORKDIR /work
ENTRYPOINT ["phenexplain"]
CMD ["--help"]
