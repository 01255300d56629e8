#include "proto_db.h"
#include "proto_log.h"

#include <string.h>
#include <unistd.h>

void proto_db_error(PGconn *db, char *error, size_t error_size)
{
    snprintf(error, error_size, "%s", db ? PQerrorMessage(db) : "out of memory");
    size_t length = strlen(error);
    while (length && (error[length - 1] == '\n' || error[length - 1] == ' '))
        error[--length] = '\0';
    for (char *c = error; *c; c++)
        if (*c == '\n')
            *c = ' ';
}

PGconn *proto_db_connect_once(const char *url, char *error, size_t error_size)
{
    PGconn *db = PQconnectdb(url);
    if (db && PQstatus(db) == CONNECTION_OK)
        return db;
    char masked[512];
    proto_config_mask_url(url, masked, sizeof masked);
    char reason[512];
    proto_db_error(db, reason, sizeof reason);
    snprintf(error, error_size, "cannot connect to PostgreSQL at %s: %s", masked, reason);
    PQfinish(db);
    return NULL;
}

PGconn *proto_db_connect(proto_config_t *config, char *error, size_t error_size)
{
    const char *url = proto_config_str(config, "database_url");
    int64_t attempts = proto_config_int(config, "db_connect_attempts");
    int64_t interval = proto_config_int(config, "db_retry_interval_ms");
    for (int64_t attempt = 1; attempt <= attempts; attempt++) {
        PGconn *db = proto_db_connect_once(url, error, error_size);
        if (db)
            return db;
        if (attempt < attempts) {
            log_debug(NULL, "database not reachable yet (try %lld of %lld)", (long long)attempt,
                      (long long)attempts);
            usleep((useconds_t)interval * 1000);
        }
    }
    size_t used = strlen(error);
    snprintf(error + used, error_size - used, " (gave up after %lld tries)", (long long)attempts);
    return NULL;
}

int proto_db_exec(PGconn *db, const char *sql, char *error, size_t error_size)
{
    PGresult *result = PQexec(db, sql);
    int status = PQresultStatus(result);
    int rc = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) ? 0 : -1;
    if (rc != 0)
        proto_db_error(db, error, error_size);
    PQclear(result);
    return rc;
}
