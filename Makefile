# Two commands set everything up on a fresh machine:
#   make demo   train the classifier on the shipped Adult data
#   make test   run the test suite
# Both create .venv on first use. TORCH_SPEC pins the torch build installed
# here (a local CPU wheel on our machines); override it elsewhere, e.g.
#   make test TORCH_SPEC='torch>=2.1'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.tabembed-installed

.PHONY: test demo lint bench suite suite-accuracy clean wheel-check docs

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check '$(TORCH_SPEC)'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; \
	exit $$rc

# Builds the sdist and the wheel, installs the wheel into a fresh environment outside the
# checkout and runs the README's five lines and an example there (.ci/wheel_check.sh).
wheel-check: $(STAMP)
	PYTHON=$(PYTHON) BUILD_PYTHON=$(BIN)/python TORCH_SPEC='$(TORCH_SPEC)' bash .ci/wheel_check.sh

# The documentation site, into site/html: Sphinx with warnings as errors; the examples and
# the notebook run during the build, in their fast mode (docs/conf.py).
DOCS_STAMP := $(VENV)/.tabembed-docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	rm -rf site
	$(BIN)/python -m sphinx -W --keep-going -q -b html -d site/doctrees docs site/html
	@echo "docs: site/html/index.html"

# Trains the classifier on the shipped Adult data; prints scores, writes demo_output/*.png.
demo: $(STAMP)
	$(BIN)/python -m tabembed demo --output-dir demo_output

# Benchmarks against fastai, LightGBM and Surprise in a separate environment;
# updates each script's block in bench/RESULTS.md. DATA_HOME must hold the unzipped ml-100k/ folder.
BENCH := .venv-bench
BENCH_STAMP := $(BENCH)/.tabembed-installed
DATA_HOME ?= ../shared/datasets
$(BENCH_STAMP): pyproject.toml Makefile
	test -x $(BENCH)/bin/python || $(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/python -m pip install -q --disable-pip-version-check '$(TORCH_SPEC)'
	$(BENCH)/bin/python -m pip install -q --disable-pip-version-check -e '.[bench]'
	$(BENCH)/bin/python -m pip install -q --disable-pip-version-check --no-deps 'fastai==2.8.12'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 $(BENCH)/bin/python bench/run_all.py $(DATA_HOME) $(if $(QUICK),--quick,)

# The 20-table suite of issue 30 alone (long: about an hour on 2 cores; QUICK=1: the five
# smallest tables, tabembed and LightGBM). Prints markdown; `make bench` also runs it and
# writes its block in bench/RESULTS.md.
suite: $(BENCH_STAMP)
	OMP_NUM_THREADS=1 $(BENCH)/bin/python bench/suite.py $(if $(QUICK),--quick,)

# The accuracy mode (n_folds=5) and pretraining (X_unlabeled) beside the defaults and
# LightGBM on the suite (about 10 and 6 minutes on 2 cores).
suite-accuracy: $(BENCH_STAMP)
	OMP_NUM_THREADS=1 $(BENCH)/bin/python bench/suite.py --models tabembed,tabembed_cv5,lightgbm $(if $(QUICK),--quick,)
	OMP_NUM_THREADS=1 $(BENCH)/bin/python bench/suite.py --models tabembed,tabembed_unlabeled,lightgbm $(if $(QUICK),--quick,)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) $(BENCH) .pytest_cache demo_output build dist *.egg-info site \
		docs/examples docs/notebooks docs/api/generated
