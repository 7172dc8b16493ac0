# selfpick: `make demo` runs the whole pipeline on simulated data, `make test` runs the tests.
# Both create .venv on first use. On CPU-only machines torch==2.13.0 (CPU build) is installed
# first; the package itself only asks for torch>=2.2, so a GPU user's own torch is kept.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-fast relion-2d bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/selfpick demo --output demo_output

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not relion2d"

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not relion2d"

# Picks -> RELION extraction -> reference-free 2D classification (a few minutes on 2 cores);
# the class averages are how a biologist judges picks. Needs RELION (apt-get install relion).
relion-2d: $(STAMP)
	$(BIN)/python -m pytest -q -m relion2d -p no:cacheprovider

clean:
	rm -rf $(VENV) demo_output .pytest_cache .hypothesis
