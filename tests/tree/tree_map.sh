#!/usr/bin/env bash
# Prints the map of the tree that opens docs/architecture.md: each folder, then each of its C
# modules (a .c with its .h) with the first sentence of its header's opening comment. Run it
# after adding, moving or removing a module and paste what changed.
#
#   tree_map.sh REPO_ROOT
set -u
root=${1:?usage: tree_map.sh REPO_ROOT}
cd "$root" || exit 1

# The first sentence of a file's opening comment, without the "name:" or "name -" lead.
summary() {
    awk 'NR == 1 && !/^\/[*\/]/ { exit }
         { line = $0; sub(/^\/\*+ */, "", line); sub(/^\/\/ */, "", line); sub(/\*\/.*$/, "", line)
           sub(/^ +/, "", line); text = text (text ? " " : "") line
           if (line == "" || $0 ~ /\*\// || text ~ /[.?]( |$)/) exit }
         END { sub(/^[A-Za-z0-9_ .-]+(:| -) */, "", text); sub(/[.?] .*$/, "", text)
               sub(/[.]$/, "", text)
               # A long one stops at its first aside: the header says the rest.
               if (length(text) > 100 && match(substr(text, 30), /( \(|: |, |; )/))
                   text = substr(text, 1, 29 + RSTART - 1)
               print text }' "$1"
}

folders="proto ingress router router/dispatch billing ledger health ops ops/admin tests/mock tests/tree"
for folder in $folders; do
    echo
    echo "**$folder/**"
    echo
    for c in $(git ls-files "$folder/*.c" | grep -v "^$folder/.*/" | sort); do
        name=$(basename "$c" .c)
        header="$folder/$name.h"
        [ -f "$header" ] || header=$c
        echo "- \`$name\` — $(summary "$header")"
    done
done
