# Sourced by the shell tests that start a throwaway PostgreSQL (and programs)
# in a mktemp folder. A test killed by ctest's timeout (SIGKILL) cannot run
# its trap, and its PostgreSQL, started by pg_ctl in a session of its own,
# would stay up. So each run records its pid in its folder, and every run
# first stops what earlier runs whose pid is gone left behind.
#
#   tg_reap_stale /tmp/PREFIX     # before mktemp -d /tmp/PREFIX.XXXXXX
#   tg_claim "$folder"            # right after creating it

tg_reap_stale() {
    local pattern="$1" dir owner pidfile pid
    for dir in "$pattern".*; do
        [ -d "$dir" ] && [ -f "$dir/owner" ] || continue
        owner=$(cat "$dir/owner" 2>/dev/null)
        [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null && continue
        # The postmaster's pid is the first line of postmaster.pid; its
        # children follow it out on SIGQUIT (immediate shutdown).
        for pidfile in "$dir"/*/postmaster.pid "$dir"/postmaster.pid; do
            [ -f "$pidfile" ] || continue
            pid=$(head -n 1 "$pidfile")
            [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null || true
        done
        # Programs the test started carry the folder in their arguments.
        pkill -KILL -f -- "$dir" 2>/dev/null || true  # none left: not an error under set -e
        rm -rf "$dir"
    done
}

tg_claim() {
    echo "$$" >"$1/owner"
}
