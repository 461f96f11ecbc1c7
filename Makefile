# make book  -> builds the book into _build/html (executes every chapter on the CPU first)
# make test  -> unit tests + every notebook under nbmake (what CI runs)
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# CPU torch from the local wheel store unless a torch is already there (a GPU user's CUDA build).
TORCH   ?= torch==2.13.0

.PHONY: book test unit notebooks bench clean

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests --nbmake notebooks --nbmake-timeout=900 -q -p no:cacheprovider --durations=15

unit: $(STAMP)
	$(PY) -m pytest tests -q

# jupyter-book executes every chapter (CPU, TinySD) while it builds: each figure is computed then.
# -W: any warning fails the build.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W --keep-going

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

clean:
	rm -rf _build
