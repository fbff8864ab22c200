# Two commands matter: `make demo` runs the main job, `make test` runs every test.
# Both install what they need: Debian packages (once), a .venv with the project.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config gcc bubblewrap \
  mmdebstrap python3-dev python3-venv skopeo \
  libc6-dev libseccomp-dev iproute2 iptables busybox-static apache2-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps venv test unit integration e2e lint demo demo-local bench schema crd-reference clean tools cluster-binaries node-binaries fuzz chart images
all: test

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,agent,operator,azure]'
	touch $@

venv: $(BIN)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv cluster-binaries node-binaries
	$(BIN)/pytest tests/integration -q

e2e: venv cluster-binaries
	$(BIN)/pytest tests/e2e -q

# Upstream etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at the pins in
# localcluster/go.mod: built once (about 10 min on 2 cores), then cached under ~/.cache/aicert.
cluster-binaries: venv
	$(BIN)/python localcluster/build.py --control-plane

# A real node's kubelet, containerd, runc, CNI plugins, pause and the registry it pulls from
# (localcluster/{,containerd/,runc/,registry/}go.mod; runc and pause need gcc and libseccomp-dev from
# deps): about 4 min after the control plane, cached.
node-binaries: venv deps
	$(BIN)/python localcluster/build.py --node

tools: cluster-binaries
	@mkdir -p bin
	install -m 0755 "$$($(BIN)/python localcluster/build.py --print-dir)/kubectl" bin/kubectl
	install -m 0755 "$$(PYTHONPATH=localcluster $(BIN)/python -m aicert_localcluster.helm)" bin/helm

# The Helm chart helm/aicert: `helm lint --strict` (with the digests it requires) and a package in
# build/. helm is pinned in localcluster/helm/go.mod, built once (about 3 min), cached in ~/.cache/aicert.
chart: venv
	@helm="$$(PYTHONPATH=localcluster $(BIN)/python -m aicert_localcluster.helm)" && \
	  "$$helm" lint --strict helm/aicert -f helm/aicert/ci/lint-values.yaml && \
	  "$$helm" package helm/aicert --destination build/

# The operator and agent images, from images/*.Dockerfile without a container daemon (mmdebstrap,
# bwrap; as root): OCI layouts in build/images/<name>/, printed as name@sha256:<manifest digest>.
# Reproducible; about 3 min the first time, then cached in ~/.cache/aicert/images. docs/images.md.
images: deps
	$(PYTHON) images/build.py

# The README's test command: lint, types and every test tier (unit, integration, e2e), on two
# pytest-xdist workers: one runs the real-node tests (e2e and the integration modules with real
# nodes, one after another: tests/conftest.py makes them one unit of work), the other everything
# else meanwhile, module by module in collection order (--no-loadscope-reorder keeps the real-node
# unit first). TEST_WORKERS=0 runs it all in one process (docs/performance.md, "The suite on two
# workers").
TEST_WORKERS ?= 2
test: lint cluster-binaries node-binaries
	$(BIN)/pytest tests -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

# The verifier's parsers, fuzzed longer than in `make test` (about 15 min): the property tests with
# FUZZ_SCALE times their examples, then the Atheris target for FUZZ_SECONDS. Its corpus grows in
# FUZZ_STATE across runs; a crash is written there as crash-* and replays with
#   AICERT_FUZZ_STATE=$(FUZZ_STATE) $(BIN)/python -m tests.fuzz.fuzz_verify FUZZ_STATE/crash-…
FUZZ_SCALE ?= 10
FUZZ_SECONDS ?= 600
FUZZ_STATE ?= $(or $(TMPDIR),/tmp)/aicert-fuzz
fuzz: venv
	AICERT_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest tests/fuzz -q -m fuzz --deselect tests/fuzz/test_atheris_bounded.py
	mkdir -p $(FUZZ_STATE)
	AICERT_FUZZ_STATE=$(FUZZ_STATE) $(BIN)/python -m tests.fuzz.fuzz_verify -max_total_time=$(FUZZ_SECONDS) \
	  -rss_limit_mb=2048 -timeout=30 -max_len=65536 -artifact_prefix=$(FUZZ_STATE)/ -print_final_stats=1

# The cluster path: control plane, registry, real nodes (a swtpm per TPM node), the chart's operator and agent; apply, watch, verify.
demo: venv cluster-binaries node-binaries deps
	$(BIN)/python examples/demo_cluster.py

# The same job without Kubernetes: aicert-agent run on a swtpm.
demo-local: venv
	$(BIN)/python examples/demo.py

bench: venv cluster-binaries
	$(BIN)/python benchmarks/bench_hash.py
	$(BIN)/python benchmarks/bench_certify.py
	$(BIN)/python benchmarks/bench_scale.py

schema: venv
	$(BIN)/python tools/export_schema.py

# The field tables of docs/crd-reference.md, from the CRD's schema and descriptions (crds/ is the source).
crd-reference: venv
	$(BIN)/python tools/crd_reference.py

clean:
	rm -rf demo-output bench-output .pytest_cache .mypy_cache .ruff_cache
