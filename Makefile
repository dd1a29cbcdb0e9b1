# The README's two commands: `make run` (service on the seed corpus) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test system-deps index run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pip is quiet (-q) and a first install takes minutes: say so, so the silence does not look like a hang.
install: $(BIN)/python
	@echo "installing rag-zh and its dependencies into $(VENV) (a first install takes a few minutes)..."
	$(BIN)/pip install -q -e .

# torch is pinned and installed first: that version is the CPU build here; an unpinned
# torch would pull several GB of CUDA packages.
install-test: $(BIN)/python system-deps
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,milvus,st,train]'

# Debian's chromium drives the widget tests (Playwright never downloads a browser here);
# CJK and emoji fonts make its screenshots readable.
system-deps:
	@if [ ! -x /usr/bin/chromium ] || ! fc-list :lang=zh 2>/dev/null | grep -q . ; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			chromium fonts-wqy-microhei fonts-noto-color-emoji fontconfig; \
	fi

# Builds the index from seeds/ if missing; re-running only embeds new or changed articles.
index: install
	$(BIN)/rag index

run: index
	$(BIN)/rag serve --host $(HOST) --port $(PORT)

# One OpenMP thread for the embedder in tests: on 2 cores shared with the server threads
# and milvus-lite, OpenMP's spinning made queries 10x slower.
test: install-test
	$(BIN)/ruff check rag index api tests benchmarks
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

# The committed benchmarks (CMRC 2018 trial in-process and over HTTP, the seed dev set), into
# benchmarks/results/; the other scripts in benchmarks/ are run one by one (see their docstrings).
bench: install-test
	$(BIN)/python benchmarks/run_cmrc.py

clean:
	rm -rf $(VENV) index/data tests/artifacts
