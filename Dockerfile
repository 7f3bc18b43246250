# The guardstream image: the CLI as entry point (`worker` by default), installed from
# requirements.lock into a virtualenv that the runtime stage copies, running as a non-root user.
#   docker build -t guardstream .                                    # CPU torch
#   docker build -t guardstream:cuda --build-arg VARIANT=cuda .      # CUDA torch and vLLM
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
# torch 2.13.0 comes from PyTorch's index for the variant, everything else as pinned in the lock; the CUDA
# variant adds vLLM and lets pip resolve what it needs beyond the lock (a vLLM that wants another
# torch fails the build)
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_CUDA=https://download.pytorch.org/whl/cu128
ARG VLLM_VERSION=0.32.0
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/guardstream/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/guardstream
COPY requirements.lock ./
RUN index="$TORCH_INDEX_CPU"; if [ "$VARIANT" = cuda ]; then index="$TORCH_INDEX_CUDA"; fi \
    && pip install --no-deps --index-url "$index" torch==2.13.0 \
    && grep -v '^torch==' requirements.lock > rest.lock \
    && pip install --no-deps -r rest.lock \
    && pip install --no-deps faust-streaming==0.15.3 dashscope==2.0.2 \
    && if [ "$VARIANT" = cuda ]; then pip install --extra-index-url "$index" "vllm==${VLLM_VERSION}" torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY guardstream guardstream
COPY schemas schemas
COPY topology topology
COPY workers workers
RUN pip install --no-deps /src

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/guardstream/bin:$PATH PYTHONUNBUFFERED=1 GUARDSTREAM_HOME=/var/lib/guardstream
RUN useradd --create-home --uid 10001 --user-group guardstream \
    && mkdir -p /var/lib/guardstream && chown guardstream:guardstream /var/lib/guardstream
COPY --from=build /opt/guardstream /opt/guardstream
USER 10001:10001
WORKDIR /var/lib/guardstream
ENTRYPOINT ["guardstream"]
CMD ["worker"]
