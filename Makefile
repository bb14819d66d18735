# The two commands of the README, plus the demo. Each one installs what it needs first
# (Debian 12 packages, idempotent: apt-get runs only when something is missing).
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# ccache hits across clones of the repo (CI builds a fresh clone): paths relative to here.
export CCACHE_BASEDIR := $(CURDIR)
export CCACHE_NOHASHDIR := 1

# Debian 12 packages. RUN_PACKAGES: what `make run` needs — the toolchain, the libraries, and
# run's local demo upstream when Docker Hub is unreachable (docker-registry, curl).
# DEB_PACKAGES: those and the test frameworks the default build compiles (GTest, GMock, Google
# Benchmark). TEST_PACKAGES: the rest, for the test, lint, fuzz and comparison targets: skopeo,
# htpasswd (apache2-utils), openssl, promtool (prometheus), python3 and PyYAML, dpkg-dev
# (dpkg-shlibdeps computes the .deb's Depends), shellcheck, clang-14 and its fuzzer runtime,
# clang-tidy-14, clang-format-14.
RUN_PACKAGES := cmake ninja-build g++ make ccache pkg-config \
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libssl-dev \
  librocksdb-dev prometheus-cpp-dev libyaml-cpp-dev \
  docker-registry curl ca-certificates
DEB_PACKAGES := $(RUN_PACKAGES) libgtest-dev libgmock-dev libbenchmark-dev
TEST_PACKAGES := skopeo apache2-utils openssl prometheus python3 python3-yaml dpkg-dev \
  shellcheck clang-14 libclang-rt-14-dev libfuzzer-14-dev clang-tidy-14 clang-format-14

.PHONY: deps run-deps test-deps build run test sanitize fuzz soak lint demo compare timetostart dist \
  deb clean-install-check clean format

# $(call install_missing,PACKAGES): apt-get only when one of them is missing.
define install_missing
@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -n "$$missing" ]; then \
  echo "installing Debian packages:" $$missing; \
  $(SUDO) apt-get update -qq && \
  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
fi
endef

deps:
	$(call install_missing,$(DEB_PACKAGES))

test-deps: deps
	$(call install_missing,$(TEST_PACKAGES))

# A tree `make run` configured without the tests is turned to a full one here.
build: deps
	@[ -f $(BUILD)/build.ninja ] && grep -q '^LAYERCACHE_TESTS:BOOL=ON' $(BUILD)/CMakeCache.txt || \
	  cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DLAYERCACHE_TESTS=ON
	cmake --build $(BUILD)

# Runs layercached in the foreground: the built-in config (Docker Hub), a local demo upstream
# when Docker Hub is unreachable, or CONFIG=path/to/file.yaml.
# Installs only what building and running need (RUN_PACKAGES: no test framework), and builds
# only the binaries it runs, in a tree without the tests unless one with them is there.
run-deps:
	$(call install_missing,$(RUN_PACKAGES))

run: run-deps
	@[ -f $(BUILD)/build.ninja ] || \
	  cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DLAYERCACHE_TESTS=OFF
	cmake --build $(BUILD) --target layercached layercachectl layercache-seed
	BUILD=$(BUILD) CONFIG=$(CONFIG) bash scripts/run.sh

# The runtime tests (real dockerd and containerd, `ctest -L runtime`) and the lazy-pull tests
# (containerd + the stargz snapshotter the build makes from Debian's Go library, `ctest -L
# lazy`) need root and Debian packages: installed here, before the build (which builds the
# snapshotter only where Go and the library are there), unless RUNTIME_TESTS=0; without them
# (or root) the tests are reported as skipped.
test: test-deps
	bash scripts/install-runtimes.sh
	$(MAKE) build
	cd $(BUILD) && ctest --output-on-failure -j2 $(CTEST_ARGS)

# The unit, integration and e2e suites in an ASan+UBSan build and in a TSan build
# ($(BUILD)/sanitize/asan, .../tsan); `make test` runs the same as `ctest -L sanitize`.
# SANITIZERS=asan (or tsan) for one. docs/reliability.md, "Sanitizers".
sanitize: test-deps
	SANITIZE_BUILD=$(BUILD)/sanitize bash scripts/sanitize.sh || [ $$? = 77 ]

# The libFuzzer harnesses of fuzz/ (a separate clang build in $(BUILD)/fuzz), 300 s each;
# `ctest -L fuzz` (part of `make test`) runs them for 20 s. docs/reliability.md, "Fuzzing".
FUZZ_SECONDS ?= 300
fuzz: test-deps
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(BUILD)/fuzz bash scripts/fuzz.sh

# The soak test (ctest -L soak, 40 s in `make test`) for SOAK_SECONDS; prints the table row of
# docs/reliability.md, "Soak".
SOAK_SECONDS ?= 300
soak: build
	cd $(BUILD) && SOAK_SECONDS=$(SOAK_SECONDS) SOAK_REPORT=$(CURDIR)/$(BUILD)/soak.json \
	  ctest -L soak --output-on-failure -V

# Static analysis (issue 20): clang-tidy-14 with the checks of .clang-tidy over every source
# folder but tests/ (through $(BUILD)/compile_commands.json; configured here if missing), and
# clang-format-14 --dry-run over every tracked .cpp/.hpp; fails on any finding. 7m40s of CPU
# (~4 min on 2 idle cores) the first time; units unchanged since they last passed are skipped
# (their keys in ~/.cache/layercache/clang-tidy; LINT_CACHE_DIR= turns that off). `make test`
# runs the same (ctest -L lint). LINT_FILES='tests/.*' lints the tests. docs/reliability.md,
# "Static analysis".
lint: test-deps
	@[ -f $(BUILD)/compile_commands.json ] || cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	LINT_BUILD=$(BUILD) bash scripts/lint.sh

# Offline demo: a local docker-registry seeded with a generated image, layercache in front,
# skopeo pulling through it.
demo: build
	$(call install_missing,skopeo)
	BUILD=$(BUILD) bash scripts/demo.sh

# Side by side: the upstream directly, layercache, nginx (slice cache) and docker-registry as a
# pull-through proxy, cold and warm (docs/benchmarks.md). Knobs: see scripts/compare.sh, e.g.
# THROTTLE_RTT_MS=30 THROTTLE_BW=25MB for a distant upstream.
compare: test-deps
	@command -v nginx >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx; }
	BUILD=$(BUILD) bash scripts/compare.sh

# Time to start (issue 19): pull start to container exit for one image and command, the
# upstream behind the throttle (30 ms, 25 MB/s per connection): full pull direct and through
# layercache, stargz lazy direct, through a cold layercache, on a fresh node with the imported
# profile, warm; and the lazy ones for 4× larger images (docs/benchmarks.md). Root and
# /dev/fuse; installs containerd, runc, ctr-remote and what the snapshotter's build needs
# (scripts/install-runtimes.sh). Knobs: see scripts/timetostart.sh, e.g. RUNS=3.
timetostart: test-deps
	bash scripts/install-runtimes.sh
	BUILD=$(BUILD) bash scripts/timetostart.sh

# Release tarball for hosts that install layercache from a file (deploy/batch's lazy node):
# build/dist/layercache-<version>-linux-<arch>.tar.gz, unpacked with `tar -xzf … -C /usr/local`.
dist: build
	cd $(BUILD) && cpack

# Debian package: build/dist/layercache_<version>_<arch>.deb, installed with
# `apt install ./layercache_<version>_<arch>.deb` (docs/operations.md, "Install from the
# package"); dpkg-shlibdeps (dpkg-dev) computes its Depends. `ctest -L package` tests it.
deb: build
	$(call install_missing,dpkg-dev)
	cd $(BUILD) && cpack -G DEB

# The .deb and deploy/batch/start-layercache.sh on a clean Debian 12 (root): a debootstrap
# minbase root, cached as $(BUILD)/clean-root/bookworm.tar.zst (~3.5 min the first time),
# `apt install` of the package in a chroot copy of it, a pull through the installed
# layercached, purge; the start script up to its systemd steps (scripts/clean-install.sh;
# docs/operations.md, "Install from the package"). `make test` runs it (ctest -L
# clean-install) once the root is cached, or with RUN_CLEAN_INSTALL=1.
clean-install-check: deb
	$(SUDO) env BUILD=$(BUILD) bash scripts/clean-install.sh

format:
	git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
