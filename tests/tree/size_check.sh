#!/usr/bin/env bash
# Sizes the tree against issue 14's limits: no C file over 1,500 lines, no function over 150.
#
#   size_check.sh REPO_ROOT            lists every file and function over the limits and fails
#                                      when one is missing from tests/tree/size_allow.txt
#   size_check.sh REPO_ROOT --report   prints the counts only (exit 0)
#
# A function is measured from the first line of its signature to its closing brace, as
# clang-format lays them out here (BreakBeforeBraces: Linux: the body's "{" and "}" alone in
# column 0). size_allow.txt holds the offenders that are known and not yet taken apart, one
# "file PATH" or "function PATH NAME" a line; it only ever shrinks.
set -u
root=${1:?usage: size_check.sh REPO_ROOT [--report]}
mode=${2:-check}
cd "$root" || exit 1
max_file=1500
max_function=150
allow=tests/tree/size_allow.txt

files=$(git ls-files '*.c' 2>/dev/null || find . -name '*.c' -not -path './build*' -not -path './node_modules/*')
found=$(for file in $files; do
    awk -v file="$file" -v max_file=$max_file -v max_function=$max_function '
        # A line in column 0 that can start a signature: not a comment, directive, brace or blank.
        /^[A-Za-z_]/ && !/^(typedef|struct [A-Za-z_0-9]+ *\{|enum|union)/ { if (!open) start = FNR; sig = sig " " $0 }
        /^\{$/ && start { open = 1; name = sig; sub(/\(.*/, "", name); n = split(name, w, /[ *]+/);
                          name = w[n]; next }
        /^\}/ && open { if (FNR - start + 1 > max_function)
                            printf "function %s %s %d\n", file, name, FNR - start + 1;
                        open = 0; start = 0; sig = ""; next }
        /^$/ || /^[#\/]/ || /;$/ && !open { if (!open) { start = 0; sig = "" } }
        END { if (FNR > max_file) printf "file %s %d\n", file, FNR }' "$file"
done)

big_files=$(printf '%s\n' "$found" | grep -c '^file ')
big_functions=$(printf '%s\n' "$found" | grep -c '^function ')
echo "C files over $max_file lines: $big_files"
printf '%s\n' "$found" | grep '^file ' | sort -k3 -nr | sed 's/^/  /'
echo "functions over $max_function lines: $big_functions"
printf '%s\n' "$found" | grep '^function ' | sort -k4 -nr | sed 's/^/  /'
[ "$mode" = --report ] && exit 0

bad=0
while read -r kind path name _; do
    [ -n "$kind" ] || continue
    key="$kind $path"
    [ "$kind" = function ] && key="$key $name"
    if ! grep -qxF "$key" "$allow"; then
        echo "over the limit and not in $allow: $key (split it)"
        bad=$((bad + 1))
    fi
done <<<"$found"
while read -r kind path name; do
    case "$kind" in file | function) ;; *) continue ;; esac
    key="$kind $path"
    [ "$kind" = function ] && key="$key $name"
    printf '%s\n' "$found" | awk '{ k = $1 " " $2; if ($1 == "function") k = k " " $3; print k }' |
        grep -qxF "$key" || echo "note: $key is within the limits now; remove it from $allow"
done <"$allow"
[ "$bad" -eq 0 ] && echo "no new file over $max_file lines and no new function over $max_function"
exit $((bad > 0))
