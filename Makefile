# Set-up and test entry points. Each target installs what it needs into $(VENV) first (idempotent:
# scripts/setup_env.sh skips the install when pyproject.toml and the package list are unchanged).
#
#   make test    install, then run the whole test suite (integration tests on the packaged models included)
#   make demo    install, then run the main job
#   make setup   install only

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?= -q
DEMO_RECIPE ?= recipes/sherlock_smollm2.yaml
DEMO_OUT ?= runs/sherlock_smollm2

export PYTHON VENV

.PHONY: setup test test-fast demo lint clean-venv

setup:
	bash scripts/setup_env.sh

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Without the integration tests that load the real packaged models (about a minute less on a cold cache).
test-fast: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) -m "not integration"

demo: setup
	@if [ -f "$(DEMO_RECIPE)" ] && $(VENV)/bin/llm-unlearn run --help >/dev/null 2>&1; then \
		echo "+ llm-unlearn run $(DEMO_RECIPE) --out $(DEMO_OUT)"; \
		$(VENV)/bin/llm-unlearn run "$(DEMO_RECIPE)" --out "$(DEMO_OUT)"; \
	else \
		echo "($(DEMO_RECIPE) or the run command is not there yet: showing the model instead)"; \
		$(VENV)/bin/llm-unlearn info smollm2-135m; \
	fi

lint: setup
	$(VENV)/bin/ruff check llm_unlearn tests

clean-venv:
	rm -rf $(VENV)
