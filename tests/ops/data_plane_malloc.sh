#!/usr/bin/env bash
# Dispatch allocates with jemalloc (CMakeLists.txt, tollgate_data_plane_malloc):
# the dynamic linker must bind libc's own malloc calls in tollgate-dispatch to
# libjemalloc, and the other programs (ingress included) keep glibc's. When the build has it off (ARG1 =
# OFF: the sanitizers, whose allocator must be the only one, or
# -DTOLLGATE_JEMALLOC=OFF) no program may load jemalloc. With it, dispatch's
# jemalloc has one arena (malloc_conf, exported by the program).
#   bash tests/ops/data_plane_malloc.sh ON|OFF
set -euo pipefail
jemalloc=${1:?ON or OFF}
bin=${TOLLGATE_BIN:?set TOLLGATE_BIN to the bin folder of a build}
failed=0
# Which object the loader binds libc's own malloc calls to.
malloc_of() {
    LD_DEBUG=bindings "$bin/$1" --print-config 2>&1 >/dev/null |
        sed -n "s/.*binding file [^ ]*libc\.so\.6 \[0\] to \([^ ]*\) \[0\]: normal symbol \`malloc'.*/\1/p" |
        head -n 1
}
check() { # PROGRAM WANT
    local got
    got=$(malloc_of "$1")
    case "$got" in
    *"$2"*) echo "ok: $1 allocates with $got" ;;
    *) echo "FAIL: $1 allocates with '${got:-?}', expected $2"; failed=1 ;;
    esac
}
# jemalloc's own report of its options (stats at exit): one arena, from the
# program's malloc_conf.
narenas_of() {
    MALLOC_CONF=stats_print:true "$bin/$1" --print-config 2>&1 >/dev/null |
        sed -n 's/^ *opt\.narenas: \([0-9]*\).*/\1/p' | head -n 1
}
if [ "$jemalloc" = ON ]; then
    check tollgate-dispatch libjemalloc
    arenas=$(narenas_of tollgate-dispatch)
    if [ "$arenas" = 1 ]; then
        echo "ok: tollgate-dispatch runs jemalloc with one arena"
    else
        echo "FAIL: tollgate-dispatch runs jemalloc with '${arenas:-?}' arenas, expected 1"; failed=1
    fi
    check tollgate-ingress libc.so.6
    check tollgate-billing libc.so.6
    check tollgate-router libc.so.6
else
    for program in tollgate-ingress tollgate-dispatch; do
        if ldd "$bin/$program" | grep -q jemalloc; then
            echo "FAIL: $program loads jemalloc in a build without it"; failed=1
        else
            echo "ok: $program has no jemalloc"
        fi
    done
fi
exit $failed
