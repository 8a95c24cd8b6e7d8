# One file, two images (the same project, dependencies and Python; only torch and the base differ):
#   CPU (default):  docker build -t rm-tension-explorer:cpu .
#   CUDA:           docker build -t rm-tension-explorer:cuda \
#                     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 --build-arg TORCH_FLAVOR=cuda .
# TORCH_FLAVOR=cpu installs torch from PyTorch's CPU wheel index; cuda installs PyPI's torch, a CUDA build that
# brings its own CUDA libraries (the host needs only an NVIDIA driver recent enough for it). TORCH_INDEX overrides
# the index, e.g. https://download.pytorch.org/whl/cu126 for an older driver. The build fails if the torch it got
# is not the flavor asked for.
# Both bases are Ubuntu 24.04, so both images have the same Python: Ray refuses a node whose Python differs from
# the head's. The image runs the api by default (`tension migrate && tension serve`); docker-compose.yml runs
# the Ray nodes from it with `ray start`.
ARG BASE_IMAGE=ubuntu:24.04
FROM ${BASE_IMAGE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_FLAVOR=cpu
ARG TORCH_INDEX=
# postgres: the PostgreSQL driver; s3: s3fs, for an object-store artifact store (TENSION_ARTIFACT_STORE=s3://…).
ARG EXTRAS=postgres,s3
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TENSION_DATA_DIR=/data TENSION_HOST=0.0.0.0 TENSION_PORT=8000
RUN python3 -c "import ensurepip, venv" 2>/dev/null || \
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/*)
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/tension

# torch first, pinned and of the asked flavor (an unpinned one would be whatever PyPI has, a multi-GB CUDA build).
RUN set -eu; \
    case "$TORCH_FLAVOR" in \
      cpu) index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" ;; \
      cuda) index="${TORCH_INDEX:-}" ;; \
      *) echo "TORCH_FLAVOR must be cpu or cuda, not '$TORCH_FLAVOR'" >&2; exit 2 ;; \
    esac; \
    pip install "torch==${TORCH_VERSION}" ${index:+--index-url "$index"}; \
    python -c "import sys, torch; c = torch.version.cuda; print('torch', torch.__version__, 'CUDA', c); \
sys.exit(0 if (c is None) == ('$TORCH_FLAVOR' == 'cpu') else 'torch is not the $TORCH_FLAVOR flavor')"

# The dependencies, from pyproject.toml alone (a code change does not reinstall them), then Ray Serve's extras at
# the pinned Ray version (live ablation sessions run as Serve deployments), then the project itself.
# (an empty README.md stands in for the real one, which only the package's metadata reads)
COPY pyproject.toml ./
RUN mkdir -p app workers frontend migrations && touch README.md \
    && pip install ".[${EXTRAS}]" \
    && pip uninstall -y rm-tension-explorer \
    && pip install "ray[default,serve]==$(python -c 'import importlib.metadata as m; print(m.version("ray"))')" \
    && rm -rf app workers frontend migrations README.md build *.egg-info
COPY README.md ./
COPY app app
COPY workers workers
COPY frontend frontend
COPY migrations migrations
# (the import check runs from / so that it sees the installed package, not these sources)
RUN pip install --no-deps . && cd / && python -c "import torch, ray.serve, app.cli, workers.runner"

# Not root. The directories that compose mounts volumes on exist here, owned by this user, so fresh named volumes
# start writable (/data: the api's files; /artifacts: the shared artifact store; the Hugging Face cache).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin tension \
    && mkdir -p /data /artifacts /home/tension/.cache/huggingface \
    && chown -R tension:tension /data /artifacts /home/tension
USER tension
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "tension migrate && tension serve"]
