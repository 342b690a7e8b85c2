# NovaCron's everyday commands. `make help` lists them.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

CONTROLLER_GEN := go tool controller-gen
GO_TEST_FLAGS ?= -count=1
# The image `docker-build` makes and `deploy` runs.
IMG ?= novacron/operator:latest
CONTAINER_TOOL ?= docker
# 1: build FROM base images made from Debian's archive (no registry needed);
# empty: 1 with podman, 0 (the pinned public images) with docker.
LOCAL_BASES ?=
KUBECTL ?= kubectl
# Packages whose tests need no API server.
UNIT_PKGS := $$(go list ./... | grep -v /test/)

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: deps
deps: ## Check (and on Debian as root, install) the C build dependencies.
	@hack/deps.sh

.PHONY: generate
generate: ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: ## Generate CRDs (manifests/crd/bases), RBAC (manifests/rbac, manifests/node), webhooks and built-in policies.
	$(CONTROLLER_GEN) crd rbac:roleName=novacron-manager webhook paths=./api/... paths=./operator/... \
		output:crd:artifacts:config=manifests/crd/bases output:rbac:artifacts:config=manifests/rbac \
		output:webhook:artifacts:config=manifests/webhook
	$(CONTROLLER_GEN) rbac:roleName=novacron-node paths=./devices/agent/... output:rbac:artifacts:config=manifests/node
	hack/webhook-manifests.sh
	go run ./hack/genpolicies manifests/policies

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when checked-in generated files are stale.
	@if [ -n "$$(git status --porcelain -- api/v1alpha1/zz_generated.deepcopy.go manifests/crd manifests/rbac manifests/node/role.yaml manifests/webhook manifests/policies)" ]; then \
		echo "Generated files are stale; run 'make generate manifests' and commit:"; \
		git status --porcelain -- api/v1alpha1/zz_generated.deepcopy.go manifests/crd manifests/rbac manifests/node/role.yaml manifests/webhook manifests/policies; exit 1; fi
	@echo "generated files are up to date"

.PHONY: fmt
fmt: ## gofmt and go vet.
	gofmt -l -w $$(git ls-files '*.go')
	go vet ./...

.PHONY: envtest
envtest: ## Build kube-apiserver, etcd, kubectl and kube-controller-manager from the module proxy into bin/k8s/.
	@hack/envtest.sh >/dev/null

.PHONY: dev
dev: deps ## Try NovaCron: API server, operator, scheduler and simulated hypervisor nodes on this machine (Ctrl-C stops). DEV_FLAGS="--nodes 6" etc.
	@assets=$$(hack/envtest.sh); go build -o bin/ ./cmd/novacron && bin/novacron dev --assets $$assets $(DEV_FLAGS)

##@ Test

.PHONY: test
test: deps ## Run all unit and envtest integration tests (does its own set-up), and name those skipped.
	@assets=$$(hack/envtest.sh); \
	echo "KUBEBUILDER_ASSETS=$$assets go test ./..."; \
	KUBEBUILDER_ASSETS=$$assets go test -json $(GO_TEST_FLAGS) ./... | go run ./hack/testreport

.PHONY: test-unit
test-unit: deps ## Run the tests that need no API server.
	go test $(GO_TEST_FLAGS) $(UNIT_PKGS)

.PHONY: test-integration
test-integration: deps ## Run the envtest integration tests only.
	@assets=$$(hack/envtest.sh); KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) ./test/...

.PHONY: test-e2e
test-e2e: deps ## Start `novacron dev` and run the README's kubectl workflow against it.
	@assets=$$(hack/envtest.sh); NOVACRON_E2E=1 KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) -v -run . ./test/e2e/

.PHONY: test-lab
test-lab: deps ## Run the VM lifecycle against a real libvirtd + QEMU lab node (root; installs libvirt and QEMU).
	@assets=$$(hack/envtest.sh); NOVACRON_LAB=1 KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) -v -run . ./test/lab/

.PHONY: test-deploy
test-deploy: deps ## Build the image (podman) and run the shipped Deployments, RBAC and certificates against qemu+tls lab nodes (root).
	@assets=$$(hack/envtest.sh); \
	IMG=$(IMG) CONTAINER_TOOL=podman LOCAL_BASES=$(LOCAL_BASES) hack/docker-build.sh && \
	NOVACRON_DEPLOY=1 NOVACRON_IMAGE=$(IMG) KUBEBUILDER_ASSETS=$$assets go test $(GO_TEST_FLAGS) -v -run 'TestTheShipped' ./test/e2e/

.PHONY: lab-stop
lab-stop: ## Stop every hypervisor lab node (test/lab/lab.sh stop-all).
	test/lab/lab.sh stop-all

##@ Build

.PHONY: build
build: deps ## Build every binary into bin/.
	go build -o bin/ ./cmd/...

.PHONY: run
run: deps ## Run the operator against the current kubeconfig (CRDs installed, namespace novacron-system).
	go run ./cmd/novacron-operator --namespace novacron-system --metrics-bind-address :8080 --health-probe-bind-address :8081

.PHONY: docker-build
docker-build: ## Build the image with both binaries (IMG=..., CONTAINER_TOOL=docker|podman, LOCAL_BASES=1|0).
	IMG=$(IMG) CONTAINER_TOOL=$(CONTAINER_TOOL) LOCAL_BASES=$(LOCAL_BASES) hack/docker-build.sh

.PHONY: docker-push
docker-push: ## Push the image (IMG=...).
	$(CONTAINER_TOOL) push $(IMG)

##@ Deploy (against the current kubeconfig)

.PHONY: install
install: ## Install the CRDs.
	$(KUBECTL) apply --server-side -f manifests/crd/bases

.PHONY: uninstall
uninstall: ## Remove the CRDs (and with them every NovaCron object).
	$(KUBECTL) delete --ignore-not-found -f manifests/crd/bases

.PHONY: deploy
deploy: install ## Deploy operator, scheduler, node agent, webhooks (needs cert-manager), catalog and policies with IMG.
	$(KUBECTL) apply -f manifests/operator/namespace.yaml
	$(KUBECTL) apply -f manifests/rbac -f manifests/webhook -f manifests/images
	$(KUBECTL) get -f manifests/node/config/devices.yaml >/dev/null 2>&1 || $(KUBECTL) create -f manifests/node/config/devices.yaml
	for f in manifests/operator/*.yaml manifests/scheduler/*.yaml manifests/node/*.yaml; do sed 's|image: novacron/operator:latest|image: $(IMG)|' $$f; echo ---; done | $(KUBECTL) apply -f -
	$(KUBECTL) -n novacron-system rollout status deployment/novacron-controller-manager --timeout=5m
	$(KUBECTL) apply -f manifests/policies
	if $(KUBECTL) get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then $(KUBECTL) apply -f manifests/monitoring; fi

.PHONY: undeploy
undeploy: ## Remove what deploy installed, CRDs excepted.
	$(KUBECTL) delete --ignore-not-found -f manifests/monitoring -f manifests/policies -f manifests/node -f manifests/scheduler -f manifests/webhook -f manifests/rbac -f manifests/images
	$(KUBECTL) delete --ignore-not-found -f manifests/operator
