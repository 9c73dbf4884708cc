# atcourse: the course's commands. Each target creates .venv first when it is missing.
#   make course    run every notebook in the smoke profile (a minute or two, CPU)
#   make test      unit tests, then every notebook re-executed and checked (nbval, smoke)
#   make lab       open the course in JupyterLab (widget state saved with the notebooks)
#   make notebooks re-execute the notebooks in place in the lab profile (committed outputs)
#   make browser-test  the committed and freshly run notebooks in JupyterLab in a real
#                  Chromium (Debian's): no stand-in text, explorers redraw, saved state reopens
#   make student   write student editions (solutions stubbed) into build/student/
#   make bench     training speed per method, beside a DataLoader-style baseline

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=

.PHONY: course test unit nbtest lab notebooks student bench lint clean-runs browser-test

# The course's Jupyter settings (jupyter/): a notebook is saved with its widget outputs
# frozen to what they showed (jupyter_server_config.py, atcourse.widgets.pre_save_hook),
# read from the widget state JupyterLab saves with it (labconfig/), so a saved notebook
# reopens without "Error displaying widget: model not found".
LAB_ENV := JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}"
CHROMIUM ?= /usr/bin/chromium

$(BIN)/atcourse: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e '.[dev]'
	@touch $@

course: $(BIN)/atcourse
	$(BIN)/atcourse run --profile smoke

test: $(BIN)/atcourse
	ATCOURSE_PROFILE=smoke $(BIN)/python -m pytest -q tests --nbval-lax notebooks

unit: $(BIN)/atcourse
	$(BIN)/python -m pytest -q tests

nbtest: $(BIN)/atcourse
	ATCOURSE_PROFILE=smoke $(BIN)/python -m pytest -q --nbval-lax notebooks

lab: $(BIN)/atcourse
	$(LAB_ENV) $(BIN)/jupyter lab notebooks

notebooks: $(BIN)/atcourse
	$(BIN)/python -m atcourse.execute notebooks/[0-9][0-9]_*.ipynb --profile lab

student: $(BIN)/atcourse
	$(BIN)/atcourse student

bench: $(BIN)/atcourse
	$(BIN)/atcourse bench --models wrn_16_1,wrn_16_2

lint: $(BIN)/atcourse
	$(BIN)/ruff check atcourse tests
	$(BIN)/ruff format --check atcourse tests

$(BIN)/playwright: pyproject.toml $(BIN)/atcourse
	$(BIN)/python -m pip install --quiet $(PIP_ARGS) -e '.[dev,browser]'
	@touch $@

# Playwright drives Debian's Chromium: no browser download (no `playwright install`).
browser-test: $(BIN)/playwright
	@test -x $(CHROMIUM) || (echo "installing Debian's chromium (apt-get)" && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "no Chromium at $(CHROMIUM): apt-get install chromium (as root), or"; \
		     echo "make browser-test CHROMIUM=/path/to/chromium"; exit 1; }
	ATCOURSE_BROWSER_TEST=1 ATCOURSE_CHROMIUM=$(CHROMIUM) $(LAB_ENV) \
		$(BIN)/python -m pytest -q tests/browser

clean-runs:
	rm -rf runs build
