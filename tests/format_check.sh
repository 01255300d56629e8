#!/usr/bin/env bash
# Every C source and header is formatted by the repository's .clang-format.
# Exit 77 (skipped) when clang-format is missing.
set -u
root=${1:?usage: format_check.sh REPO_ROOT}
cd "$root" || exit 1
command -v clang-format >/dev/null 2>&1 || { echo "no clang-format"; exit 77; }
bad=0
for file in $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*'); do
    if ! clang-format --dry-run -Werror "$file" >/dev/null 2>&1; then
        echo "not formatted: $file (run: clang-format -i $file)"
        bad=$((bad + 1))
    fi
done
[ "$bad" -eq 0 ] && echo "every C file is formatted"
exit $((bad > 0))
