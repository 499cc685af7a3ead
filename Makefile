# memstate-rs — every task the project has, from a fresh checkout.
#
#   make demo           three nodes share one file journal, write concurrently, converge
#   make test           starts local backends (Kafka, Kinesis emulator) where this
#                       machine can, runs every test and the conformance suite, stops them
#   make bench          benchmarks (never part of `make test`)
#   make lint           rustfmt check, clippy with warnings denied, rustdoc with warnings denied
#   make fmt            format the code
#   make backends-up    start local backends; their endpoints go to .backends/env
#   make backends-down  stop them

CARGO ?= cargo
BACKENDS := integration-tests/scripts/backends.sh

.PHONY: demo test test-unit bench lint fmt backends-up backends-down doc

demo:
	$(CARGO) run --release -p memstate-cli --no-default-features -- demo

test:
	bash $(BACKENDS) run -- $(MAKE) --no-print-directory test-unit

# The tests alone, with whatever endpoints the environment already names.
test-unit:
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	@# Each adapter's own server tests are #[ignore]d unless its endpoint is named.
	@if [ -n "$$MEMSTATE_KAFKA_BOOTSTRAP" ]; then set -x; $(CARGO) test -p memstate-kafka -- --ignored; fi
	@if [ -n "$$MEMSTATE_KINESIS_ENDPOINT" ]; then set -x; $(CARGO) test -p memstate-kinesis -- --ignored; fi
	@if [ -n "$$MEMSTATE_EVENTSTORE_URL" ]; then set -x; $(CARGO) test -p memstate-eventstore -- --ignored; fi

bench:
	$(CARGO) run --release -p memstate-cli -- bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

doc:
	$(CARGO) doc --workspace --no-deps

fmt:
	$(CARGO) fmt --all

backends-up:
	bash $(BACKENDS) up

backends-down:
	bash $(BACKENDS) down
