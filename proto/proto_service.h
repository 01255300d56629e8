/*  proto_service: what every Tollgate program does the same way.

    main() hands a proto_service_def_t to proto_service_main, which parses the
    command line (--config FILE, --set KEY=VALUE, --print-config, --help),
    loads the configuration (defaults < file < environment < --set), sets up
    logging, blocks SIGTERM/SIGINT into the event loop, binds the control
    socket (`NAME.control_bind`, a ROUTER answering PING with PONG), then
    calls def->start and runs the loop.

    Also for every program: `NAME.metrics_listen` (host:port, empty = off)
    serves the metrics registry at /metrics (proto_expose) with process
    gauges (RSS, uptime, messages by type, spans, log level); trace spans go
    to the ledger (proto_trace); and with `log_level_watch` (default on) a
    LISTEN connection follows settings 'log_level', so the level changes
    within milliseconds of an update, without a restart.

    SIGHUP runs the hooks registered with proto_service_on_reload (TLS
    certificates) and changes nothing else; without hooks it is logged and
    ignored, never fatal.

    SIGTERM or SIGINT calls def->drain: the program stops taking new work and
    calls proto_service_drained once what it holds is finished or handed on.
    If it has not done so after `drain_timeout_ms` (1500) the loop ends anyway,
    so a program always exits within 2 s. Exit codes: 0 after a drain, 1 when
    start fails, 2 for bad usage or configuration.
*/
#ifndef PROTO_SERVICE_H_INCLUDED
#define PROTO_SERVICE_H_INCLUDED

#include "proto_config.h"
#include "proto_expose.h"
#include "proto_loop.h"
#include "proto_metrics.h"
#include "proto_msg.h"
#include "proto_trace.h"

typedef struct _proto_service_t proto_service_t;

typedef struct {
    const char *name;                         //  "billing": log name and config prefix
    void *(*start)(proto_service_t *service); //  builds state; NULL when it failed (logged)
    void (*drain)(void *state);               //  SIGTERM: stop taking work
    void (*stop)(void **state_p);             //  destroys state, nulls the pointer
    char *(*status)(void *state);             //  optional: JSON object text for PONG's meta
} proto_service_def_t;

//  Runs a program. Returns the process exit code.
int proto_service_main(int argc, char **argv, const proto_service_def_t *def);

//  The process' event loop. Borrowed.
proto_loop_t *proto_service_loop(proto_service_t *self);

//  The effective configuration. Borrowed.
proto_config_t *proto_service_config(proto_service_t *self);

//  The program's span sender (proto_trace), or NULL (a test service, or its socket failed:
//  a NULL sender records nothing). Borrowed.
proto_trace_t *proto_service_trace(proto_service_t *self);

//  The process' metrics registry. Borrowed.
proto_metrics_t *proto_service_metrics(proto_service_t *self);

//  Makes the calling thread count the messages it sends and receives
//  (proto_msg) into this service's counters, shown as messages by type.
//  proto_service_main enters the program's own thread; another thread that
//  speaks for the service enters it itself and leaves it, or ends, before
//  the service is destroyed. A thread that entered no service counts
//  nothing. See proto_msg.h (message counters).
void proto_service_enter(proto_service_t *self);

//  The calling thread stops counting into this service (no-op when it
//  counts into another one, or none).
void proto_service_leave(proto_service_t *self);

//  What this service counted for a message type id (0: malformed frames).
void proto_service_msg_counts(proto_service_t *self, int type, proto_msg_counts_t *counts);

//  Adds a hook run before each scrape of `NAME.metrics_listen`, to refresh
//  gauges computed on demand. Returns 0 (also when metrics are off: the
//  hook is then never called), -1 when too many hooks.
int proto_service_on_collect(proto_service_t *self, proto_expose_collect_fn *fn, void *arg);

//  Called on SIGHUP, on the loop's thread.
typedef void(proto_service_reload_fn)(void *arg);

//  Adds a hook run on each SIGHUP. Returns 0, -1 when too many hooks.
int proto_service_on_reload(proto_service_t *self, proto_service_reload_fn *fn, void *arg);

//  This instance's id (instance_id, or host-pid). Borrowed.
const char *proto_service_instance(proto_service_t *self);

//  The program name given in the definition. Borrowed.
const char *proto_service_name(proto_service_t *self);

//  True once SIGTERM has arrived.
bool proto_service_draining(proto_service_t *self);

//  Tells the service that draining is complete: the loop ends.
void proto_service_drained(proto_service_t *self);

//  A service for in-process selftests of a server class (a server's
//  constructor takes a proto_service_t): takes *config_p, makes a loop,
//  a metrics registry and message counters, and sets up socket security
//  from the configuration (security=none with inproc:// endpoints in
//  tests). No signals, control socket, metrics listener or trace;
//  def->start is never called, and no thread is entered: the thread that
//  runs it calls proto_service_enter to count its messages. Returns NULL
//  with a reason in error. Caller owns return value.
proto_service_t *proto_service_new_test(const char *name, proto_config_t **config_p, char *error,
                                        size_t error_size);

//  Destroys a service from proto_service_new_test (and its loop, metrics,
//  counters and configuration); nulls the pointer.
void proto_service_destroy(proto_service_t **self_p);

//  Self test (argument parsing; two services' message counters and their
//  metrics, in-process).
void proto_service_test(bool verbose);

#endif
