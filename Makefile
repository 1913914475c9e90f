# Thin wrapper over meson/ninja for the README's commands. Every target that builds first makes sure
# the Debian packages are present (scripts/install-deps.sh is idempotent and quick when they are).
MESON_OPTS := --wrap-mode=nodownload
BUILD      := build
ASAN_BUILD := build-asan
FUZZ_BUILD := build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all build asan deps test demo bench bench-guard fuzz eval-guard format clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS) --buildtype=release -Db_ndebug=false

# The sanitizer build uses clang: its UBSan also flags arithmetic on NULL (gcc's does not), and with the
# release build on gcc every change passes both compilers' warnings (-Werror).
$(ASAN_BUILD)/build.ninja:
	CC=clang meson setup $(ASAN_BUILD) $(MESON_OPTS) --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

asan: deps $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)

# Unit tests (cmocka) and integration tests (pytest, node) against the release build and again
# under AddressSanitizer + UndefinedBehaviorSanitizer; ends with one "N passed, N failed" line.
test: build asan
	@bash scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

demo: build
	@bash scripts/demo.sh $(BUILD)/warden

bench: build
	@bash bench/run.sh $(BUILD)/warden
	@bash bench/limits_quota.sh $(BUILD)/warden

bench-guard: build
	@bash bench/run_guard.sh $(BUILD)

# Detection quality of the privacy rules: per-entity precision/recall/F1 on the Presidio sample and a
# synthetic set, and false positives on benign prompts (../shared/data/dev); then the injection
# screen's recall and false positives (tests/eval/eval_injection.py).
eval-guard: build
	/usr/bin/python3 tests/eval/eval_pii.py --check
	/usr/bin/python3 tests/eval/eval_injection.py --check

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) $(MESON_OPTS) --buildtype=debugoptimized -Dfuzz=true -Dtests=false \
	  -Db_sanitize=address,undefined -Db_lundef=false

fuzz: deps $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	@bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
