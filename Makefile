# Every developer command. `make help` lists them; `make test` is what CI (.ci/run) and the README run.
# Each target creates what it needs: a virtualenv per Python ($(VENV)), the tools from PyPI, the
# native module built by maturin into that virtualenv.

PY      ?= python3
VENV    ?= .venv
VPY     := $(VENV)/bin/python
PROFILE ?= release
STAMP   := $(VENV)/.deps-stamp
DOWNSTREAM_STAMP := $(VENV)/.downstream-stamp
CARGO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run venv build test test-rust test-py test-downstream conformance conformance-all bench lint clean suites suites-ci test-versions test-fallback

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

# The real projects tests/downstream runs on ferroloop (aiohttp, uvicorn, httpx), wheels only.
$(DOWNSTREAM_STAMP): $(STAMP) requirements-downstream.txt
	$(VPY) -m pip install -q --disable-pip-version-check --only-binary=:all: -r requirements-downstream.txt
	@touch $(DOWNSTREAM_STAMP)

venv: $(STAMP) ## create the virtualenv and install the tools (maturin, pytest, uvloop for the bench)

build: $(STAMP) ## build ferroloop's native module into the virtualenv (PROFILE=release by default)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
	  $(VENV)/bin/maturin develop -q --profile $(PROFILE) $(CARGO_ARGS)

run: build ## the main job: an asyncio program running on ferroloop
	$(VPY) examples/hello.py

# What CI runs (.ci/run): lint, the core's cargo tests, pytest and CPython's suite on every
# supported Python, the real projects, and the whole pytest suite once more with epoll_pwait2
# refused by the kernel (strace fault injection).
test: lint test-rust test-py test-downstream conformance test-versions test-fallback suites-ci ## every test: lint, cargo tests, pytest and CPython's suite on 3.11-3.13, real projects, the epoll_wait fallback

test-rust: ## cargo tests of the pure-Rust core (no Python)
	cargo test -q -p ferroloop-core

test-py: build ## pytest: the Python surface, on the stock loop and on ferroloop
	$(VPY) -m pytest -q tests

test-downstream: build $(DOWNSTREAM_STAMP) ## real projects on both loops over loopback: aiohttp server+client, uvicorn+httpx
	@cmp -s requirements-integrations.txt $(VENV)/integrations/requirements.txt || { rm -rf $(VENV)/integrations && \
	  $(VPY) -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps \
	    --target $(VENV)/integrations -r requirements-integrations.txt && \
	  cp requirements-integrations.txt $(VENV)/integrations/requirements.txt; }
	$(VPY) -m pytest -q tests/downstream tests/integrations

conformance: build ## CPython's test_asyncio with ferroloop underneath (exits non-zero on a regression)
	$(VPY) tests/conformance/run.py

# pyenv's interpreters (the newest installed 3.12.x and 3.13.x are used).
PYENV_VERSIONS ?= $${PYENV_ROOT:-$$HOME/.pyenv}/versions

test-versions: ## pytest and CPython's suite on ferroloop under 3.12 and 3.13 (pyenv; 3.11 is `make test-py conformance`)
	for v in 3.12 3.13; do \
	  $(MAKE) --no-print-directory test-py conformance \
	    PY=$$(ls -d $(PYENV_VERSIONS)/$$v.*/bin/python | sort -V | tail -1) VENV=.venv-$$v || exit 1; \
	done

conformance-all: ## the conformance runner under 3.11, 3.12 and 3.13 (pyenv)
	for v in 3.11 3.12 3.13; do \
	  $(MAKE) conformance PY=$$(ls -d $(PYENV_VERSIONS)/$$v.*/bin/python | sort -V | tail -1) VENV=.venv-$$v || exit 1; \
	done

bench: build ## micro benchmarks: ferroloop vs asyncio vs uvloop (interleaved rounds, medians, ratios)
	$(VPY) bench/run.py

lint: ## rustfmt and clippy
	cargo fmt --all --check
	cargo clippy -q --workspace --all-targets -- -D warnings

clean: ## remove build outputs and virtualenvs
	rm -rf target .venv .venv-3.*

# A build without the `diagnostics` cargo feature, for bench-diag only. Installed as a wheel (not
# `maturin develop`, which copies the native module into python/ferroloop/ and so would replace
# .venv's), built in its own target directory so it never invalidates the default build.
NODIAG     ?= .venv-nodiag
NODIAG_SRC := $(shell find crates python/ferroloop -name '*.rs' -o -name '*.py' -o -name Cargo.toml) Cargo.toml Cargo.lock pyproject.toml

$(NODIAG)/.nodiag-stamp: $(STAMP) $(NODIAG_SRC)
	@test -x $(NODIAG)/bin/python || $(PY) -m venv $(NODIAG)
	@touch $@.new  # dated before the build: a source edited during the build makes the next run rebuild
	rm -rf target/wheels-nodiag
	CARGO_TARGET_DIR=target/nodiag $(VENV)/bin/maturin build -q --profile $(PROFILE) --no-default-features \
	  -i $(NODIAG)/bin/python -o target/wheels-nodiag
	$(NODIAG)/bin/python -m pip install -q --disable-pip-version-check --no-deps --force-reinstall target/wheels-nodiag/*.whl
	@mv $@.new $@

# An A/B baseline for `bench/run.py --baseline target/baseline/site`: commit REV built as a wheel
# (in its own target directory, so it never invalidates the default build) and unpacked, so a
# worker imports it with the directory first on sys.path. REVISION names the commit.
REV        ?= HEAD
BASELINE   := target/baseline

.PHONY: baseline
baseline: $(STAMP) ## build commit REV (default HEAD) into target/baseline/site for bench/run.py --baseline
	rm -rf $(BASELINE)/src $(BASELINE)/wheel $(BASELINE)/site
	mkdir -p $(BASELINE)/src
	git archive --format=tar $$(git rev-parse --verify $(REV)^{commit}) | tar -x -C $(BASELINE)/src
	cd $(BASELINE)/src && CARGO_TARGET_DIR=$(abspath target/baseline-build) \
	  $(abspath $(VENV))/bin/maturin build -q --profile $(PROFILE) -i $(abspath $(VPY)) -o $(abspath $(BASELINE))/wheel
	$(VPY) -m zipfile -e $(BASELINE)/wheel/*.whl $(BASELINE)/site
	git describe --always $(REV) > $(BASELINE)/site/REVISION

.PHONY: bench-diag
bench-diag: build $(NODIAG)/.nodiag-stamp ## cost of the diagnostics: compiled out vs debug off vs debug on
	$(VPY) bench/diag_overhead.py --markdown

.PHONY: bench-net
bench-net: build ## network benchmarks: echo (sock/streams/Protocol, TCP/Unix), uvicorn HTTP, connection churn, flow-controlled bulk, UDP, TLS; vs a Rust ceiling
	$(VPY) -m pip install -q --disable-pip-version-check -r bench/net/requirements.txt
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; \
	  else echo "wrk not found (apt-get install -y wrk): the HTTP benchmark will be skipped"; fi; }
	cargo build --release -q --manifest-path bench/loadgen/Cargo.toml
	$(VPY) bench/net/run.py $(ARGS)

# strace fault injection: every epoll_pwait2 fails as on a kernel before 5.11 (ENOSYS) or under an
# older container runtime's seccomp profile (EPERM), so the poller must fall back to epoll_wait.
# --seccomp-bpf stops the tracees only at epoll_pwait2, so a whole pytest run stays fast. Needs
# strace 5.11+ (it must know epoll_pwait2). The log has one line per refusal: once per process.
# Deselected under injection: test_timers' sub-millisecond latency check, which asserts the
# precision that only epoll_pwait2 gives (the fallback rounds 0.2 ms up to 1 ms by design; that
# it is never early is checked by tests/test_poll_fallback.py and the core's poll_fallback.rs).
STRACE_LOG := $(VENV)/strace-fallback.log
INJECT = strace -f -qq --seccomp-bpf -e trace=epoll_pwait2 -e signal=none -o $(STRACE_LOG) \
  -e inject=epoll_pwait2:error=

.PHONY: test-fallback
test-fallback: build ## ferroloop without epoll_pwait2: pytest with it failing (ENOSYS), a smoke under EPERM
	@command -v strace >/dev/null || { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }; \
	  else echo "strace not found (apt-get install -y strace): it is needed to inject the errors" >&2; exit 1; fi; }
	$(VPY) -m pytest -q tests/test_poll_fallback.py
	$(INJECT)ENOSYS $(VPY) -m pytest -q tests --ignore=tests/test_poll_fallback.py \
	  --deselect tests/test_timers.py::test_ferroloop_submillisecond_timer_latency
	@n=$$(grep -c 'epoll_pwait2(.*= -1 ENOSYS.*(INJECTED)' $(STRACE_LOG)); \
	  echo "epoll_pwait2 refused with ENOSYS in $$n processes"; test "$$n" -gt 0
	$(INJECT)EPERM $(VPY) tests/test_poll_fallback.py
	@n=$$(grep -c 'epoll_pwait2(.*= -1 EPERM.*(INJECTED)' $(STRACE_LOG)); \
	  echo "epoll_pwait2 refused with EPERM in $$n process"; test "$$n" -eq 1

# Portable wheels (not part of `make test`: a release build per interpreter, a few minutes).
# zig (PyPI's ziglang) links against glibc 2.28's symbols, so the wheels install on any Linux with
# glibc 2.28+ (manylinux_2_28: RHEL/Alma 8, Debian 10, Ubuntu 18.10 and later); musllinux_1_2
# wheels (Alpine 3.13+) when rustup has the x86_64-unknown-linux-musl target. Each glibc wheel is
# then installed into a fresh virtualenv of its Python and runs examples/hello.py there
# (tests/wheels/check.py, which also prints the tags and `auditwheel show`).
WHEELS_DIR ?= target/wheels-dist
WHEEL_PYTHONS ?= 3.11 3.12 3.13
WHEEL_TOOLS := ziglang==0.17.0 auditwheel==6.8.2
.PHONY: wheels
wheels: $(STAMP) ## manylinux_2_28 (and musllinux_1_2) wheels for 3.11-3.13 in target/wheels-dist, each checked in a fresh venv
	$(VPY) -m pip install -q --disable-pip-version-check $(WHEEL_TOOLS)
	rm -rf $(WHEELS_DIR)
	@set -e; start=$$(date +%s); checks=""; \
	musl=$$(rustup target list --installed 2>/dev/null | grep -x x86_64-unknown-linux-musl || true); \
	for v in $(WHEEL_PYTHONS); do \
	  py=$$(ls -d $(PYENV_VERSIONS)/$$v.*/bin/python | sort -V | tail -1); \
	  test -x "$$py" || { echo "no Python $$v under $(PYENV_VERSIONS)" >&2; exit 1; }; \
	  echo "== Python $$v ($$py): manylinux_2_28"; \
	  PATH=$(abspath $(VENV))/bin:$$PATH CARGO_TARGET_DIR=target/wheels-build $(VENV)/bin/maturin build -q --release \
	    --zig --compatibility manylinux_2_28 -i $$py -o $(WHEELS_DIR); \
	  if [ -n "$$musl" ]; then \
	    echo "== Python $$v ($$py): musllinux_1_2"; \
	    PATH=$(abspath $(VENV))/bin:$$PATH CARGO_TARGET_DIR=target/wheels-build $(VENV)/bin/maturin build -q --release \
	      --zig --target x86_64-unknown-linux-musl --compatibility musllinux_1_2 -i python$$v -o $(WHEELS_DIR); \
	  fi; \
	  checks="$$checks --python $$v=$$py"; \
	done; \
	[ -n "$$musl" ] || echo "musllinux skipped: rustup target add x86_64-unknown-linux-musl to build it"; \
	$(VPY) tests/wheels/check.py $(WHEELS_DIR) $$checks; \
	echo "make wheels: $$(( $$(date +%s) - start )) s"

# Real projects' own test suites, from their sdists, each in a virtualenv of its own under
# .venv-suites/ with pinned requirements (tests/suites/README.md). ARGS goes to the runner:
#   make suites ARGS="--projects uvicorn,anyio --loop ferroloop -k websocket --json out.json"
.PHONY: suites
suites: build ## real projects' own test suites (uvicorn, anyio, aiohttp) on the stock loop and on ferroloop
	$(VPY) tests/suites/run.py $(ARGS)

# In CI: uvicorn's and anyio's suites (about 7 minutes); aiohttp's takes 14 more minutes of both
# cores and is run by `make suites` (its figures are in the README).
suites-ci: build ## the real projects' suites that CI runs: uvicorn and anyio
	$(VPY) tests/suites/run.py --projects uvicorn,anyio $(ARGS)

.PHONY: bench-prod
bench-prod: build ## cost of production mode (the blocked-loop watchdog): paired rounds, watchdog off vs on
	$(VPY) bench/prod_overhead.py $(ARGS)
