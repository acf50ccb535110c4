# Bulkhead. `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO       ?= go
BIN      := bin/bulkhead
GOFLAGS_TEST ?=
TESTFLAGS ?= -count=1 -timeout 20m
WITHPG   := $(GO) run ./internal/cmd/withpg
CONSOLE  := app/console/web

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# `bulkhead version` and the bulkhead_build_info metric say which build runs.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/bulkheadhq/bulkhead/internal/build.version=$(VERSION) -X github.com/bulkheadhq/bulkhead/internal/build.commit=$(COMMIT)

.PHONY: build
build: ## Build bin/bulkhead
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bulkhead

.PHONY: deps
deps: ## Install what the tests and `make run` need (PostgreSQL, PgBouncer) where missing
	scripts/install-deps.sh

.PHONY: deps/citus
deps/citus: deps ## Build Citus from the vendored source into the local PostgreSQL 15 (cached)
	scripts/install-citus.sh

.PHONY: run
run: deps build ## Serve on http://127.0.0.1:8080 (BULKHEAD_HTTP_ADDR) over a throwaway PostgreSQL under .dev/; writes .dev/env
	@# Built, not `go run`: go run exits 1 when interrupted, and Ctrl-C is
	@# how make run is meant to end (devrun then exits 0).
	$(GO) build -o bin/devrun ./internal/cmd/devrun
	bin/devrun -bin $(BIN)

.PHONY: test
test: deps lint generate/check test/go helm/test ## Run every test against a real PostgreSQL (and the chart tests)

.PHONY: test/go
test/go: ## Run the Go tests under a throwaway PostgreSQL and PgBouncer
	$(WITHPG) -pgbouncer -- $(GO) test $(GOFLAGS_TEST) $(TESTFLAGS) ./...

# On Citus: the cluster's own test, migrate and the control plane, the
# shared-tables strategy and the schema strategy, each with its conformance
# suite and its Citus-only tests (build tag citus: tenants' rows, or tenant
# schemas, on different workers), export and import (app/archive: an
# imported rls tenant's rows on its shard's worker), verify's Citus
# invariants, and the fault tests (the restart test brings its own plain
# server, so it is not run here). PgBouncer stands in front of the
# coordinator, for the tests that go through it. Skipped for rls: the conformance runs with the
# application's tenant filter rewritten away — without tenant_id = $1 the
# stores' row-locking reads (FOR KEY SHARE) span every shard, which Citus
# refuses; the database wall alone is attacked on Citus by the suite's raw
# SQL. (A schema tenant is one shard group, so the schema strategy runs
# them all.) Not yet: the database strategy's own tests (its tenants'
# databases are plain ones; app/archive round-trips through them here).
CITUS_SKIP ?= TestConformanceDatabaseWallAlone|TestConformanceCatchesALeak
# The API's answers to what a write can break (a duplicate account, budget
# or import id, a budget's missing account, an account still referenced),
# which Citus relays without the constraint's name (store.Constraints).
CITUS_API ?= ^(TestAccounts|TestBudgets|TestFOCUSBadRowWritesNothing)$$
CITUS_GOTEST := $(GO) test -tags citus $(TESTFLAGS)

.PHONY: test/citus
test/citus: deps/citus ## Run the isolation tests on a Citus coordinator and two workers
	$(WITHPG) -citus -pgbouncer -- bash -c '\
		$(CITUS_GOTEST) -run Citus ./internal/pgcluster ./isolation/verify && \
		$(CITUS_GOTEST) -skip "$(CITUS_SKIP)" ./app/control ./app/archive ./isolation/rls && \
		$(CITUS_GOTEST) -run "$(CITUS_API)" ./app/httpapi && \
		$(CITUS_GOTEST) ./isolation/schema && \
		$(CITUS_GOTEST) -run TestFault -skip TestFaultPostgresRestartUnderLoad ./isolation/isolationtest'

.PHONY: test/race
test/race: deps ## Run the Go tests with the race detector
	$(WITHPG) -pgbouncer -- $(GO) test -race $(TESTFLAGS) ./...

.PHONY: test/short
test/short: deps ## Run the quick tests only
	$(WITHPG) -pgbouncer -- $(GO) test -short $(TESTFLAGS) ./...

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt wants to rewrite:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: lint/api
lint/api: ## Lint app/httpapi/openapi.yaml with Spectral's and Redocly's recommended rules (npm; cached)
	scripts/apilint.sh

.PHONY: generate
generate: ## Regenerate the strategy lists from app.Strategies and the server interface from app/httpapi/openapi.yaml
	$(GO) generate ./app ./app/httpapi

.PHONY: generate/check
generate/check: ## Fail if regenerating would change the checked-in code or the strategy lists
	@$(GO) run ./internal/cmd/strategylists -check
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp app/httpapi/api.gen.go "$$tmp/api.gen.go"; \
	$(GO) generate ./app/httpapi; \
	if ! diff -u "$$tmp/api.gen.go" app/httpapi/api.gen.go; then \
		cp "$$tmp/api.gen.go" app/httpapi/api.gen.go; \
		echo "app/httpapi/api.gen.go is stale: run make generate and commit it"; exit 1; fi

.PHONY: helm/test
helm/test: ## Lint, render and test the chart on Helm 3 and Helm 4, offline
	scripts/helm-tools.sh
	scripts/helm-test.sh
	cd helm && $(GO) test -count=1 ./...

.PHONY: console
console: ## Rebuild the web console into app/console/dist (needs npm; the build is committed, so make build does not)
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

.PHONY: console/check
console/check: ## Rebuild the console from scratch elsewhere; fail unless it is byte for byte the committed build
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; mkdir "$$tmp/web"; \
	(cd $(CONSOLE) && tar --exclude=./node_modules -cf - .) | (cd "$$tmp/web" && tar -xf -); \
	(cd "$$tmp/web" && npm ci --no-audit --no-fund --loglevel=error && node build.mjs --out "$$tmp/dist" --manifest "$$tmp/build.json") >/dev/null; \
	diff -r app/console/dist "$$tmp/dist"; diff app/console/build.json "$$tmp/build.json"; \
	echo "ok   app/console/dist is the build of app/console/web"

.PHONY: console/screenshots
console/screenshots: deps ## Retake the README's console screenshots (docs/console-*.png) with the browser tests
	$(WITHPG) -pgbouncer -- env BULKHEAD_CONSOLE_SCREENSHOTS=$(CURDIR)/docs \
		$(GO) test -count=1 -run 'TestConsole/(DashboardTotalsMatchTheAPI|UploadShowsProgressAndLands|OperatorConsole)$$' ./app/console

.PHONY: bench
bench: deps build ## Run the benchmarks; write bench/results/latest.{json,md,svg} and console-latest.{json,md}
	$(GO) run ./bench -out bench/results
	$(GO) run ./bench/console -out bench/results

.PHONY: bench/quick
bench/quick: deps build ## A few-minute smoke of make bench's figures, written to tmp/bench-quick/latest.{json,md,svg}
	$(GO) run ./bench -out tmp/bench-quick -tenants 60 -large 2 -large-rows 20000 -small-rows 200 \
		-rounds 3 -duration 1s -fixed-duration 1s -warmup 300ms -warmup-limit 5s -provision-sample 5 -noisy=false -focus-rows 5000 -settle=false

# The issue's second tenant count: rls and schema (and the baseline) at
# 10,000 tenants — provisioning, the migration anchor, the point read and
# the cost list, 3 rounds. The database strategy is left out: 10,000
# databases of about 7.5 MB each need more disk than these machines have.
BENCH_SCALE_FLAGS ?= -tenants 10000 -large 10 -large-rows 20000 -small-rows 100 \
	-rounds 3 -duration 1500ms -fixed-duration 3s -warmup 500ms -provision-sample 5 \
	-strategies baseline,rls,schema -workloads point_read,cost_list -noisy=false -focus-rows 0
.PHONY: bench/scale
bench/scale: deps build ## rls and schema at 10,000 tenants; write bench/results/scale/latest.{json,md,svg}
	$(GO) run ./bench -out bench/results/scale $(BENCH_SCALE_FLAGS)

# Same workloads on plain PostgreSQL and on a Citus coordinator with two
# workers (started here, on this machine), for the rls and schema
# strategies: Citus ÷ plain ratios, the database CPU per request on each
# side, and what the hop costs. Smaller than make bench by default (200
# tenants, 3 rounds): the Citus cluster holds another copy of each data
# set. BENCH_CITUS_FLAGS sizes it. Its smoke test (TestCitusSmoke, build
# tag citus, about a minute: it starts its own four servers) is not in
# test/citus: go test -tags citus -run TestCitusSmoke ./bench
BENCH_CITUS_FLAGS ?= -tenants 200 -large 4 -large-rows 100000 -small-rows 500 \
	-rounds 3 -duration 1500ms -fixed-duration 3s -warmup 500ms -provision-sample 10
.PHONY: bench/citus
bench/citus: deps/citus build ## Run rls and schema on plain PostgreSQL and on Citus; write bench/results/citus-latest.{json,md}
	$(GO) run ./bench -citus -out bench/results $(BENCH_CITUS_FLAGS)

.PHONY: clean
clean: ## Remove build output and the dev database
	rm -rf bin tmp .dev
