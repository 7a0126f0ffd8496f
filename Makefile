# The one entry point for humans and CI alike.
SHELL := /bin/bash
PYTHON ?= python3
STATE ?= .crossfarm
BUILDER_IMAGE ?= crossfarm/builder:1
FETCHER_IMAGE ?= crossfarm/fetcher:1
ARM64_IMAGE ?= crossfarm/arm64-test:1
# a second toolchain (Debian's rustc 1.63, with the wasm32 std) for the toolchain tests
BUILDER_163_IMAGE ?= crossfarm/builder-1.63:1
APT_PACKAGES := redis-server postgresql mmdebstrap qemu-user-static binfmt-support libc6-arm64-cross libgcc-s1-arm64-cross file git procps iproute2 docker-registry docker-compose chromium

DIST ?= dist

.PHONY: up down test lint typecheck unit integration install image images demo dist release-images release-test

up: install image ## install what is missing, start the farm here, run a demo build
	$(PYTHON) deploy/local/farm.py up --dir $(STATE)
	$(MAKE) --no-print-directory demo

down: ## stop what `make up` started
	$(PYTHON) deploy/local/farm.py down --dir $(STATE)

test: install images lint typecheck ## every check and every test but the release tier (builds missing images first)
	$(PYTHON) -m pytest -m "not release" tests

unit:
	$(PYTHON) -m pytest tests/unit

integration:
	$(PYTHON) -m pytest -m "not release" tests/integration

lint:
	$(PYTHON) -m ruff check .
	lint-imports

# mypy follows the installed names (crossfarm.shared, …): give it a tree with those names.
# tests/fakes.py is checked too: it holds each fake to the Protocol it stands in for.
typecheck:
	@rm -rf build/typecheck && mkdir -p build/typecheck/crossfarm
	@for part in shared controller worker client; do ln -s ../../../$$part build/typecheck/crossfarm/$$part; done
	MYPYPATH=build/typecheck $(PYTHON) -m mypy -p crossfarm.shared -p crossfarm.controller -p crossfarm.worker -p crossfarm.client
	MYPYPATH=build/typecheck $(PYTHON) -m mypy --disallow-untyped-defs tests/fakes.py

install: ## apt and pip packages, only what is missing
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing $$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@$(PYTHON) -c "import crossfarm.controller, crossfarm.worker, fastapi, celery, docker, pytest, build, twine, alembic, psycopg, playwright, PIL, fastapi_offline, prometheus_client, flower" 2>/dev/null \
	  || $(PYTHON) -m pip install -q -e '.[dev]'
	@docker info >/dev/null 2>&1 || { echo "the Docker engine does not answer: start dockerd" >&2; exit 1; }

image: ## the builder and fetcher images, built with no registry when missing
	@docker image inspect $(BUILDER_IMAGE) >/dev/null 2>&1 \
	  || deploy/images/builder/build-offline.sh $(BUILDER_IMAGE)
	@docker image inspect $(FETCHER_IMAGE) >/dev/null 2>&1 \
	  || deploy/images/fetcher/build-offline.sh $(FETCHER_IMAGE)

# The tests also need the arm64 image (a truly-arm64 worker under QEMU, ~8 min to make);
# its script re-registers qemu-aarch64 with binfmt_misc every time, as a reboot drops it.
images: image
	@docker image inspect $(BUILDER_163_IMAGE) >/dev/null 2>&1 \
	  || deploy/images/builder-1.63/build-offline.sh $(BUILDER_163_IMAGE)
	deploy/images/arm64-test/build-offline.sh $(ARM64_IMAGE)

# What CI installs the CLI from (docs/ci.md): the wheel, and the sdist it was built from
# (python -m build makes the wheel out of the sdist, so a file the sdist lacks is missing
# from the wheel too). Building needs PyPI for setuptools, as pip install does.
dist: ## the wheel and the sdist in $(DIST)/, checked with twine
	rm -rf $(DIST)
	$(PYTHON) -m build --outdir $(DIST) .
	$(PYTHON) -m twine check --strict $(DIST)/*

# Every image for amd64 and arm64, pushed to REGISTRY with one manifest list per image
# (deploy/images/release.sh): make release-images REGISTRY=127.0.0.1:5000 [TAG=0.1.0]
release-images:
	@[ -n "$(REGISTRY)" ] || { echo "make release-images REGISTRY=host:port [TAG=…]" >&2; exit 2; }
	deploy/images/release.sh $(REGISTRY) $(TAG)

# The slow tier: the images published to a registry on loopback, and compose brought up
# from them with a build through it. Too slow for `make test`; .ci/run runs it after.
release-test:
	$(PYTHON) -m pytest -m release tests/integration/test_release_images.py tests/integration/test_compose.py

demo: ## build the sample crate for both architectures on the running farm
	@rm -rf $(STATE)/demo && cp -r tests/fixtures/hello-c $(STATE)/demo
	cd $(STATE)/demo && $(PYTHON) -m crossfarm.client build \
	  --target x86_64-unknown-linux-gnu --target aarch64-unknown-linux-gnu --release
	@file $(STATE)/demo/target/*/release/hello-c
