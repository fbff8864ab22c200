# syntax=docker/dockerfile:1
# The agent image: the TPM node agent (the DaemonSet) and the gate and seal containers of training
# pods (the operator's AICERT_AGENT_IMAGE). Build it with a daemon:
#
#   docker build -f images/agent.Dockerfile --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t aicert-agent .
#
# or without one, reproducibly: `make images` (images/build.py reads this file, a strict subset of
# the Dockerfile syntax, and refuses anything else; see docs/images.md).

# The wheels: the locked dependencies (tpm2-pytss compiled against Debian's libtss2) and the project.
FROM docker.io/library/debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251 AS build
RUN apt-get update \
 && apt-get install --yes --no-install-recommends gcc libtss2-dev pkg-config python3-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY images/agent.requirements.txt images/
COPY verifier/src verifier/src/
COPY contract/src contract/src/
COPY kube/src kube/src/
COPY node-agent/src node-agent/src/
COPY operator/src operator/src/
RUN python3 -m venv /tmp/pip \
 && CFLAGS=-g0 /tmp/pip/bin/pip wheel --disable-pip-version-check --require-hashes --only-binary=:all: --no-binary=tpm2-pytss --wheel-dir=/wheels --requirement=images/agent.requirements.txt \
 && /tmp/pip/bin/pip wheel --disable-pip-version-check --no-deps --wheel-dir=/wheels .

# The image: Debian's Python 3.11 and libtss2 (tpm2-pytss links ESYS, FAPI, RC and the TCTI loader),
# the wheels in a venv at /opt/venv, byte-compiled (the root filesystem is read-only in the pods).
FROM docker.io/library/debian:bookworm-20260918-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libtss2-esys-3.0.2-0 libtss2-fapi1 libtss2-rc0 libtss2-tcti-device0 libtss2-tcti-swtpm0 libtss2-tctildr0 python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --disable-pip-version-check --no-cache-dir --no-index --no-compile --find-links=/tmp/wheels 'aicert-k8s[agent]' \
 && /opt/venv/bin/pip uninstall --disable-pip-version-check --yes pip setuptools \
 && PYTHONHASHSEED=0 /opt/venv/bin/python -m compileall -f -q -j 0 --invalidation-mode=checked-hash /opt/venv/lib/python3.11/site-packages \
 && rm -rf /tmp/wheels
RUN groupadd --gid 65532 nonroot \
 && useradd --no-log-init --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The DaemonSet runs the agent as root (it reads every training volume); gate and seal run as this.
USER 65532:65532
WORKDIR /
ARG VERSION
ARG REVISION
ARG SOURCE=https://github.com/example/aicert-k8s
LABEL org.opencontainers.image.title="aicert-agent" \
      org.opencontainers.image.description="AICert TPM node agent and the gate/seal containers of certified training pods" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENTRYPOINT ["/opt/venv/bin/aicert-agent"]
