# make run: a local server on the embedded defaults (offline provider, local storage), on
# 127.0.0.1 only (LIROO_BIND=0.0.0.0 make run opens it to the network).
# make test: ruff check and ruff format --check liroo/ (ruff.toml), then the whole suite.
# Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
MEM ?= 512m

.PHONY: run test venv dev-venv redis bench run-limited clean screenshot

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(BIN)/.dev-installed: $(BIN)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed
dev-venv: $(BIN)/.dev-installed

run: venv
	MALLOC_ARENA_MAX=2 PORT=$(PORT) $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

# make run-limited MEM=512m: the server under a real memory limit (a cgroup
# where the machine allows, else MEMORY_LIMIT_MB, and it says which).
run-limited: venv
	MALLOC_ARENA_MAX=2 PORT=$(PORT) $(BIN)/python scripts/run-limited --mem $(MEM)

# Redis serves the job-store tests; start one when none is listening.
redis:
	@scripts/ensure-redis

# The suite runs in TEST_PROCESSES processes (pytest-xdist): a file's tests stay in one process
# (--dist loadfile: its module-wide servers start once; files use their own Redis db, free ports
# and temporary directories), files go out longest first (tests/conftest.py). Many tests wait on
# servers rather than compute, so 4 processes fit this 2-core machine (5 and 6 were no faster).
# TEST_PROCESSES=0 runs them in this process, one after another. The code is compiled once
# first: with PYTHONDONTWRITEBYTECODE set (as on this machine), each of the ~110 servers the
# suite starts would compile it again (~0.2 s of CPU each).
TEST_PROCESSES ?= 4
test: dev-venv redis
	$(BIN)/ruff check .
	$(BIN)/ruff format --check liroo/
	$(BIN)/python -m compileall -q liroo tests bench wsgi.py gunicorn.conf.py
	MALLOC_ARENA_MAX=2 $(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder --durations=10

# Every benchmark: ours and the baseline side by side, ratios on the last line (~35 min;
# survival and capacity need root for their cgroups).
bench: dev-venv
	$(BIN)/python bench/governor_overhead.py
	$(BIN)/python bench/imaging.py
	$(BIN)/python bench/audio.py
	$(BIN)/python bench/comic_latency.py
	$(BIN)/python bench/survival.py
	$(BIN)/python bench/soak.py
	$(BIN)/python bench/capacity.py
	$(BIN)/python bench/capacity.py --cloud-run
	$(BIN)/python bench/deadline.py
	$(BIN)/python bench/speech_peaks.py
	$(BIN)/python bench/request_peaks.py
	$(BIN)/python bench/offline_content.py

# docs/studio.png and docs/studio-phone.png: the studio with a finished comic, at 1280 px and on
# a 390 px phone, made in headless Chromium by the browser tests' own code (tests/studio_browser.py)
# against a real server on the offline provider.
screenshot: dev-venv
	MALLOC_ARENA_MAX=2 $(BIN)/python -m tests.studio_browser docs/studio.png --phone docs/studio-phone.png

clean:
	rm -rf $(VENV) .pytest_cache media
