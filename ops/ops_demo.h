/*  ops_demo: what `tollgate up --demo` adds to a cluster.

    Starts the mock upstream (tollgate-mock-upstream) as a daemon beside the
    programs, registers it through the admin CLI as provider `demo` with a
    model `demo-model`, an account `demo` and a client key, waits until the
    gateway accepts that key, and prints a curl that works. The key is kept
    in DIR/demo_key (0600) and the mock's port in DIR/run/mock.port, so a
    second `up --demo` reuses both. `down` stops the mock (ops_demo_stop).
*/
#ifndef OPS_DEMO_H_INCLUDED
#define OPS_DEMO_H_INCLUDED

#include "proto_config.h"

#include <stddef.h>

//  Starts or finds the demo for the cluster in `dir`; prints the demo lines
//  on stdout. `tollgate` is the path of the tollgate executable and `bindir`
//  the folder of the programs. Returns 0, or -1 with a reason in error.
int ops_demo_start(const char *dir, const char *bindir, const char *tollgate,
                   proto_config_t *config, char *error, size_t error_size);

//  Stops the demo's mock upstream, if one runs. Returns 0.
int ops_demo_stop(const char *dir);

#endif
