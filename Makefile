# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# The CPU build of PyTorch. On this machine `torch==2.13.0` is a local CPU wheel; elsewhere
# pass TORCH_INDEX="--index-url <PyTorch's CPU wheel index>" to avoid a multi-GB CUDA build.
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install system-packages demo test bench clean
# Debian packages only the tests need (`make test` installs them, as root or with sudo):
# chromium and its driver, for the editors' page in a real browser.
SYSTEM_PACKAGES = chromium chromium-driver
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH)"   # first, so nothing pulls a CUDA torch
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

system-packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  $(SUDO) apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES) || \
	  { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES); }

demo: install
	$(BIN)/similar-articles demo

test: install system-packages
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/bench_recommend.py

clean:
	rm -rf $(VENV) data/cache build *.egg-info
