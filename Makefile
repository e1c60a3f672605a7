# `make demo` and `make test` each create .venv if missing and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,ray,tfds
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Tests and the demo run on the CPU; 2 cores is the target machine.
export JAX_PLATFORMS ?= cpu

.PHONY: demo test install install-export clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@ $(CORE_STAMP)

# The demo needs only the core dependencies: without the extras (Ray, TFDS, the test tools) a
# fresh install took 47 s instead of 89 s on the 2-core VM. After `make test` it installs nothing.
CORE_STAMP := $(VENV)/.installed-core
$(CORE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

install: $(STAMP)

# The `export` extra (ONNX) without resolving jax2onnx's orbax-checkpoint<0.11.37 pin, which would
# downgrade orbax (jax2onnx never imports it). `make test` installs it, so the ONNX parity tests run.
EXPORT_STAMP := $(VENV)/.installed-export
$(EXPORT_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet "onnx>=1.20.1" "onnxruntime>=1.24.1" "onnx-ir>=0.2.1" einops equinox dm-pix
	$(BIN)/python -m pip install --quiet --no-deps "jax2onnx>=0.17.1"
	touch $@

install-export: $(EXPORT_STAMP)

demo: $(CORE_STAMP)
	$(BIN)/python -m efficienthrnet.demo

# Two pytest-xdist workers, one test file each at a time (module fixtures are built once): the suite
# took 7.0 min against 12.5 min in one process on the 2-core VM. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(EXPORT_STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

clean:
	rm -rf $(VENV) demo_out .pytest_cache
