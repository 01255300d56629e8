/*  proto_db: opening PostgreSQL connections the same way in every program.
    Used at start-up and for change notifications, never on the request path.
*/
#ifndef PROTO_DB_H_INCLUDED
#define PROTO_DB_H_INCLUDED

#include "proto_config.h"

#include <libpq-fe.h>
#include <stdbool.h>

//  Connects to database_url, trying db_connect_attempts times with
//  db_retry_interval_ms between tries. Returns the connection, or NULL with
//  a one-line reason (password masked) in error. Caller owns return value.
PGconn *proto_db_connect(proto_config_t *config, char *error, size_t error_size);

//  Connects once to a conninfo/URL. Returns NULL with a reason on failure.
PGconn *proto_db_connect_once(const char *url, char *error, size_t error_size);

//  Runs a statement that returns no rows. Returns 0, or -1 with the server's
//  message in error.
int proto_db_exec(PGconn *db, const char *sql, char *error, size_t error_size);

//  Copies PQerrorMessage without its trailing newline.
void proto_db_error(PGconn *db, char *error, size_t error_size);

#endif
