# make lab | make test | make slides | make bench   (each installs into .venv what it needs)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8888
ROOT   := $(if $(filter 0,$(shell id -u)),--allow-root,)
unexport MPLBACKEND

.PHONY: install lab test bench bench-latency bench-notebooks slides lint clean

install: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# torch from PyTorch's CPU index first (on Linux PyPI's wheel pulls GBs of CUDA); --no-deps: only torch is looked up there
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-deps $$(grep "^torch==" requirements.txt) --extra-index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -r requirements-dev.txt -e .
	@touch $(STAMP)

lab: install                    # slides_assets/lab: presenting hides code unless a cell is tagged show-code
	JUPYTER_CONFIG_PATH=$(CURDIR)/slides_assets/lab$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH)) $(VENV)/bin/jupyter lab $(ROOT) --ServerApp.port=$(PORT) notebooks/00_start_here.ipynb

# Every test on this CPU's kernels, then the notebooks and the claims their text makes once more on
# torch's portable kernels (no AVX, MKL's reproducible mode): what nbval compares and what the
# tests assert must hold on every CPU, not only on the one that executed the notebooks.
PORTABLE_KERNELS := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE MKL_ENABLE_INSTRUCTIONS=SSE4_2

test: install
	$(PY) -m pytest -n 2 --dist loadscope
	env $(PORTABLE_KERNELS) $(PY) -m pytest -n 2 --dist loadscope notebooks tests -k "claim or ipynb"

lint: install
	$(VENV)/bin/ruff check normkit tests benchmarks slides_assets instructor

# glibc returns big freed blocks to the OS and then page-faults them back in; that made timings
# swing 2x between runs on this VM. Keep them in the heap while benchmarking.
bench: export MALLOC_MMAP_THRESHOLD_ = 4294967296
bench: export MALLOC_TRIM_THRESHOLD_ = 4294967296
bench: install                  # normkit vs torch, notebook run time (cold kernel), slider latency, SyncBN cost, memory per student
	$(PY) benchmarks/bench_normkit.py
	$(PY) benchmarks/bench_notebooks.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_distributed.py
	$(PY) benchmarks/bench_memory.py

bench-notebooks: install        # every notebook from a cold kernel, as Run All: ≤ 10 s each, ≤ 60 s the series
	$(PY) benchmarks/bench_notebooks.py

bench-latency: install
	$(PY) benchmarks/bench_latency.py

.PHONY: bench-memory
bench-memory: install           # memory per student on a class server: each kernel's peak, the server's share
	$(PY) benchmarks/bench_memory.py

slides: install                 # slides/NN_name.slides.html + slides/assets/: decks that open offline
	$(PY) slides_assets/build.py

.PHONY: release
release: install                # course/: the nbgrader course (source = instructor edition, release = student version)
	$(PY) instructor/release.py

.PHONY: fonts
fonts: install                  # re-subset the vendored fonts to the notebooks' characters (Debian: fonts-noto-cjk fonts-noto-core)
	$(PY) slides_assets/fonts.py

clean:
	rm -rf $(VENV) artifacts slides .pytest_cache .hypothesis
