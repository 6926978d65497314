# Phenexplain CLI image.
#   CPU (default):  docker build -t phenexplain .
#   CUDA:           docker build --build-arg TORCH_VARIANT=cuda -t phenexplain:cuda .
# The CUDA variant takes PyPI's torch wheel, which bundles the CUDA runtime; the host needs an
# NVIDIA driver and the container toolkit (docker run --gpus all ...).
FROM python:3.11-slim-bookworm

ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DVC_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true

RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 1000 phenexplain \
    && useradd --uid 1000 --gid phenexplain --create-home phenexplain

WORKDIR /app

# torch first, from the wheel set matching the variant, so the constraints below never swap it.
RUN if [ "$TORCH_VARIANT" = "cpu" ]; then \
      pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu; \
    else \
      pip install "torch==${TORCH_VERSION}"; \
    fi

COPY pyproject.toml constraints.txt README.md ./
COPY phenexplain ./phenexplain
RUN pip install -c constraints.txt .

USER phenexplain
WORKDIR /work
ENTRYPOINT ["phenexplain"]
CMD ["--help"]
