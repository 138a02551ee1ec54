# make lab | make test | make slides | make bench   (each installs into .venv what it needs)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PORT   ?= 8888
ROOT   := $(if $(filter 0,$(shell id -u)),--allow-root,)
unexport MPLBACKEND

.PHONY: install lab test bench bench-latency slides lint clean

install: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -e .
	@touch $(STAMP)

lab: install
	$(VENV)/bin/jupyter lab $(ROOT) --ServerApp.port=$(PORT) notebooks/00_start_here.ipynb

test: install
	$(PY) -m pytest -n 2 --dist loadscope

lint: install
	$(VENV)/bin/ruff check normkit tests benchmarks slides_assets

# glibc returns big freed blocks to the OS and then page-faults them back in; that made timings
# swing 2x between runs on this VM. Keep them in the heap while benchmarking.
bench: export MALLOC_MMAP_THRESHOLD_ = 4294967296
bench: export MALLOC_TRIM_THRESHOLD_ = 4294967296
bench: install                  # normkit vs torch, slider latency and notebook run time, SyncBN cost
	$(PY) benchmarks/bench_normkit.py
	$(PY) benchmarks/bench_latency.py
	$(PY) benchmarks/bench_distributed.py

bench-latency: install
	$(PY) benchmarks/bench_latency.py

slides: install
	$(PY) slides_assets/build.py

clean:
	rm -rf $(VENV) artifacts slides .pytest_cache .hypothesis
