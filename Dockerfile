# syntax=docker/dockerfile:1
# optiserve serving image. CPU by default (onnxruntime, and LiteRT for .tflite artifacts); a CUDA image with
# onnxruntime-gpu and TensorRT with --build-arg TARGET=gpu. The serving stage needs no torch and no TF.
#   docker build -t optiserve:cpu .
#   docker build --build-arg TARGET=gpu -t optiserve:gpu .
#   docker run -p 8000:8000 -p 8080:8080 -v "$PWD/artifacts:/artifacts:ro" optiserve:cpu /artifacts/digits
ARG TARGET=cpu

# 1. Build the project wheel and every dependency wheel (pyproject.toml decides what).
FROM python:3.11-slim-bookworm AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY optimize ./optimize
COPY serve ./serve
COPY optiserve ./optiserve
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# 2a. CPU runtime: onnxruntime, and LiteRT (ai-edge-litert) from the `litert` extra.
FROM python:3.11-slim-bookworm AS runtime-cpu
ENV EXTRAS="[litert]" ONNXRUNTIME="onnxruntime"
RUN python -m venv /opt/venv

# 2b. GPU runtime: CUDA + cuDNN, Python 3.11, onnxruntime-gpu and TensorRT from the `gpu` extra.
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 AS runtime-gpu
ENV EXTRAS="[gpu]" ONNXRUNTIME="onnxruntime-gpu"
# The CUDA base image's own Ubuntu release pins these packages.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

# 3. The image: the project installed from wheels into /opt/venv, run as a non-root user.
# hadolint ignore=DL3006
FROM runtime-${TARGET}
COPY --from=wheels /wheels /wheels
# On GPU, onnxruntime-gpu replaces the CPU onnxruntime (both install the same module).
RUN /opt/venv/bin/pip install --no-cache-dir --find-links /wheels "optiserve${EXTRAS}" \
    && if [ "${ONNXRUNTIME}" = "onnxruntime-gpu" ]; then \
        /opt/venv/bin/pip uninstall -y onnxruntime \
        && /opt/venv/bin/pip install --no-cache-dir --no-deps --force-reinstall onnxruntime-gpu; \
    fi \
    && rm -rf /wheels \
    && useradd --create-home --uid 1000 optiserve
ENV PATH="/opt/venv/bin:${PATH}"
USER 1000
WORKDIR /home/optiserve
EXPOSE 8000 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["optiserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--metrics-port", "8080"]
