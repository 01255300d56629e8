/*  ops_ping: asks running programs whether they are alive.

    Sends a PING (proto_msg) from a DEALER to each program's control socket,
    `<program>.control_bind` in the cluster configuration, and waits for the
    PONGs, all in parallel, up to a deadline.
*/
#ifndef OPS_PING_H_INCLUDED
#define OPS_PING_H_INCLUDED

#include "proto_config.h"

#include <stdbool.h>

//  The answer of one program.
typedef struct {
    bool answered;   //  a PONG came back in time
    char meta[1024]; //  the PONG's meta JSON, "" when none
} ops_ping_result_t;

//  Applies TOLLGATE_SECURITY and TOLLGATE_CURVE_DIR from the environment
//  to `config`. Returns 0, or -1 with a message in error.
int ops_ping_overrides(proto_config_t *config, char *error, size_t error_size);

//  Sets this process' socket security from `config` (security, curve.dir)
//  with the certificate of `tollgate`, or else of any program found in
//  curve.dir/secret. Returns 0, or -1 with a message in error.
int ops_ping_security(proto_config_t *config, char *error, size_t error_size);

//  Pings `count` programs by name ("ingress"). results[i] answers names[i].
//  Returns how many answered within timeout_ms.
int ops_ping_programs(proto_config_t *config, const char *const names[], int count, int timeout_ms,
                      ops_ping_result_t results[]);

#endif
