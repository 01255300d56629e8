#!/usr/bin/env bash
# Installs what is missing, builds with warnings as errors and runs every test, then does
# the same under AddressSanitizer + UndefinedBehaviorSanitizer. Exits non-zero if anything
# fails. Extra arguments go to both ctest runs (e.g. ./test.sh -L unit).
set -uo pipefail
cd "$(dirname "$0")"
source ops/install-deps.sh
export CI="${CI:-false}"

tg_install_packages || exit 1
tg_npm_install || exit 1

failed=()

if tg_build build -DTOLLGATE_WERROR=ON -DTOLLGATE_SANITIZE=OFF; then
  ctest --test-dir build --output-on-failure -j2 "$@" || failed+=("tests")
else
  failed+=("build")
fi

# Leaks fail the run; a program's own stack trace is printed before it halts.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
if tg_build build-asan -DTOLLGATE_WERROR=ON -DTOLLGATE_SANITIZE=ON; then
  ctest --test-dir build-asan --output-on-failure -j2 "$@" || failed+=("sanitizer tests")
else
  failed+=("sanitizer build")
fi

# libFuzzer targets (converters, SSE reader): a short campaign each, built
# with clang in a tree of their own.
if CC=clang tg_build build-fuzz -DTOLLGATE_FUZZ=ON -DTOLLGATE_SANITIZE=OFF; then
  ctest --test-dir build-fuzz --output-on-failure -L fuzz || failed+=("fuzz")
else
  failed+=("fuzz build")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  tg_log "FAILED: ${failed[*]}"
  exit 1
fi
tg_log "all tests passed"
