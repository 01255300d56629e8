/*  ops_state: the state folder of a local cluster (`tollgate up --dir DIR`).

        DIR/tollgate.conf   cluster configuration, proto_config `key = value`;
                            written once, kept on later runs (the operator may edit it)
        DIR/admin_token     the bootstrap admin token, mode 0600
        DIR/pg/             PostgreSQL data, owned by the server's user
        DIR/log/            <program>.log, supervisor.log, postgres.log
        DIR/run/            supervisor.pid, supervisor.lock, status.json,
                            <endpoint>.sock, pg/ (PostgreSQL's socket)

    The folder's path is made absolute once, here, because the supervisor
    and PostgreSQL run with other working directories.
*/
#ifndef OPS_STATE_H_INCLUDED
#define OPS_STATE_H_INCLUDED

#include "proto_config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

//  The programs a cluster runs, in start order. NULL-terminated.
extern const char *const ops_programs[];
//  Programs that get a CURVE certificate (NULL-terminated): the programs
//  above, the test probes and the `tollgate` tool itself.
extern const char *const ops_cert_programs[];
#define OPS_PROGRAM_COUNT 7

//  Longest path a Unix socket may have (sun_path is 108 bytes with the NUL).
#define OPS_SOCKET_PATH_MAX 107

typedef struct _ops_state_t ops_state_t;

//  Opens a state folder (it need not exist yet). Returns NULL with a reason
//  in error when the path cannot be made absolute. Caller owns return value.
ops_state_t *ops_state_new(const char *dir, char *error, size_t error_size);

//  Destroys the object and nulls the pointer.
void ops_state_destroy(ops_state_t **self_p);

//  Absolute path of the folder, and of a file or folder inside it
//  ("run/status.json"). Borrowed; the second is valid until the next call.
const char *ops_state_dir(ops_state_t *self);
const char *ops_state_path(ops_state_t *self, const char *relative);

//  True once tollgate.conf exists.
bool ops_state_exists(ops_state_t *self);

//  Creates the folder and its log/ and run/ folders. Returns 0 or -1.
int ops_state_create(ops_state_t *self, char *error, size_t error_size);

//  Writes tollgate.conf and admin_token with fresh secrets, ipc:// endpoints
//  under run/, the listeners on host:port and host:admin_port, and
//  database_url pointing at the private server. Fails if the file exists.
//  Returns 0 or -1.
int ops_state_write_config(ops_state_t *self, const char *host, int port, int admin_port,
                           char *error, size_t error_size);

//  Sets `key = value` in tollgate.conf (replacing the key's lines, keeping
//  every other line). Returns 0 or -1.
int ops_state_set_config(ops_state_t *self, const char *key, const char *value, char *error,
                         size_t error_size);

//  Loads tollgate.conf into a new configuration. Caller owns return value;
//  NULL with a reason in error.
proto_config_t *ops_state_load_config(ops_state_t *self, char *error, size_t error_size);

//  PostgreSQL's socket folder and the database URL of the private server.
//  Borrowed.
const char *ops_state_pg_socket_dir(ops_state_t *self);
const char *ops_state_database_url(ops_state_t *self);

//  Pid of the running supervisor, or 0 when none holds its lock.
pid_t ops_state_supervisor_pid(ops_state_t *self);

//  Takes the supervisor's lock for the life of the process (the fd is kept
//  open, close-on-exec so children never hold it). Returns 0, or -1 when
//  another supervisor holds it.
int ops_state_lock_supervisor(ops_state_t *self, char *error, size_t error_size);

//  Serialises `up` and `down` on one folder. Blocks. Returns an fd to close,
//  or -1 with a reason.
int ops_state_lock_operations(ops_state_t *self, char *error, size_t error_size);

//  Writes text to a file atomically (temporary file + rename) with a mode.
//  Returns 0 or -1.
int ops_state_write_file(const char *path, const char *text, mode_t mode);

//  Fills out with 2*bytes random hex digits (out_size > 2*bytes).
void ops_state_random_hex(char *out, size_t out_size, size_t bytes);

//  Writes the last `lines` lines of a file to out, each indented by two
//  spaces. Silent when the file cannot be read.
void ops_state_print_tail(const char *path, int lines, FILE *out);

//  Self test (in a temporary folder).
void ops_state_test(bool verbose);

#endif
