# The two commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU wheel pinned for installs on these machines; the package itself accepts torch>=2.4.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-slow lint bench clean venv

$(BIN)/llmlab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]" "$(TORCH_PIN)"
	touch $(BIN)/llmlab

venv: $(BIN)/llmlab

demo: venv
	$(BIN)/llmlab speedrun

test: venv
	$(BIN)/python -m pytest

# End-to-end tests (e.g. recipes/tiny-speedrun.toml through every stage). The command line's `-m slow`
# overrides the `-m 'not slow'` in pyproject's addopts and keeps its --import-mode=importlib.
test-slow: venv
	$(BIN)/python -m pytest -m slow

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# CPU benchmarks; the *_gpu.py ones need a CUDA device: `bash benchmarks/gpu_check.sh` there.
bench: venv
	@for b in $(filter-out %_gpu.py,$(wildcard benchmarks/*.py)); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
