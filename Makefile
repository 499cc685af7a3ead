# memstate-rs — every task the project has, from a fresh checkout.
#
#   make demo           three nodes share one file journal, write concurrently, converge
#   make test           starts local backends (Kafka, Kinesis emulator) where this
#                       machine can, runs every test and the conformance suite, stops them
#   make test-kafka-tls the Kafka conformance suite against a broker of its own with
#                       a SASL_SSL listener and SCRAM users (certificates made by the script)
#   make torture-kafka  fault harness: a broker of its own SIGKILLed and restarted under load
#   make torture-kafka-cluster  the same on three brokers (RF 3, min.insync.replicas 2), the
#                       partition leader killed each time (KAFKA_KILLS=N kills, default 5)
#   make bench          benchmarks (never part of `make test`)
#   make lint           rustfmt check, clippy with warnings denied, rustdoc with warnings denied
#   make fmt            format the code
#   make backends-up    start local backends; their endpoints go to .backends/env
#   make backends-down  stop them
#   make fuzz           property-based fuzzing, a million inputs per target (CI: a short pass in make test)
#   make torture        fault harnesses: writers SIGKILLed, torn and cut journals (CI: a short run)
#   make torture-failover  leader failover: the leader SIGKILLed or SIGSTOPped, its held-back
#                       writes landing after the next claim, on a file journal and on a Kafka
#                       broker of its own (FAILOVERS=N per backend, default 4: the CI form)
#   make mutants        cargo-mutants over the guarantee code of memstate-core and memstate-file

CARGO ?= cargo
BACKENDS := integration-tests/scripts/backends.sh

.PHONY: demo test test-unit test-kafka-tls torture torture-kafka torture-kafka-cluster bench lint fmt backends-up backends-down doc

demo:
	$(CARGO) run --release -p memstate-cli --no-default-features -- demo

test:
	bash $(BACKENDS) run -- $(MAKE) --no-print-directory test-unit

# The tests alone, with whatever endpoints the environment already names.
test-unit:
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	@# examples/ builds in every run (--all-targets above); the file-journal ones also run.
	$(CARGO) build --workspace --examples
	$(CARGO) run -q -p memstate-examples --example quickstart
	$(CARGO) run -q -p memstate-examples --example failover
	@if [ -n "$$MEMSTATE_KAFKA_BOOTSTRAP" ]; then set -x; $(CARGO) run -q -p memstate-examples --example kafka_cluster; fi
	@# Each adapter's own server tests are #[ignore]d unless its endpoint is named.
	@if [ -n "$$MEMSTATE_KAFKA_BOOTSTRAP" ]; then set -x; $(CARGO) test -p memstate-kafka -- --ignored; fi
	@if [ -n "$$MEMSTATE_KINESIS_ENDPOINT" ]; then set -x; $(CARGO) test -p memstate-kinesis -- --ignored; fi
	@if [ -n "$$MEMSTATE_EVENTSTORE_URL" ]; then set -x; $(CARGO) test -p memstate-eventstore -- --ignored; fi

# A second broker (ports 19392/19393, work dir .backends/kafka-tls) whose only
# client listener is SASL_SSL with SCRAM-SHA-512; the suite gets its client
# properties through MEMSTATE_KAFKA_PROPERTIES_FILE.
KAFKA_TLS := MEMSTATE_KAFKA_NAME=kafka-tls MEMSTATE_KAFKA_SECURITY=sasl_ssl \
	MEMSTATE_KAFKA_PORT=19392 MEMSTATE_KAFKA_CONTROLLER_PORT=19393 \
	MEMSTATE_KAFKA_HEAP_OPTS="-Xms128m -Xmx256m" MEMSTATE_REQUIRE=kafka
test-kafka-tls:
	$(KAFKA_TLS) bash integration-tests/scripts/kafka.sh run -- sh -c '\
		$(CARGO) test -p memstate-conformance --test kafka_auth -- --ignored && \
		$(CARGO) test -p memstate-conformance --test kafka'

# Fault harness (integration-tests/src/bin/torture_kafka.rs): prints counts and
# fails on any acknowledged command lost, any command applied twice, or nodes
# whose state hashes differ. CI runs a short form (KAFKA_KILLS=1 and 2).
KAFKA_KILLS ?= 5
TORTURE_KAFKA := $(CARGO) run -q -p memstate-conformance --bin torture_kafka --
KAFKA_TORTURE := env MEMSTATE_KAFKA_NAME=kafka-torture MEMSTATE_KAFKA_PORT=19292 \
	MEMSTATE_KAFKA_CONTROLLER_PORT=19293 MEMSTATE_KAFKA_HEAP_OPTS="-Xms128m -Xmx256m" \
	bash integration-tests/scripts/kafka.sh
KAFKA_CLUSTER := bash integration-tests/scripts/kafka-cluster.sh

torture: torture-kafka torture-kafka-cluster

torture-kafka:
	$(KAFKA_TORTURE) run -- $(TORTURE_KAFKA) --bootstrap 127.0.0.1:19292 --replication 1 \
		--kills $(KAFKA_KILLS) --kill-cmd '$(KAFKA_TORTURE) kill' \
		--restart-cmd '$(KAFKA_TORTURE) start >/dev/null'

torture-kafka-cluster:
	$(KAFKA_CLUSTER) run -- $(TORTURE_KAFKA) \
		--bootstrap 127.0.0.1:19510,127.0.0.1:19520,127.0.0.1:19530 --replication 3 \
		--kills $(KAFKA_KILLS) --kill-cmd '$(KAFKA_CLUSTER) kill {node}' \
		--restart-cmd '$(KAFKA_CLUSTER) start-node {node}'

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


.PHONY: fuzz torture-file torture-failover mutants

# Fuzzing: the proptest targets `cargo test` runs briefly, with a million inputs each.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p memstate-core --test fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p memstate-file --test fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p memstate-kafka --lib fuzz::
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p memstate-kinesis --lib fuzz::
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p memstate-eventstore --lib fuzz::

# Fault harnesses. Each harness is one prerequisite of `torture`; add yours
# with its own `torture: torture-NAME` line and rule.
TORTURE_ROUNDS ?= 300
TORTURE_SEED ?= 1
torture: torture-file
torture-file:
	$(CARGO) run --release -p memstate-conformance --bin torture_file -- --rounds $(TORTURE_ROUNDS) --seed $(TORTURE_SEED)

# Leader-failover harness (integration-tests/src/bin/torture_failover/): three
# node processes in single-leader mode, the leader SIGKILLed or SIGSTOPped and
# resumed, its held-back writes landing after the next claim, clients retrying
# under the same ids. First on a file journal, then on a Kafka broker of its own
# (instance kafka-failover, ports 19692/19693). FAILOVERS per backend: the
# default 4 is the short form (CI, about a minute each); FAILOVERS=20 by hand.
FAILOVERS ?= 4
TORTURE_FAILOVER := $(CARGO) run -q -p memstate-conformance --bin torture_failover --
KAFKA_FAILOVER := env MEMSTATE_KAFKA_NAME=kafka-failover MEMSTATE_KAFKA_PORT=19692 \
	MEMSTATE_KAFKA_CONTROLLER_PORT=19693 MEMSTATE_KAFKA_HEAP_OPTS="-Xms128m -Xmx256m" \
	bash integration-tests/scripts/kafka.sh
torture: torture-failover
torture-failover:
	$(TORTURE_FAILOVER) --backend file --failovers $(FAILOVERS)
	$(KAFKA_FAILOVER) run -- $(TORTURE_FAILOVER) --backend kafka \
		--bootstrap 127.0.0.1:19692 --failovers $(FAILOVERS)

# Mutation testing of the guarantee code (slow: hours on 2 cores for all of it).
# Narrow it with MUTANTS_ARGS, e.g. MUTANTS_ARGS="--file crates/memstate-file/src/scan.rs".
# Install: cargo install cargo-mutants --locked
MUTANTS_ARGS ?= --file crates/memstate-core/src/dedup.rs --file crates/memstate-core/src/engine/apply.rs \
	--file crates/memstate-core/src/engine/replicated.rs --file crates/memstate-core/src/skip.rs \
	--file crates/memstate-core/src/truncation.rs \
	--file crates/memstate-core/src/engine/snapshots.rs --file crates/memstate-core/src/engine/reads.rs \
	--file crates/memstate-core/src/engine/tail.rs --file crates/memstate-core/src/engine/leadership.rs \
	--file crates/memstate-core/src/engine/apply_loop.rs \
	--file crates/memstate-file/src/scan.rs --file crates/memstate-file/src/recovery.rs
mutants:
	$(CARGO) mutants --package memstate-core --package memstate-file $(MUTANTS_ARGS)
