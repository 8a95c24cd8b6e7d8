# CPU by default; for GPUs: docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX=<a CUDA wheel index> .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=
ENV PYTHONUNBUFFERED=1 TENSION_DATA_DIR=/data TENSION_HOST=0.0.0.0 TENSION_PORT=8000
RUN (command -v python3 >/dev/null && python3 -m pip --version >/dev/null) || \
    (apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv && rm -rf /var/lib/apt/lists/*)
WORKDIR /srv/tension
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" ${TORCH_INDEX:+--index-url ${TORCH_INDEX}}
COPY pyproject.toml README.md ./
COPY app app
COPY workers workers
COPY frontend frontend
COPY migrations migrations
RUN pip install --no-cache-dir ".[postgres,ray]"
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "tension migrate && tension serve"]
