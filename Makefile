# unionfs — build, test and demo entry points.
#
#   make test        install what is missing, then run the test suite (what CI runs, via .ci/run)
#   make demo        install what is missing, then mount the sample stack in mounts/ and walk through it
#   make demo-image  import the sample image archive, mount it, change it, diff, commit and save it
#   make demo-container  run a podman container on unionfs (its mount_program), as root
#   make bench       compare unionfs with the kernel's overlayfs, fuse-overlayfs and unionfs-fuse
#                    (and, as bench-pull, image pull against skopeo and podman)
#   make soak        long reliability runs (MINUTES=10 by default)
#   make clean       remove the virtualenv and caches
#
# Everything the project needs is installed from here: nothing is expected to be set up by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# Whole-suite wall-clock budget (seconds). On expiry pytest gets SIGINT, so its fixtures still
# unmount what they mounted, and the run fails. Each single test is capped at 120 s as well.
TEST_BUDGET ?= 600
PYTEST_ARGS ?=

# System packages the tests use: fuse3 (fusermount3: mounts by users other than root, and
# unmounting; unionfs links no FUSE library), attr (getfattr/setfattr), a static busybox,
# chromium (the explorer's browser test), fuse-overlayfs (the reference for the uid/gid
# mapping options), docker-registry (a real registry for image pull/push), skopeo (pushes
# the reference images into it), and podman with runc, uidmap and slirp4netns (containers on
# unionfs as mount_program, root and rootless; podman pull of what unionfs pushed; the
# reference export of the images), xfsprogs (an xfs with reflink on a loop device: copy-up
# by clone).
APT_PACKAGES := fuse3 attr busybox-static chromium fuse-overlayfs docker-registry skopeo \
                podman runc uidmap slirp4netns catatonit xfsprogs
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps venv test demo demo-image demo-container bench bench-pull soak clean

all: test

# deps: install the system packages with apt, but only when something is missing (fast path:
# nothing to do, no network).
deps:
	@if command -v fusermount3 >/dev/null 2>&1 \
	   && command -v setfattr >/dev/null 2>&1 && [ -x /usr/bin/chromium ] \
	   && command -v fuse-overlayfs >/dev/null 2>&1 \
	   && command -v docker-registry >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1 \
	   && command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
	   && command -v newuidmap >/dev/null 2>&1 && [ -x /usr/sbin/mkfs.xfs ] \
	   && { command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ]; }; then \
	    echo "deps: $(APT_PACKAGES) already installed"; \
	else \
	    echo "deps: installing $(APT_PACKAGES) with apt-get"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    $(SUDO) apt-get update -qq \
	    && $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) </dev/null; \
	fi

# venv: a virtualenv with unionfs installed editable plus the test extras. Redone when the
# package metadata changes (or when the package directory first appears).
venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(wildcard unionfs/__init__.py)
	@echo "venv: creating $(VENV) and installing unionfs[test]"
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

# test: the whole suite. Fails on any test failure, on a run that collects no test at all
# (pytest exit 5) and on overrunning TEST_BUDGET.
test: deps venv
	@rc=0; \
	timeout -s INT -k 60 $(TEST_BUDGET) \
	    $(VENV)/bin/python -m pytest -q -p no:cacheprovider --timeout=120 $(PYTEST_ARGS) tests \
	    || rc=$$?; \
	case $$rc in \
	    0) ;; \
	    5) echo "make test: FAILED: pytest collected no tests" >&2; exit 1 ;; \
	    124|137) echo "make test: FAILED: suite exceeded $(TEST_BUDGET)s" >&2; exit 1 ;; \
	    *) echo "make test: FAILED (pytest exit $$rc)" >&2; exit $$rc ;; \
	esac

# demo: mount the sample layer stack (mounts/demo.toml) and show reads, copy-up, whiteouts and
# an opaque directory, step by step.
demo: deps venv
	scripts/demo.sh

# demo-image: the image commands on mounts/images/sample-oci.tar, in a temporary store.
demo-image: deps venv
	mounts/images/demo.sh

# demo-container: podman with unionfs as containers-storage's mount_program, in a private
# store in a temp dir: a container's root on unionfs, its upper dir's whiteouts, a commit.
# Installs podman and runc when missing.
demo-container: deps venv
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 || { \
	    export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get update -qq \
	    && $(SUDO) apt-get install -y -qq --no-install-recommends podman runc </dev/null; }
	scripts/demo_container.sh

# bench: the benchmark of issue 4 (scripts/bench.py; BENCH_ARGS="--full" for the issue's sizes,
# "--quick" for a smoke run; "--workloads rootfs,podman,parallel" for the real workloads of
# scripts/bench_workloads.py, which install debootstrap and podman when missing). Installs the
# peers and matplotlib for the chart when missing.
BENCH_ARGS ?=
bench: deps venv
	@command -v fuse-overlayfs >/dev/null 2>&1 && [ -x /usr/bin/unionfs ] || { \
	    export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get update -qq \
	    && $(SUDO) apt-get install -y -qq --no-install-recommends fuse-overlayfs unionfs-fuse </dev/null; }
	$(VENV)/bin/pip install -q --disable-pip-version-check -e '.[bench]'
	$(VENV)/bin/python scripts/bench.py --python $(VENV)/bin/python $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-pull

# bench-pull: `unionfs image pull` of a 10-layer / 200 MB image from a local registry against
# `skopeo copy docker://... oci:...` and `podman pull` of the same image (scripts/bench_pull.py);
# part of `make bench`. Installs podman when missing.
bench-pull: deps venv
	@command -v podman >/dev/null 2>&1 || { \
	    export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get update -qq \
	    && $(SUDO) apt-get install -y -qq --no-install-recommends podman </dev/null; }
	$(VENV)/bin/python scripts/bench_pull.py $(BENCH_PULL_ARGS)

# soak: the long reliability runs (random operations against the kernel's overlayfs, crash
# loops, fsx, memory on a large walk) for MINUTES minutes; prints the seed of any mismatch.
MINUTES ?= 10
SOAK_ARGS ?=
soak: deps venv
	$(VENV)/bin/python scripts/soak.py --minutes $(MINUTES) $(SOAK_ARGS)

# clean: remove the virtualenv, build output and caches.
clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './.git/*' -prune -exec rm -rf {} +
