# Two commands do all set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the main job on the bundled sample data
#   make test   create .venv if missing, install, run the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.reuse-vos-installed

.PHONY: install demo test lint clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) evaluate.py --score data/samples/osvos-results --dset dv2016val \
		--davis-root data/samples/davis2016-sample --sequences blackswan,car-shadow \
		--out results/osvos-sample

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
