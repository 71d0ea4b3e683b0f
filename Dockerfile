# The SpecVid image the k8s overlays run: this package on a Ray 2.60 base image.
#
#   make image                                   # CPU: registry.example.com/specvid:0.1.0-cpu
#   make image VARIANT=cuda                      # CUDA: registry.example.com/specvid:0.1.0-cuda
#
# torch comes first from the PyTorch index of the variant and is pinned again on the package's
# install, so no resolver swaps it for another build.
# The CUDA build passes RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128 and
# TORCH_INDEX=https://download.pytorch.org/whl/cu128 (the Makefile does).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONDONTWRITEBYTECODE=1

# A C++ compiler: `compile: true` models build their decode forward with inductor at start-up.
USER root
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
USER 1000
WORKDIR /home/ray/specvid
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
# Dependencies first (a layer that changes only with pyproject.toml), then the sources.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 specvid ./specvid
COPY --chown=1000:100 deployments ./deployments
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" ".[serve]"
COPY --chown=1000:100 serve_config.yaml ./

USER 1000
EXPOSE 8000
CMD ["serve", "run", "serve_config.yaml"]
