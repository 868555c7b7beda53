# Every developer command. `make help` lists them; `make test` is what CI (.ci/run) and the README run.
# Each target creates what it needs: a virtualenv per Python ($(VENV)), the tools from PyPI, the
# native module built by maturin into that virtualenv.

PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PROFILE ?= release
STAMP   := $(VENV)/.deps-stamp
CARGO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run venv build test test-rust test-py conformance conformance-all bench lint clean

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP) ## create the virtualenv and install the tools (maturin, pytest, uvloop for the bench)

build: $(STAMP) ## build ferroloop's native module into the virtualenv (PROFILE=release by default)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
	  $(VENV)/bin/maturin develop -q --profile $(PROFILE) $(CARGO_ARGS)

run: build ## the main job: an asyncio program running on ferroloop
	$(VPY) examples/hello.py

test: test-rust test-py conformance ## every test: cargo tests of the core, pytest, CPython's suite on ferroloop

test-rust: ## cargo tests of the pure-Rust core (no Python)
	cargo test -q -p ferroloop-core

test-py: build ## pytest: the Python surface, on the stock loop and on ferroloop
	$(VPY) -m pytest -q tests

conformance: build ## CPython's test_asyncio with ferroloop underneath (exits non-zero on a regression)
	$(VPY) tests/conformance/run.py

conformance-all: ## the conformance runner under 3.11, 3.12 and 3.13 (pyenv)
	for v in 3.11 3.12 3.13; do \
	  $(MAKE) conformance PY=$$(pyenv prefix $$(pyenv versions --bare | grep "^$$v" | tail -1))/bin/python VENV=.venv-$$v || exit 1; \
	done

bench: build ## micro benchmarks: ferroloop vs asyncio vs uvloop (interleaved rounds, medians, ratios)
	$(VPY) bench/run.py

lint: ## rustfmt and clippy
	cargo fmt --all --check
	cargo clippy -q --workspace --all-targets -- -D warnings

clean: ## remove build outputs and virtualenvs
	rm -rf target .venv .venv-3.*
