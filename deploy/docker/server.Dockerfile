# syntax=docker/dockerfile:1
# The consortium side: the SuperLink (`cmrfl server start`) and, from the same image, the
# model registry (`cmrfl registry serve`) and the admin one-shots (`cmrfl pki init`,
# `cmrfl server register-site`, `cmrfl train`, `cmrfl server login`). Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t cmrfl-server .
# The server trains nothing itself (the sites do), so it gets torch's CPU build.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/cmrfl/venv
ENV PATH=/opt/cmrfl/venv/bin:$PATH
# torch first, from its own index, so the project's `torch>=…` is already met and pip
# never pulls a CUDA build (same approach as scripts/bootstrap.sh); TORCH_SPEC pins it.
# hadolint ignore=DL3013
RUN pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
WORKDIR /opt/cmrfl/src
COPY pyproject.toml README.md ./
COPY cmr ./cmr
COPY tasks ./tasks
COPY privacy ./privacy
COPY fairness ./fairness
COPY client ./client
COPY server ./server
COPY cmrfl ./cmrfl
# Editable: `cmrfl train` bundles the Flower App from this source tree (pyproject.toml
# included), which a plain site-packages install does not keep.
RUN pip install -e .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/cmrfl /opt/cmrfl
ENV PATH=/opt/cmrfl/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/cmrfl
# A fixed non-root uid, so named volumes and Kubernetes' fsGroup line up with it.
# /pki/secret, /pki/superlink, /pki/public: where volumes holding the three folders of
# `cmrfl pki init` are mounted (a fresh named volume takes the owner and mode from here).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/cmrfl --shell /usr/sbin/nologin cmrfl \
 && mkdir -p /pki/secret /pki/superlink /pki/public /state /registry \
 && chmod 0700 /pki/secret \
 && chown -R cmrfl:cmrfl /pki /state /registry
USER 10001:10001
# /state: the SuperLink's database (superlink.sqlite) and, as the ServerApp's working
# directory, its run outputs and per-round checkpoints (run config run-dir, default
# runs/latest), so a restarted SuperLink resumes from the last completed round.
WORKDIR /state
# /registry: the registry's SQLite stores and artifacts when no PostgreSQL/object store is
# configured. Mount points, not volumes: /pki, for the SuperLink only PKI_DIR/superlink
# (read-only: its certificate and key, ca.pem, admin.pub; `server start` refuses a folder
# holding a signing key); for the admin one-shots /pki/secret and /pki/public.
VOLUME ["/state", "/registry"]
# 9092: Fleet, Control (consortium admin only) and Runtime APIs on one HTTPS port (Flower 1.42).
# 5000: the registry.
EXPOSE 9092 5000
# Healthy = the SuperLink answers GET /health over TLS with a certificate the consortium
# CA verifies, under the name localhost (always in its certificate).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import ssl, urllib.request; urllib.request.urlopen('https://localhost:9092/health', context=ssl.create_default_context(cafile='/pki/ca.pem'), timeout=5)"]
ENTRYPOINT ["cmrfl"]
CMD ["server", "start", "--pki", "/pki", "--state-dir", "/state", "--host", "0.0.0.0", "--port", "9092"]
