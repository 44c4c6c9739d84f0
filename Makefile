# The two commands of the README: `make run` (the embedded default, end to end) and `make test`.
VENV ?= .venv
CORES ?= 2
# `make run SEED_OFFSET=100` trains every run on other seeds (config key seed_offset).
SEED_OFFSET ?= 0
CONFIG := --config seed_offset=$(SEED_OFFSET)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: run test report install

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[offline,test]'
	touch $@

install: $(VENV)/installed

run:
	@echo "crossdisc: running the embedded default (config/config.yaml) offline on $(CORES) cores."
	@echo "crossdisc: results go to results/ (tables/, figures/, runs/) and the report to results/report.html."
	@$(MAKE) --no-print-directory install
	snakemake --cores $(CORES) $(CONFIG)
	snakemake --report results/report.html $(CONFIG)

report: install
	snakemake --report results/report.html $(CONFIG)

# Two tiers: the fast one first, so a broken unit fails in minutes; then the slow and SLURM tests.
test: install
	python -m pytest -q -m "not slow and not slurm"
	python -m pytest -q -m "slow or slurm"
