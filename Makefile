# heartbeat.py - see README.md. Targets: test lint check demo bench install.
PYTHON ?= python3
CONFIG_DIR ?= /etc/ha.d
PYTEST_ARGS ?=
TEST_DEPS = pytest hypothesis
LINT_DEPS = ruff vermin

.PHONY: test lint check demo deps lint-deps version

version:
	@./heartbeat.py --version

# Installs what the tests need when it is missing, then runs the whole suite.
# Root-only tests (network namespaces, real Heartbeat) are skipped as non-root.
test: deps
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests

deps:
	@$(PYTHON) -c 'import pytest, hypothesis' 2>/dev/null || \
	  $(PYTHON) -m pip install -q $(TEST_DEPS) 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $(TEST_DEPS)

lint-deps:
	@command -v ruff >/dev/null && command -v vermin >/dev/null || \
	  $(PYTHON) -m pip install -q $(LINT_DEPS) 2>/dev/null || \
	  $(PYTHON) -m pip install -q --break-system-packages $(LINT_DEPS)

lint: lint-deps
	ruff check heartbeat.py tests
	vermin --no-tips --violations --target=3.9- heartbeat.py tests

# Validate a configuration directory (default /etc/ha.d) without changing anything.
check:
	./heartbeat.py check -c $(CONFIG_DIR)

# A real two-node cluster in network namespaces, failing over and back (root).
demo:
	$(PYTHON) tests/demo.py
