# Roomcast: `make run` serves the site on the embedded default; `make test` runs the tests.
# Both create .venv/ and install requirements.txt into it first; `make test`, `make lint` and
# `make bench` add requirements-dev.txt (test, lint, type and benchmark tools).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
# Background-job workers `make run` starts beside the server.
WORKERS ?= 1
PYTEST_ARGS ?=
BENCH_ARGS ?=
# A socket that stops answering pings for 20 s is closed, and its buffered frames freed.
DAPHNE_ARGS ?= --ping-interval 10 --ping-timeout 20

# Development defaults for `make run`; override any of them in the environment.
RUN_ENV := DJANGO_DEBUG=$${DJANGO_DEBUG:-1}
# Tests run with debug off, as production does, on a key that is for tests only, and hash
# passwords with a fast hasher (PBKDF2's iterations were most of the suite's time).
TEST_ENV := DJANGO_SECRET_KEY=$${DJANGO_SECRET_KEY:-roomcast-tests-only} \
	DJANGO_PASSWORD_HASHERS=$${DJANGO_PASSWORD_HASHERS:-django.contrib.auth.hashers.MD5PasswordHasher} \
	DJANGO_SSL_REDIRECT=$${DJANGO_SSL_REDIRECT:-0} \
	DJANGO_ALLOWED_HOSTS=$${DJANGO_ALLOWED_HOSTS:-testserver,localhost,127.0.0.1}

.PHONY: install install-dev run test lint typecheck typecheck-gap format bench clean

install: $(VENV)/.installed

# What the site needs at run time: all `make run` installs.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

# Tests, lint, types and benchmarks on top.
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: install
	$(RUN_ENV) $(BIN)/python manage.py migrate --no-input
	$(RUN_ENV) $(BIN)/python manage.py seed_demo
	@echo "Roomcast on http://127.0.0.1:$(PORT)/ (with $(WORKERS) background-job worker(s))"
	# daphne and the job workers start together and stop together (Ctrl-C stops both).
	$(RUN_ENV) $(BIN)/python manage.py serve --port $(PORT) --workers $(WORKERS) -- $(DAPHNE_ARGS)

test: install-dev
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy with django-stubs over the whole project; strict on the live core and the write layer
# (pyproject.toml). django-stubs imports the settings, hence the test environment.
typecheck: install-dev
	$(TEST_ENV) $(BIN)/mypy

# What the baseline in pyproject.toml still hides: the same check without it.
typecheck-gap: install-dev
	config=$$(mktemp --suffix=.toml) && \
	sed '/# mypy-baseline-start/,/# mypy-baseline-end/d' pyproject.toml > $$config && \
	$(TEST_ENV) $(BIN)/mypy --config-file $$config; status=$$?; rm -f $$config; exit $$status

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache staticfiles
