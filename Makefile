# The two commands of the README: `make run` and `make test`. Both set up .venv idempotently from
# requirements.lock (every package pinned: an install resolves nothing and repeats exactly).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the folder holding the CPU wheel of torch (pip's find-links on this kind of machine; uv ignores pip's config)
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),/opt/wheels)
UV := $(BIN)/uv
UV_FLAGS := --python $(BIN)/python --find-links $(FIND_LINKS)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

.PHONY: run test test-fast lint lock demo-model demo bench bench-fine-tune install system-deps clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/pip install --quiet --disable-pip-version-check --no-deps "$$(grep '^uv==' requirements.lock)"
	$(UV) pip sync --quiet $(UV_FLAGS) requirements.lock
	$(UV) pip install --quiet $(UV_FLAGS) --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# PostgreSQL's server binaries for the production-profile tests (Debian's package; a no-op when present)
system-deps:
	bash scripts/install-system-deps.sh

# Re-resolve requirements.lock from pyproject.toml (keeps current pins unless they must move; add
# --upgrade to move them all), then `make install` installs exactly that.
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra dev -c constraints-cpu.txt --find-links $(FIND_LINKS) \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		--quiet -o requirements.lock

run: $(STAMP)
	$(BIN)/weft up

# TEST_WORKERS=N spreads the test files over N processes (pytest-xdist, each file whole in one): worth it
# with cores to spare; on 2 cores two end-to-end stacks at once slow each other's replicas down
TEST_WORKERS ?= 1
XDIST := $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
test: $(STAMP) system-deps
	$(BIN)/pytest $(XDIST)

test-fast: $(STAMP) system-deps
	$(BIN)/pytest $(XDIST) -m "not e2e"

lint: $(STAMP)
	$(BIN)/ruff check .

demo-model: $(STAMP)
	$(BIN)/weft demo-model

demo: $(STAMP)
	$(BIN)/weft demo

bench: $(STAMP)
	$(BIN)/python benchmarks/step_api.py

bench-fine-tune: $(STAMP)
	$(BIN)/python benchmarks/fine_tune.py

clean:
	rm -rf $(VENV) .weft
