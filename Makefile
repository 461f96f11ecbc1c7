# make book  -> builds the book into _build/html (executes each chapter once; a rebuild reuses them)
# make test  -> unit tests + every notebook under nbmake + the book built from those outputs (CI)
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# CPU torch from the local wheel store unless a torch is already there (a GPU user's CUDA build).
TORCH   ?= torch==2.13.0
# make test executes copies of the notebooks here (outputs kept); the book test builds from them
# (not under _build/: nbmake skips every path containing "_build")
EXECUTED := _executed

.PHONY: book test unit notebooks format clean-notebooks bench clean repository

# The book's executed outputs carry no progress bars (tqdm's, diffusers' and transformers' loading
# bars are widgets that load a script from a CDN and freeze part-way on the page). Running a chapter
# yourself in JupyterLab still shows them.
BOOK_ENV := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# Notebooks run once, as copies in $(EXECUTED) (notebooks/ stays output-free); tests/test_book.py
# runs after them and builds the book from their outputs without executing anything again.
test: $(STAMP)
	rm -rf $(EXECUTED) && mkdir -p $(EXECUTED) && cp notebooks/*.ipynb $(EXECUTED)/
	$(BOOK_ENV) ZC_EXECUTED=$(EXECUTED) $(PY) -m pytest tests $(EXECUTED) --nbmake --overwrite --nbmake-timeout=1200 \
		-q -p no:cacheprovider --durations=20

unit: $(STAMP)
	$(PY) -m pytest tests -q

# jupyter-book executes every chapter (CPU, TinySD) while it builds: each figure is computed then.
# The execution cache (_build/.jupyter_cache) keeps them: a rebuild re-executes only changed chapters.
# -W: any warning fails the build.
book: $(STAMP)
	$(BOOK_ENV) $(VENV)/bin/jupyter-book build . -W --keep-going

# ruff formats the notebooks to the book's width; outputs are never committed
format: $(STAMP)
	$(VENV)/bin/ruff format notebooks
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

clean-notebooks: $(STAMP)
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

# the one repository URL setting (_config.yml: launch buttons, repository button, every chapter's
# install cell): make repository URL=https://github.com/<you>/<repo>
repository: $(STAMP)
	test -n "$(URL)" || (echo "usage: make repository URL=https://github.com/<you>/<repo>" && exit 2)
	$(PY) scripts/install_cell.py --set-url "$(URL)"

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

clean:
	rm -rf _build _executed
