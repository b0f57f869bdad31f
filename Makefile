# The two commands of the README. Both create .venv and install on first use.
#   make demo [ARGS="--rounds 3 --sites 4"]   a complete federated run on synthetic hospitals
#   make test [ARGS="-k ingest"]              ruff, mypy, then the test suite (what CI runs)
VENV := .venv

.PHONY: demo test install
demo: $(VENV)/.installed
	$(VENV)/bin/cmrfl demo $(ARGS)

test: $(VENV)/.installed
	scripts/test.sh $(ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh
