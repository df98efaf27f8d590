# lambdahost — setup, run, test. `make install` is idempotent and is what `run` and `test` use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := bubblewrap python3.11-minimal nodejs iproute2 util-linux zip e2fsprogs lxcfs postgresql nftables
HOST ?= 127.0.0.1
PORT ?= 9000
STAMP := $(VENV)/.installed
# The AWS SDKs the managed runtimes ship (pins in sdks/), installed off the host's paths into
# $(SDKS)/<runtime>/ and mounted read-only into sandboxes (`invoke/sdks.py`). Each is built in
# a staging dir and swapped in whole; its copy of the pin file, written last, is the stamp.
SDKS := .cache/runtime-sdks
PY_SDK := $(SDKS)/python3.11
NODE_SDK := $(SDKS)/nodejs20.x
RUNTIME_PYTHON := /usr/bin/python3.11
# What `make lint` type-checks: strict where pyproject.toml's [tool.mypy] overrides say so.
# Grows to the whole package (a bare `mypy`) as the rest of it passes.
MYPY_PACKAGES := src/lambdahost

.PHONY: install sdks run test test-unit test-cgroup2 lint bench clean

install: $(STAMP) sdks

sdks: $(PY_SDK)/requirements.txt $(NODE_SDK)/package-lock.json

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	: "npm installs the runtimes' JS SDK: Debian's nodejs comes without it, NodeSource's with it"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  case "$$missing" in *postgresql*) \
	    echo "  (PostgreSQL's binaries only: lambdahost runs its own servers, so no main cluster)"; \
	    $$SUDO mkdir -p /etc/postgresql-common; \
	    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf || \
	      echo 'create_main_cluster = false' | $$SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null;; \
	  esac; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@# AWS's own runtime client, packaged into a test function's zip (tests run offline).
	$(BIN)/pip download -q --dest .cache/wheels --only-binary=:all: --python-version 3.11 \
	  --platform manylinux2014_x86_64 awslambdaric
	@touch $(STAMP)

# boto3 and botocore for python3.11, at AWS's place for them: /var/lang/lib/python3.11/site-packages.
# Bytecode is compiled by the sandbox's own interpreter: inside, the mount is read-only.
$(PY_SDK)/requirements.txt: sdks/python3.11/requirements.txt | $(STAMP)
	@echo "installing the python3.11 runtime's AWS SDK into $(PY_SDK)"
	@rm -rf $(PY_SDK).new && mkdir -p $(PY_SDK).new
	$(BIN)/pip install -q --disable-pip-version-check --no-compile --no-deps --require-hashes \
	  --only-binary=:all: --python-version 3.11 --implementation cp \
	  --target $(PY_SDK).new/site-packages -r $<
	@rm -rf $(PY_SDK).new/site-packages/bin
	$(RUNTIME_PYTHON) -m compileall -q -j 0 $(PY_SDK).new/site-packages
	@cp $< $(PY_SDK).new/requirements.txt
	@rm -rf $(PY_SDK).old; if [ -e $(PY_SDK) ]; then mv $(PY_SDK) $(PY_SDK).old; fi
	@mv $(PY_SDK).new $(PY_SDK) && rm -rf $(PY_SDK).old

# The AWS SDK for JavaScript v3 for nodejs20.x, at /var/runtime/node_modules as on AWS. Type
# declarations (dist-types, two thirds of the size) are never loaded at run time: dropped.
$(NODE_SDK)/package-lock.json: sdks/nodejs20.x/package.json sdks/nodejs20.x/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20 with npm"; exit 1; }
	@echo "installing the nodejs20.x runtime's AWS SDK into $(NODE_SDK)"
	@rm -rf $(NODE_SDK).new && mkdir -p $(NODE_SDK).new
	@cp sdks/nodejs20.x/package.json $(NODE_SDK).new/
	cd $(NODE_SDK).new && cp $(CURDIR)/sdks/nodejs20.x/package-lock.json . && \
	  npm ci -s --omit=dev --ignore-scripts --no-audit --no-fund && \
	  find node_modules -type d -name dist-types -prune -exec rm -rf {} +
	@rm -rf $(NODE_SDK).old; if [ -e $(NODE_SDK) ]; then mv $(NODE_SDK) $(NODE_SDK).old; fi
	@mv $(NODE_SDK).new $(NODE_SDK) && rm -rf $(NODE_SDK).old

run: install
	$(BIN)/lambdahost serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m mypy $(MYPY_PACKAGES)

# Every tier: tests/unit, tests/sandbox, tests/e2e, tests/security (root, for the sandboxes).
test: install lint
	$(BIN)/pytest -q

# The unit tier alone: no root, no sandboxes, no server, a few seconds (after one `make install`).
test-unit:
	@test -x $(BIN)/pytest || { echo "run 'make install' once first (apt needs root)"; exit 1; }
	$(BIN)/pytest -q tests/unit

# The sandbox tier and the invoke tests on a cgroup v2-only Debian 12 guest (QEMU, software
# emulation: slow, so not part of `make test`). The guest keeps its .venv between runs (CG2VM_STATE).
CG2VM ?= $(abspath ../shared/tools/cgroup2-vm/run-in-cgroup2-vm.sh)
CGROUP2_TESTS ?= tests/sandbox tests/e2e/test_invoke.py

# The guest's nodejs is Debian's, without npm: its `make install` adds it (debootstrap cannot
# configure Debian's npm in the image).
test-cgroup2:
	CG2VM_STATE=$${CG2VM_STATE:-lambdahost} CG2VM_PACKAGES="$(APT_PACKAGES)" \
	  CG2VM_TIMEOUT=$${CG2VM_TIMEOUT:-5400} \
	  $(CG2VM) $(CURDIR) 'make install && $(BIN)/pytest -q -rs $(CGROUP2_TESTS)'

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .lambdahost build *.egg-info
