# Maestro — the two commands that matter: `make dev` (the whole lifecycle locally) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv cluster-build cluster-up cluster-down test test-unit lint crds dev dev-down clean

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

venv: ## create/refresh .venv with every extra (idempotent)
	@./hack/venv.sh

cluster-build: ## build the local control plane binaries into the user cache (idempotent)
	@./hack/kube/build.sh >/dev/null

cluster-up: venv cluster-build ## start the local control plane (state in .state/cluster)
	@MAESTRO_KUBE_BIN=$$(./hack/kube/build.sh) $(PY) -m maestro dev cluster up

cluster-down: ## stop the local control plane
	@$(PY) -m maestro dev cluster down

crds: venv ## regenerate CRDs, the chart copy and docs/api.md from the models
	@$(PY) -m maestro crds generate

lint: venv ## ruff, mypy (strict on the operator), import layering
	@.venv/bin/ruff check operator tests bench
	@.venv/bin/mypy
	@.venv/bin/lint-imports

test: venv cluster-build ## everything: lint, unit, contract, cluster and e2e tests
	@MAESTRO_KUBE_BIN=$$(./hack/kube/build.sh) ./hack/test.sh

test-unit: venv ## only the tests that need no cluster
	@.venv/bin/pytest -m "unit" -q

clean: ## remove local state (not the build cache)
	rm -rf .state
