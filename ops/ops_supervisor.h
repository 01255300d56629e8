/*  ops_supervisor: keeps one of each cluster program running.

    Runs as its own daemon (`tollgate supervise --dir DIR`, started by
    `tollgate up`). Starts every program in ops_programs as
        BINDIR/tollgate-<name> --config DIR/tollgate.conf
    with stdout and stderr appended to DIR/log/<name>.log, and restarts one
    that exits, after a delay that starts at 100 ms, doubles on each quick
    death and is capped at 10 s; a program that ran for 30 s or more starts
    over at 100 ms. DIR/run/status.json is rewritten after every change:

        {"supervisor": {"pid": 10, "started_at": "2026-...Z", "started_ms": 1790000000000},
         "programs": [{"name": "ingress", "pid": 12, "state": "running",
                       "started_at": "...", "started_ms": ..., "restarts": 1,
                       "last_exit": "signal 9 (Killed)"}, ...]}

    state is "running", "restarting" (waiting out its delay) or "stopped".
    Each program also has "planned_restarts": restarts asked for with
    ops_supervisor_restart_request (`tollgate restart PROGRAM`), which sends
    the supervisor SIGUSR1 carrying the program's index in ops_programs; the
    supervisor SIGTERMs the program and, when it exits 0 after draining,
    starts it again at once, without backoff and without counting it in
    "restarts". A planned restart that ends in anything but exit 0 is
    treated as a crash.
    SIGHUP: passed on to every running program (each reloads its TLS
    certificate; nothing else changes).
    SIGTERM or SIGINT: SIGTERM every program, wait, SIGKILL what is left
    after 5 s, remove status.json, exit 0.
*/
#ifndef OPS_SUPERVISOR_H_INCLUDED
#define OPS_SUPERVISOR_H_INCLUDED

#include "ops_state.h"

#include <stdbool.h>
#include <stdint.h>

#define OPS_SUPERVISOR_BACKOFF_MIN_MS 100
#define OPS_SUPERVISOR_BACKOFF_MAX_MS 10000
#define OPS_SUPERVISOR_HEALTHY_MS 30000
#define OPS_SUPERVISOR_KILL_AFTER_MS 5000

typedef struct _ops_supervisor_t ops_supervisor_t;

//  Creates a supervisor for the cluster in `state` (borrowed; must outlive
//  it) running the programs found in `bindir`. Caller owns return value.
ops_supervisor_t *ops_supervisor_new(ops_state_t *state, const char *bindir);

//  Destroys the supervisor and nulls the pointer. Does not stop programs.
void ops_supervisor_destroy(ops_supervisor_t **self_p);

//  Runs until SIGTERM or SIGINT, then stops every program. The caller must
//  hold the supervisor lock. Returns the process exit code.
int ops_supervisor_run(ops_supervisor_t *self);

//  Asks the supervisor with pid `supervisor` for a planned restart of the
//  program `name`. Returns 0, or -1 with errno set (ENOENT: no such program).
int ops_supervisor_restart_request(pid_t supervisor, const char *name);

//  The delay before the next restart, given the previous delay (0 when none
//  yet) and how long the program ran.
uint64_t ops_supervisor_backoff(uint64_t previous_ms, uint64_t ran_ms);

//  Describes a wait() status: "exit 1", "signal 9 (Killed)".
void ops_supervisor_describe_exit(int status, char *out, size_t out_size);

//  Self test: backoff arithmetic, and a run over stand-in programs.
void ops_supervisor_test(bool verbose);

#endif
