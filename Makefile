# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of PyTorch. On this machine `torch==2.13.0` is a local CPU wheel; elsewhere
# pass TORCH_INDEX="--index-url <PyTorch's CPU wheel index>" to avoid a multi-GB CUDA build.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@# The editors' page test runs a real headless chromium (Debian's packages).
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y chromium chromium-driver
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH)"   # first, so nothing pulls a CUDA torch
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/similar-articles demo

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_recommend.py

clean:
	rm -rf $(VENV) data/cache build *.egg-info
