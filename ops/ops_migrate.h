/*  ops_migrate: brings a PostgreSQL database to the schema this build expects.

    Migrations are ops/migrations/NNNN_name.sql, embedded into the binary at
    build time (ops/embed_migrations.cmake), applied in version order, each in
    its own transaction, and recorded in
        schema_migrations(version int primary key, name text, applied_at timestamptz)
    A session-level advisory lock serialises concurrent runs, so running the
    tool twice, or from two processes at once, applies each migration once.
    A migration must not contain its own BEGIN/COMMIT: we wrap it.
*/
#ifndef OPS_MIGRATE_H_INCLUDED
#define OPS_MIGRATE_H_INCLUDED

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

//  One migration as embedded in the binary.
typedef struct {
    int version;      //  NNNN from the file name
    const char *name; //  the part after NNNN_
    const char *sql;  //  its text, NUL-terminated
    size_t size;      //  bytes of text
} ops_migration_t;

//  The built-in set, sorted by version, ended by a {0, NULL} entry.
extern const ops_migration_t ops_migrations_builtin[];
extern const size_t ops_migrations_builtin_count;

typedef struct _ops_migrate_t ops_migrate_t;

//  Creates a migrator holding the built-in migrations. Caller owns return value.
ops_migrate_t *ops_migrate_new(void);

//  Destroys the migrator and nulls the pointer.
void ops_migrate_destroy(ops_migrate_t **self_p);

//  Replaces the set with the NNNN_name.sql files of a folder (for tests and
//  for trying a migration before building it in). Returns 0, or -1 with a
//  reason in error.
int ops_migrate_load_dir(ops_migrate_t *self, const char *path, char *error, size_t error_size);

//  Adds one migration; text is copied. Returns 0, or -1 when the version is
//  not positive or already present.
int ops_migrate_add(ops_migrate_t *self, int version, const char *name, const char *sql);

//  How many migrations the set holds, and the highest version (0 when empty).
size_t ops_migrate_count(ops_migrate_t *self);
int ops_migrate_latest(ops_migrate_t *self);

//  Applies every migration the database lacks. Progress lines ("applied
//  0001_init") go to `progress` when not NULL. Returns how many were applied,
//  or -1 with the failing migration and the server's message in error (that
//  migration is rolled back; earlier ones stay).
int ops_migrate_apply(ops_migrate_t *self, PGconn *db, FILE *progress, char *error,
                      size_t error_size);

//  Parses "0001_init.sql" into version and name (copied into name, capacity
//  name_size). Returns 0, or -1 when the file name is not of that form.
int ops_migrate_parse_name(const char *file_name, int *version, char *name, size_t name_size);

//  Self test (no database needed).
void ops_migrate_test(bool verbose);

#endif
