# The two commands of the README: `make run` and `make test`. Both set up .venv idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints-cpu.txt | cksum | cut -d' ' -f1)

.PHONY: run test demo-model demo bench bench-fine-tune install clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/weft up

test: $(STAMP)
	$(BIN)/pytest

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
