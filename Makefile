# atcourse: the course's commands. Each target creates .venv first when it is missing.
#   make course    run every notebook in the smoke profile (a minute or two, CPU)
#   make test      unit tests, then every notebook re-executed and checked (nbval, smoke)
#   make lab       open the course in JupyterLab
#   make notebooks re-execute the notebooks in place in the lab profile (committed outputs)
#   make student   write student editions (solutions stubbed) into build/student/
#   make bench     training speed per method, beside a DataLoader-style baseline

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Extra pip arguments, e.g. PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=

.PHONY: course test unit nbtest lab notebooks student bench lint clean-runs

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
	$(BIN)/jupyter lab notebooks

notebooks: $(BIN)/atcourse
	for nb in notebooks/[0-9][0-9]_*.ipynb; do \
		$(BIN)/papermill --cwd notebooks -p profile lab "$$nb" "$$nb" || exit 1; done

student: $(BIN)/atcourse
	$(BIN)/atcourse student

bench: $(BIN)/atcourse
	$(BIN)/atcourse bench --models wrn_16_1,wrn_16_2

lint: $(BIN)/atcourse
	$(BIN)/ruff check atcourse tests
	$(BIN)/ruff format --check atcourse tests

clean-runs:
	rm -rf runs build
