# The two commands a user needs (as root): `make demo` and `make test`.
# Both run scripts/bootstrap.sh first, which installs what is missing and is quick when nothing is.
PY := .venv/bin/python

.PHONY: demo test bench bootstrap
bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m lab demo

test: bootstrap
	@$(PY) -m pytest tests -q -p no:cacheprovider

bench: bootstrap
	@$(PY) -m bench.run
