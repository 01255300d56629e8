#!/usr/bin/env bash
# The data plane's programs allocate with jemalloc (CMakeLists.txt,
# tollgate_data_plane_malloc): the dynamic linker must bind every library's
# malloc in tollgate-ingress and tollgate-dispatch to libjemalloc, and the
# control plane's programs keep glibc's. Under the sanitizers (ARG1 = ON)
# no program may load jemalloc: ASan's allocator must be the only one.
#   bash tests/ops/data_plane_malloc.sh SANITIZE
set -euo pipefail
sanitize=${1:-OFF}
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
if [ "$sanitize" = ON ]; then
    for program in tollgate-ingress tollgate-dispatch; do
        if ldd "$bin/$program" | grep -q jemalloc; then
            echo "FAIL: $program loads jemalloc in a sanitizer build"; failed=1
        else
            echo "ok: $program has no jemalloc in a sanitizer build"
        fi
    done
else
    check tollgate-ingress libjemalloc
    check tollgate-dispatch libjemalloc
    check tollgate-billing libc.so.6
    check tollgate-router libc.so.6
fi
exit $failed
