#!/usr/bin/env bash
# Programs share code only through proto/ (DESIGN.md): a source file of one program's folder
# (ingress, router with router/dispatch, health, billing, ledger, ops with ops/admin) that
# includes a header of another program's folder fails this check. Headers of proto/ and of
# tests/ (the mock upstream, for probes) may be included anywhere.
#
#   boundary_check.sh REPO_ROOT
#
# tests/tree/boundary_allow.txt lists the crossings known and not yet moved into proto/, one
# "FILE includes HEADER" a line; it only ever shrinks.
set -u
root=${1:?usage: boundary_check.sh REPO_ROOT}
cd "$root" || exit 1
allow=tests/tree/boundary_allow.txt
programs="ingress router health billing ledger ops"

# header file name -> top folder that holds it
declare -A owner
while read -r path; do
    name=${path##*/}
    owner[$name]=${path%%/*}
done < <(git ls-files '*.h' 2>/dev/null || find . -name '*.h' -not -path './build*' | sed 's|^\./||')

crossings=$(for file in $(git ls-files '*.c' '*.h' | grep -E "^($(tr ' ' '|' <<<"$programs"))/"); do
    top=${file%%/*}
    sed -n 's/^#include "\([^"]*\)".*/\1/p' "$file" | while read -r header; do
        holder=${owner[$header]:-}
        case "$holder" in "" | proto | tests | "$top") ;; *) echo "$file includes $header" ;; esac
    done
done)

bad=0
while read -r line; do
    [ -n "$line" ] || continue
    if grep -qxF "$line" "$allow"; then
        echo "known: $line"
    else
        echo "crossing: $line (move the shared code into proto/)"
        bad=$((bad + 1))
    fi
done <<<"$crossings"
while read -r line; do
    case "$line" in "" | "#"*) continue ;; esac
    grep -qxF "$line" <<<"$crossings" || echo "note: '$line' is gone; remove it from $allow"
done <"$allow"
[ "$bad" -eq 0 ] && echo "no program includes another program's headers beyond $allow"
exit $((bad > 0))
