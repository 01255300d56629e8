/*  ops_pg: the private PostgreSQL server of a local cluster.

    Data in DIR/pg, server log in DIR/log/postgres.log, and no TCP listener:
    the server is reached only through its socket in DIR/run/pg, with trust
    authentication, which is safe because nothing but that socket is open
    and its folder is mode 0700. initdb refuses to run as root, so when we
    are root every PostgreSQL command runs as the `postgres` user and the
    folders it writes are chowned to it.
*/
#ifndef OPS_PG_H_INCLUDED
#define OPS_PG_H_INCLUDED

#include "ops_state.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct _ops_pg_t ops_pg_t;

//  Finds the PostgreSQL programs (newest /usr/lib/postgresql/N/bin, else
//  PATH) and, when root, the postgres user. Returns NULL with a reason.
//  The state is borrowed and must outlive this object. Caller owns return value.
ops_pg_t *ops_pg_new(ops_state_t *state, char *error, size_t error_size);

//  Destroys the object and nulls the pointer.
void ops_pg_destroy(ops_pg_t **self_p);

//  True once DIR/pg holds a database cluster.
bool ops_pg_initialized(ops_pg_t *self);

//  Runs initdb and writes our server settings. Returns 0 or -1.
int ops_pg_init(ops_pg_t *self, char *error, size_t error_size);

//  Pid of the running server (from postmaster.pid), or 0.
pid_t ops_pg_pid(ops_pg_t *self);

//  Starts the server and waits until it accepts connections. Returns 0 or -1.
int ops_pg_start(ops_pg_t *self, char *error, size_t error_size);

//  Stops the server (fast mode: roll back open transactions). A stopped
//  server is not an error. Returns 0 or -1.
int ops_pg_stop(ops_pg_t *self, char *error, size_t error_size);

//  Creates the database `tollgate` unless it exists. Returns 0 or -1.
int ops_pg_create_database(ops_pg_t *self, char *error, size_t error_size);

//  Folder holding psql, pg_ctl and the rest. Borrowed.
const char *ops_pg_bindir(ops_pg_t *self);

#endif
