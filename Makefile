# weightviz: two commands for users, `make lab` and `make test`.
# Each creates a local virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned for the setup only (the package itself accepts torch>=2.6):
# override with `make TORCH=torch==2.x.y` or TORCH=torch to take pip's choice.
TORCH  ?= torch==2.13.0

.PHONY: lab test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

# root (Docker, cloud notebooks): JupyterLab refuses to start without --allow-root
USER_ID  ?= $(shell id -u)
LAB_ARGS ?=
lab: $(VENV)/.installed
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(USER_ID)),--allow-root) $(LAB_ARGS) notebooks/

test: $(VENV)/.installed
	$(PY) -m pytest --nbval --nbval-current-env tests notebooks

bench: $(VENV)/.installed
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV)
