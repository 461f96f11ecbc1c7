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

# uv (from PyPI, into the venv) installs: ~0.5 min instead of pip's ~2.5 on 2 cores. uv reads no pip
# configuration, so pip's local wheel store (this project's machines keep the CPU torch there) is passed on.
UV      := $(VENV)/bin/uv
# (= not :=: pip is asked only when the install recipe runs, not on every make call)
FIND_LINKS = $(or $(PIP_FIND_LINKS),$(shell python3 -m pip config get global.find-links 2>/dev/null))
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(UV) pip install -q --python $(PY) --compile-bytecode $(if $(FIND_LINKS),--find-links $(FIND_LINKS)) \
		$$($(PY) -c "import torch" 2>/dev/null || echo "$(TORCH)") -r requirements.txt
	touch $(STAMP)

# Notebooks run once, as copies in $(EXECUTED) (notebooks/ stays output-free); tests/test_book_build.py
# runs after them and builds the book from their outputs without executing anything again.
# Two pytest workers (pytest-xdist), one torch thread each: on 2 cores the tiny models' work gains little
# from a second thread, so two tests at once get ~1.4x done (measured). --dist loadfile keeps a file's
# tests in order on one worker (the stand-in chapters: chapter 6 trains what 7 and 9 read);
# tests/conftest.py orders the suite, and the book test waits for the chapters it builds from.
JOBS ?= 2
PYTEST_ARGS ?=
test: $(STAMP)
	rm -rf $(EXECUTED) && mkdir -p $(EXECUTED) && cp notebooks/*.ipynb $(EXECUTED)/
	$(BOOK_ENV) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ZC_EXECUTED=$(EXECUTED) $(PY) -m pytest tests $(EXECUTED) \
		--nbmake --overwrite --nbmake-timeout=1200 -n $(JOBS) --dist loadfile -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests -q

# Every chapter is executed (CPU, TinySD) before the book is built: each figure is computed then, two
# chapters at a time (scripts/execute_chapters.py) into jupyter-book's execution cache
# (_build/.jupyter_cache), where the build finds them; a rebuild re-executes only changed chapters.
# -W: any warning fails the build.
book: $(STAMP)
	$(BOOK_ENV) $(PY) scripts/execute_chapters.py --jobs $(JOBS)
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
