# The one entry point for humans and CI alike.
SHELL := /bin/bash
PYTHON ?= python3
STATE ?= .crossfarm
BUILDER_IMAGE ?= crossfarm/builder:1
FETCHER_IMAGE ?= crossfarm/fetcher:1
# The tests' truly-arm64 worker: the production controller/worker image and builder for
# arm64 (deploy/images/crossfarm, builder --arch arm64), running under QEMU here.
ARM64_WORKER_IMAGE ?= crossfarm/crossfarm:test-arm64
ARM64_BUILDER_IMAGE ?= crossfarm/builder:1-arm64
# a second toolchain (Debian's rustc 1.63, with the wasm32 std) for the toolchain tests
BUILDER_163_IMAGE ?= crossfarm/builder-1.63:1
# the builder with this machine's rustup toolchain (rustc as developers run it) instead of
# Debian's: the toolchain tests and bench/vs_cross.py
BUILDER_RUSTUP_IMAGE ?= crossfarm/builder-rustup:1
APT_PACKAGES := redis-server postgresql mmdebstrap qemu-user-static binfmt-support libc6-arm64-cross libgcc-s1-arm64-cross file git procps iproute2 docker-registry docker-compose chromium

DIST ?= dist

.PHONY: up down test lint typecheck unit integration install image images demo dist release-images release-build release-test \
	image-builder-amd64 image-fetcher-amd64 image-builder-arm64 image-crossfarm-arm64 image-builder-163 \
	image-builder-rustup

up: install image ## install what is missing, start the farm here, run a demo build
	$(PYTHON) deploy/local/farm.py up --dir $(STATE)
	$(MAKE) --no-print-directory demo

down: ## stop what `make up` started
	$(PYTHON) deploy/local/farm.py down --dir $(STATE)

# The unit tier (no farm: in-process fakes, its own PostgreSQL) runs beside the
# integration tier, whose time goes mostly to builds in containers; its output follows
# once both have ended, and either failing fails the target.
test: install images lint typecheck ## every check and every test but the release tier (builds missing images first)
	@mkdir -p build; rm -f build/unit-tier.log
	@nice -n 10 $(PYTHON) -m pytest -p no:cacheprovider --durations=15 tests/unit \
	  > build/unit-tier.log 2>&1 & unit=$$!; \
	$(PYTHON) -m pytest -m "not release" --durations=25 tests/integration; integration=$$?; \
	wait $$unit; unit_status=$$?; \
	echo "== the unit tier (ran beside the integration tier) =="; cat build/unit-tier.log; \
	echo "make test: integration exited $$integration, unit exited $$unit_status"; \
	[ $$integration = 0 ] && [ $$unit_status = 0 ]

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

# Every image the tests need is a local build of deploy/images/local-build.sh, the one
# release.sh publishes (crossfarm-release/NAME:HASH-ARCH), tagged with the name the tests
# use: CI builds each image once, `make release-test` reuses them. A tag that exists is
# kept (--keep): the tests mount this checkout's code into the worker image anyway
# (tests/integration/test_arm64_worker.py), so an edit does not cost a rebuild under QEMU.
# One target an image, so `make -j2 images` builds two at a time (.ci/run does).
image: image-builder-amd64 image-fetcher-amd64 ## the builder and fetcher images, built with no registry when missing

image-builder-amd64:
	deploy/images/local-build.sh --keep builder amd64 $(BUILDER_IMAGE)

image-fetcher-amd64:
	deploy/images/local-build.sh --keep fetcher amd64 $(FETCHER_IMAGE)

# The arm64 ones run under QEMU user emulation (3-13 and 4.5-19 min on 2 cores, by load;
# started first as the longest); the script re-registers qemu-aarch64 with binfmt_misc
# every time, as a reboot drops it.
images: image-builder-arm64 image-crossfarm-arm64 image image-builder-163 image-builder-rustup

image-builder-arm64:
	deploy/images/local-build.sh --keep builder arm64 $(ARM64_BUILDER_IMAGE)

image-crossfarm-arm64:
	deploy/images/local-build.sh --keep crossfarm arm64 $(ARM64_WORKER_IMAGE)

image-builder-163:
	@docker image inspect $(BUILDER_163_IMAGE) >/dev/null 2>&1 \
	  || deploy/images/builder-1.63/build-offline.sh $(BUILDER_163_IMAGE)

# Made again when this machine's rustc is no longer the one in it (its label says which).
image-builder-rustup: image-builder-amd64
	@[ "$$(docker image inspect --format '{{index .Config.Labels "io.crossfarm.toolchain"}}' \
	    $(BUILDER_RUSTUP_IMAGE) 2>/dev/null)" = "$$(rustc -V)" ] \
	  || BUILDER=$(BUILDER_IMAGE) deploy/images/builder-rustup/build-offline.sh $(BUILDER_RUSTUP_IMAGE)

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

# Every release image built locally for both arches (local-build.sh's names), nothing
# pushed: .ci/run starts it at the lowest priority beside `make test`, so the release
# tier then finds them built.
release-build:
	@for name in builder crossfarm infra fetcher; do for arch in arm64 amd64; do \
	  deploy/images/local-build.sh $$name $$arch || exit 1; done; done

# The slow tier: the images published to a registry on loopback, and compose brought up
# from them with a build through it. Too slow for `make test`; .ci/run runs it after.
release-test:
	$(PYTHON) -m pytest -m release tests/integration/test_release_images.py tests/integration/test_compose.py

demo: ## build the sample crate for both architectures on the running farm
	@rm -rf $(STATE)/demo && cp -r tests/fixtures/hello-c $(STATE)/demo
	cd $(STATE)/demo && $(PYTHON) -m crossfarm.client build \
	  --target x86_64-unknown-linux-gnu --target aarch64-unknown-linux-gnu --release
	@file $(STATE)/demo/target/*/release/hello-c
