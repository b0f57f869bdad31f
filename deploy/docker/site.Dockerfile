# syntax=docker/dockerfile:1
# A hospital site: Flower's SuperNode with this site's data (`cmrfl site join`), and the
# site's one-shots (`cmrfl site init`, `cmrfl site ingest`, `cmrfl site check`,
# `cmrfl registry pull`). Build from the repository root:
#   docker build -f deploy/docker/site.Dockerfile -t cmrfl-site .
# CPU by default. For an NVIDIA GPU, build with a CUDA wheel index of torch 2.13 from
# pytorch.org's install matrix, e.g.
#   docker build -f deploy/docker/site.Dockerfile -t cmrfl-site:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# and run it with the host's driver exposed (NVIDIA Container Toolkit: `docker run --gpus all`,
# or `gpus: all` in compose). The CUDA wheels carry their own CUDA runtime, so the slim
# Python base stays; run config `device = "auto"` picks the GPU when torch sees one.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/cmrfl/venv
ENV PATH=/opt/cmrfl/venv/bin:$PATH
# torch first, from the chosen index, so the project's `torch>=…` is already met;
# TORCH_SPEC pins it.
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
RUN pip install -e .

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/cmrfl /opt/cmrfl
ENV PATH=/opt/cmrfl/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/cmrfl
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/cmrfl --shell /usr/sbin/nologin cmrfl \
 && mkdir -p /site /data /outbox \
 && chown cmrfl:cmrfl /site /data /outbox
USER 10001:10001
WORKDIR /site
# /site: site.toml, keys/, trust/, the de-identified case store, the privacy ledger,
# pulled models: everything that must survive an upgrade. Mount points, not volumes:
# /data (the hospital's DICOM export, read-only for `cmrfl site ingest`) and /outbox
# (public files the site hands to the consortium: its SuperNode public key).
VOLUME ["/site"]
# No EXPOSE: the SuperNode only connects out; its ClientApp port is loopback-only.
# Healthy = everything `site check` checks, including that the SuperLink answers and its
# certificate verifies against the pinned CA (about 2 s; a lost SuperLink shows here).
HEALTHCHECK --interval=5m --timeout=60s --start-period=2m --retries=2 \
  CMD ["cmrfl", "site", "check", "--site-dir", "/site"]
ENTRYPOINT ["cmrfl"]
CMD ["site", "join", "--site-dir", "/site"]
