# umonitor: `make demo` runs the demo, `make test` the test suite; both set up first.
.PHONY: setup demo test lint guests unit bench fuzz clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

lint: setup
	.venv/bin/ruff check src tests bench guests
	.venv/bin/ruff format --check src tests bench guests
	.venv/bin/mypy

# Real Unikraft, Nanos and rumprun test guests, built from ../shared/unikernels (or
# $$UMONITOR_UNIKERNEL_SOURCES) once and cached under build/unikernels/.
guests: setup
	.venv/bin/python guests/build.py unikraft nanos rumprun >/dev/null

test: setup lint guests
	.venv/bin/python -m pytest -q

unit: setup
	.venv/bin/python -m pytest -q tests/unit

bench: setup
	.venv/bin/python bench/ingest.py --guests 8 --records 250000 --window 262144

fuzz: setup
	FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60) bash scripts/fuzz.sh $(FUZZ_TARGETS)

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
