# heartbeat.py - see README.md. Targets: test test-unit lint check demo bench install.
PYTHON ?= python3
PREFIX ?= /usr
DESTDIR ?=
SBINDIR = $(PREFIX)/sbin
UNITDIR ?= $(PREFIX)/lib/systemd/system
CONFIG_DIR ?= /etc/ha.d
PYTEST_ARGS ?=
# 3 workers on this 2-core machine: about 6 min for the suite (18 serial); 4 took 4.8 min but starved
# the real-Heartbeat interop tests' timing once (two failures)
WORKERS ?= 3
# pytest-benchmark, when installed, only warns once per worker that xdist disables it: the tests use none
PYTEST = $(PYTHON) -m pytest -q -p no:benchmark
UNIT_WORKERS ?= 2
TEST_DEPS = pytest pytest-xdist hypothesis prometheus_client
LINT_DEPS = ruff vermin

.PHONY: test test-unit lint check demo bench deps lint-deps version install uninstall

version:
	@./heartbeat.py --version

# Installs what the tests need when it is missing, then runs the whole suite: tests/unit (no root,
# fake clock), tests/lab (root: network namespaces, heartbeat.py only) and tests/interop (root: real
# Heartbeat 3.0.6, Corosync + Pacemaker, sshd), in WORKERS processes (pytest-xdist). Root-only tests
# are skipped as non-root. The real Pacemaker clusters share one worker (xdist_group "pacemaker").
# Exit 5 (no test selected, e.g. by PYTEST_ARGS=-k) is not a failure.
test: deps
	$(PYTEST) -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS) tests || [ $$? -eq 5 ]

# The unit tests alone (no root needed).
test-unit: deps
	$(PYTEST) -n $(UNIT_WORKERS) $(PYTEST_ARGS) tests/unit || [ $$? -eq 5 ]

deps:
	@$(PYTHON) -c 'import pytest, xdist, hypothesis, prometheus_client' 2>/dev/null || \
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

# A real two-node cluster in network namespaces, failing over and back (root). IPV6=1: on an
# IPv6-only LAN (sigma fd77::100, mcast6 heartbeats, a ping6 node).
demo:
	IPV6=$(IPV6) $(PYTHON) tests/programs/demo.py

# Failover speed and idle cost against real Heartbeat 3.0.6 (root). QUICK=1: one run, fast profile.
bench:
	QUICK=$(QUICK) $(PYTHON) tests/programs/bench.py

# Install the program, the init script, the systemd unit, the logrotate file and the
# sample /etc/ha.d (the notify.d hooks not executable: off). An existing configuration file is never
# overwritten.
install:
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)/etc/init.d $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/logrotate.d \
	  $(DESTDIR)/etc/ha.d/resource.d $(DESTDIR)/etc/ha.d/notify.d
	install -m 0755 heartbeat.py $(DESTDIR)$(SBINDIR)/heartbeat.py
	sed 's|/usr/sbin/heartbeat.py|$(SBINDIR)/heartbeat.py|' init/heartbeat > $(DESTDIR)/etc/init.d/heartbeat
	chmod 0755 $(DESTDIR)/etc/init.d/heartbeat
	sed 's|/usr/sbin/heartbeat.py|$(SBINDIR)/heartbeat.py|' init/heartbeat.service \
	  > $(DESTDIR)$(UNITDIR)/heartbeat.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/heartbeat.service
	install -m 0644 init/heartbeat.logrotate $(DESTDIR)/etc/logrotate.d/heartbeat
	@for f in ha.cf haresources resource.d/README notify.d/syslog notify.d/mail; do \
	  if [ -e $(DESTDIR)/etc/ha.d/$$f ]; then echo "keeping existing /etc/ha.d/$$f"; \
	  else install -m 0644 ha.d/$$f $(DESTDIR)/etc/ha.d/$$f; fi; done
	@if [ -e $(DESTDIR)/etc/ha.d/authkeys ]; then echo "keeping existing /etc/ha.d/authkeys"; \
	  else install -m 0600 ha.d/authkeys $(DESTDIR)/etc/ha.d/authkeys; \
	  echo "installed the sample authkeys: replace its public key with 'heartbeat.py keygen --force'"; fi

# Remove what install put, except the configuration in /etc/ha.d.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/heartbeat.py $(DESTDIR)/etc/init.d/heartbeat \
	  $(DESTDIR)$(UNITDIR)/heartbeat.service $(DESTDIR)/etc/logrotate.d/heartbeat \
	  $(DESTDIR)/var/lib/heartbeat/heartbeat.pyc
	@echo "kept /etc/ha.d (your configuration) and /var/lib/heartbeat (the node's uuid and generation)"
