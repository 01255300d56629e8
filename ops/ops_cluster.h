/*  ops_cluster: `tollgate up`, `down`, `status` and `supervise` on one host.

    A cluster lives in a state folder (ops_state.h): a private PostgreSQL
    (ops_pg.h), a supervisor daemon (ops_supervisor.h) and one of each
    program, found beside the `tollgate` binary. Each method returns the
    process exit code and writes what the operator should read: results on
    stdout, progress and errors on stderr.
*/
#ifndef OPS_CLUSTER_H_INCLUDED
#define OPS_CLUSTER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

//  What `tollgate up` was asked for.
typedef struct {
    const char *host;   //  listener address, "127.0.0.1"
    int port;           //  gateway port
    int admin_port;     //  admin API port
    bool listen_given;  //  host or a port came from the command line
    bool demo;          //  also start the mock upstream with demo routes
    bool db_only;       //  only PostgreSQL and the schema, no programs
    int timeout_ms;     //  how long to wait for every program to answer
    const char *tls[4]; //  ingress.tls_cert, ingress.tls_key, admin.tls_cert, admin.tls_key
                        //  to write into tollgate.conf; NULL = keep what it says
} ops_up_options_t;

typedef struct _ops_cluster_t ops_cluster_t;

//  Opens the cluster whose state folder is `dir`. `bindir` holds the
//  programs; NULL means the folder of the running executable. Returns NULL
//  with a reason in error. Caller owns return value.
ops_cluster_t *ops_cluster_new(const char *dir, const char *bindir, char *error, size_t error_size);

//  Destroys the object and nulls the pointer. Stops nothing.
void ops_cluster_destroy(ops_cluster_t **self_p);

//  Creates what is missing, starts what is stopped, waits until every
//  program answers and prints the gateway, admin and token lines.
int ops_cluster_up(ops_cluster_t *self, const ops_up_options_t *options);

//  Stops the supervisor (and with it every program), then PostgreSQL.
//  Stopping a stopped cluster succeeds.
int ops_cluster_down(ops_cluster_t *self);

//  Prints one line per program and one for PostgreSQL, or a JSON object.
//  Returns 0 when everything is up and answering, 1 otherwise.
int ops_cluster_status(ops_cluster_t *self, bool json, FILE *out);

//  Sends PING to the named programs (all when count is 0) at the control
//  sockets of DIR/tollgate.conf and prints one line each: name, "ok" and the
//  PONG's meta, or "no answer". Returns 0 when all answered, 1 otherwise.
int ops_cluster_ping(ops_cluster_t *self, const char *const names[], int count, int timeout_ms,
                     FILE *out);

//  Rolls the instances of program `name` one at a time (`tollgate restart`):
//  asks the supervisor for a planned restart of each (it SIGTERMs the
//  instance, which drains and exits 0, and starts it again at once), then
//  waits until the new process answers PING and is not draining before the
//  next. Prints one line per instance on out. Returns 0, 1 when an
//  instance did not come back within timeout_ms, 2 for an unknown program.
int ops_cluster_restart(ops_cluster_t *self, const char *name, int timeout_ms, FILE *out);

//  Sends PING to one control endpoint (`tollgate ping --endpoint`), no
//  state folder needed: for container health checks. Security settings
//  come from TOLLGATE_CONFIG, else DIR/tollgate.conf when present, and
//  TOLLGATE_SECURITY and TOLLGATE_CURVE_DIR. Prints the PONG's meta. Returns 0 when it answered
//  (and, when `ready`, is not draining), 1 otherwise.
int ops_cluster_ping_endpoint(const char *dir, const char *endpoint, int timeout_ms, bool ready,
                              FILE *out);

//  Runs the supervisor in this process until SIGTERM (`tollgate supervise`).
int ops_cluster_supervise(ops_cluster_t *self);

#endif
