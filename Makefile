# Maestro — the two commands that matter: `make dev` (the whole lifecycle locally) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv vllm-venv cluster-build cluster-up cluster-down test test-unit lint crds dev dev-down clean \
	kind-up images kind-load deploy

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

test: venv cluster-build vllm-venv ## everything: CRD drift, layering, unit, contract, cluster and e2e tests
	@MAESTRO_KUBE_BIN=$$(./hack/kube/build.sh) MAESTRO_VLLM_VENV=$$(./hack/vllm-venv.sh) ./hack/test.sh

test-unit: venv ## only the tests that need no cluster
	@.venv/bin/pytest -m "unit" -q

vllm-venv: ## install vLLM for CPU into its own cached venv (idempotent)
	@./hack/vllm-venv.sh >/dev/null

dev: venv cluster-build vllm-venv ## the whole lifecycle locally: cluster, executor, operator, quickstart, summary
	@MAESTRO_KUBE_BIN=$$(./hack/kube/build.sh) MAESTRO_VLLM_VENV=$$(./hack/vllm-venv.sh) $(PY) -m maestro dev up

dev-down: ## stop everything `make dev` started
	@$(PY) -m maestro dev down

clean: ## remove local state (not the build cache)
	rm -rf .state

# --- for users with Docker (not used by the tests) ------------------------------------------------
IMAGE_REPO ?= ghcr.io/maestro-llmops
VERSION ?= 0.1.0
KIND_CLUSTER ?= maestro

kind-up: ## create a kind cluster from kind-config.yaml
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

images: ## build the operator, worker and sidecar images
	for i in operator worker sidecar; do docker build -f images/$$i/Dockerfile -t $(IMAGE_REPO)/maestro-$$i:$(VERSION) . || exit 1; done

kind-load: ## load the images into the kind cluster
	for i in operator worker sidecar; do kind load docker-image $(IMAGE_REPO)/maestro-$$i:$(VERSION) --name $(KIND_CLUSTER) || exit 1; done

deploy: ## helm install/upgrade the chart into the current kube context
	kubectl apply --server-side -f charts/maestro/crds/
	helm upgrade --install maestro charts/maestro -n maestro-system --create-namespace
