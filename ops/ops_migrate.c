#include "ops_migrate.h"

#include "proto_check.h"

#include <assert.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

//  Key of the advisory lock every migrator takes: "tollgate" in ASCII. Any
//  fixed number works; it only has to be the same in every build.
#define S_LOCK_KEY "8389754706542830693"
#define S_MAX_SQL_BYTES (16 * 1024 * 1024)

typedef struct {
    int version; //  NNNN
    char *name;  //  owned
    char *sql;   //  owned
} s_entry_t;

struct _ops_migrate_t {
    s_entry_t *entries; //  sorted by version
    size_t count;       //  entries in use
    size_t capacity;    //  entries allocated
};

static void s_clear(ops_migrate_t *self)
{
    for (size_t i = 0; i < self->count; i++) {
        free(self->entries[i].name);
        free(self->entries[i].sql);
    }
    self->count = 0;
}

ops_migrate_t *ops_migrate_new(void)
{
    ops_migrate_t *self = calloc(1, sizeof *self);
    assert(self);
    for (size_t i = 0; i < ops_migrations_builtin_count; i++) {
        const ops_migration_t *m = &ops_migrations_builtin[i];
        int rc = ops_migrate_add(self, m->version, m->name, m->sql);
        assert(rc == 0); //  the build script rejects bad or duplicate names
        (void)rc;
    }
    return self;
}

void ops_migrate_destroy(ops_migrate_t **self_p)
{
    assert(self_p);
    ops_migrate_t *self = *self_p;
    if (!self)
        return;
    s_clear(self);
    free(self->entries);
    free(self);
    *self_p = NULL;
}

int ops_migrate_add(ops_migrate_t *self, int version, const char *name, const char *sql)
{
    if (version <= 0)
        return -1;
    size_t at = 0;
    while (at < self->count && self->entries[at].version < version)
        at++;
    if (at < self->count && self->entries[at].version == version)
        return -1;
    if (self->count == self->capacity) {
        self->capacity = self->capacity ? self->capacity * 2 : 8;
        self->entries = realloc(self->entries, self->capacity * sizeof *self->entries);
        assert(self->entries);
    }
    memmove(&self->entries[at + 1], &self->entries[at], (self->count - at) * sizeof *self->entries);
    self->entries[at] = (s_entry_t){version, strdup(name), strdup(sql)};
    assert(self->entries[at].name && self->entries[at].sql);
    self->count++;
    return 0;
}

size_t ops_migrate_count(ops_migrate_t *self)
{
    return self->count;
}

int ops_migrate_latest(ops_migrate_t *self)
{
    return self->count ? self->entries[self->count - 1].version : 0;
}

int ops_migrate_parse_name(const char *file_name, int *version, char *name, size_t name_size)
{
    size_t length = strlen(file_name);
    if (length < 10 || strcmp(file_name + length - 4, ".sql") != 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (!isdigit((unsigned char)file_name[i]))
            return -1;
    if (file_name[4] != '_')
        return -1;
    size_t name_length = length - 9;
    if (name_length == 0 || name_length >= name_size)
        return -1;
    for (size_t i = 5; i < length - 4; i++)
        if (!isalnum((unsigned char)file_name[i]) && file_name[i] != '_')
            return -1;
    *version = atoi(file_name);
    memcpy(name, file_name + 5, name_length);
    name[name_length] = '\0';
    return *version > 0 ? 0 : -1;
}

//  Reads a whole file into a NUL-terminated buffer. Caller owns return value.
static char *s_read_file(const char *path, char *error, size_t error_size)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat info;
    char *text = NULL;
    if (fstat(fileno(file), &info) != 0 || info.st_size > S_MAX_SQL_BYTES)
        snprintf(error, error_size, "cannot read %s: not a file of at most %d bytes", path,
                 S_MAX_SQL_BYTES);
    else {
        text = malloc((size_t)info.st_size + 1);
        assert(text);
        size_t got = fread(text, 1, (size_t)info.st_size, file);
        text[got] = '\0';
        if (memchr(text, '\0', got)) {
            snprintf(error, error_size, "%s contains a NUL byte", path);
            free(text);
            text = NULL;
        }
    }
    fclose(file);
    return text;
}

int ops_migrate_load_dir(ops_migrate_t *self, const char *path, char *error, size_t error_size)
{
    DIR *dir = opendir(path);
    if (!dir) {
        snprintf(error, error_size, "cannot open migrations folder %s: %s", path, strerror(errno));
        return -1;
    }
    s_clear(self);
    int rc = 0;
    struct dirent *item;
    while (rc == 0 && (item = readdir(dir))) {
        size_t length = strlen(item->d_name);
        if (length < 4 || strcmp(item->d_name + length - 4, ".sql") != 0)
            continue;
        int version;
        char name[256];
        if (ops_migrate_parse_name(item->d_name, &version, name, sizeof name) != 0) {
            snprintf(error, error_size, "%s/%s: migrations are named NNNN_name.sql", path,
                     item->d_name);
            rc = -1;
            break;
        }
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, item->d_name);
        char *sql = s_read_file(full, error, error_size);
        if (!sql) {
            rc = -1;
            break;
        }
        if (ops_migrate_add(self, version, name, sql) != 0) {
            snprintf(error, error_size, "%s: version %04d appears twice", path, version);
            rc = -1;
        }
        free(sql);
    }
    closedir(dir);
    return rc;
}

//  Runs one statement (or a script) and reports the server's message.
static int s_exec(PGconn *db, const char *sql, char *error, size_t error_size)
{
    PGresult *result = PQexec(db, sql);
    ExecStatusType status = PQresultStatus(result);
    int rc = (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) ? 0 : -1;
    if (rc != 0) {
        snprintf(error, error_size, "%s", PQerrorMessage(db));
        size_t length = strlen(error);
        while (length && (error[length - 1] == '\n' || error[length - 1] == ' '))
            error[--length] = '\0';
    }
    PQclear(result);
    return rc;
}

//  Applies one migration and records it, in one transaction, so a failure
//  leaves neither a half-applied schema nor a record of it.
static int s_apply_one(PGconn *db, const s_entry_t *entry, char *error, size_t error_size)
{
    char reason[2048];
    if (s_exec(db, "BEGIN", reason, sizeof reason) != 0)
        goto failed;
    if (s_exec(db, entry->sql, reason, sizeof reason) != 0)
        goto rollback;
    char version[16];
    snprintf(version, sizeof version, "%d", entry->version);
    const char *values[2] = {version, entry->name};
    PGresult *result = PQexecParams(
        db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())", 2,
        NULL, values, NULL, NULL, 0);
    bool inserted = PQresultStatus(result) == PGRES_COMMAND_OK;
    PQclear(result);
    if (!inserted) {
        snprintf(reason, sizeof reason, "%s", PQerrorMessage(db));
        goto rollback;
    }
    if (s_exec(db, "COMMIT", reason, sizeof reason) != 0)
        goto failed;
    return 0;

rollback:
    PQclear(PQexec(db, "ROLLBACK"));
failed:
    snprintf(error, error_size, "migration %04d_%s failed: %s", entry->version, entry->name,
             reason);
    return -1;
}

int ops_migrate_apply(ops_migrate_t *self, PGconn *db, FILE *progress, char *error,
                      size_t error_size)
{
    //  Quiet the NOTICEs of CREATE ... IF NOT EXISTS; errors still come back.
    PQclear(PQexec(db, "SET client_min_messages = warning"));
    //  A session lock, not a transaction one: it has to span the several
    //  transactions below. A second migrator waits here, then finds the work
    //  done. It is released on every exit path, and by the server if we die.
    if (s_exec(db, "SELECT pg_advisory_lock(" S_LOCK_KEY ")", error, error_size) != 0)
        return -1;
    int applied = -1;
    if (s_exec(db,
               "CREATE TABLE IF NOT EXISTS schema_migrations ("
               " version integer PRIMARY KEY,"
               " name text NOT NULL,"
               " applied_at timestamptz NOT NULL DEFAULT now())",
               error, error_size) != 0)
        goto unlock;

    PGresult *result = PQexec(db, "SELECT version, name FROM schema_migrations ORDER BY version");
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
        snprintf(error, error_size, "cannot read schema_migrations: %s", PQerrorMessage(db));
        PQclear(result);
        goto unlock;
    }
    int rows = PQntuples(result);
    int *done = calloc((size_t)rows + 1, sizeof *done);
    assert(done);
    for (int row = 0; row < rows; row++) {
        done[row] = atoi(PQgetvalue(result, row, 0));
        if (done[row] > ops_migrate_latest(self) && progress)
            fprintf(progress,
                    "warning: the database has migration %04d_%s, newer than this tollgate "
                    "(latest %04d)\n",
                    done[row], PQgetvalue(result, row, 1), ops_migrate_latest(self));
    }
    PQclear(result);

    applied = 0;
    for (size_t i = 0; i < self->count; i++) {
        const s_entry_t *entry = &self->entries[i];
        bool present = false;
        for (int row = 0; row < rows && !present; row++)
            present = done[row] == entry->version;
        if (present)
            continue;
        if (s_apply_one(db, entry, error, error_size) != 0) {
            applied = -1;
            break;
        }
        applied++;
        if (progress)
            fprintf(progress, "applied %04d_%s\n", entry->version, entry->name);
    }
    free(done);

unlock:;
    char ignored[256];
    s_exec(db, "SELECT pg_advisory_unlock(" S_LOCK_KEY ")", ignored, sizeof ignored);
    return applied;
}

void ops_migrate_test(bool verbose)
{
    if (verbose)
        printf(" * ops_migrate: ");
    int version;
    char name[64];
    PROTO_CHECK(ops_migrate_parse_name("0001_init.sql", &version, name, sizeof name) == 0);
    PROTO_CHECK(version == 1 && strcmp(name, "init") == 0);
    PROTO_CHECK(ops_migrate_parse_name("0012_add_index.sql", &version, name, sizeof name) == 0);
    PROTO_CHECK(version == 12 && strcmp(name, "add_index") == 0);
    PROTO_CHECK(ops_migrate_parse_name("0000_zero.sql", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("1_init.sql", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("0001_.sql", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("0001_in-it.sql", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("0001_init.sql.bak", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("0001_init.txt", &version, name, sizeof name) == -1);
    PROTO_CHECK(ops_migrate_parse_name("0001_averyveryverylongname.sql", &version, name, 8) == -1);

    //  The embedded set is non-empty, ordered, and carries the SQL text.
    PROTO_CHECK(ops_migrations_builtin_count >= 1);
    PROTO_CHECK(ops_migrations_builtin[0].version == 1);
    PROTO_CHECK(strstr(ops_migrations_builtin[0].sql, "CREATE TABLE accounts"));
    PROTO_CHECK(strlen(ops_migrations_builtin[0].sql) == ops_migrations_builtin[0].size);
    for (size_t i = 1; i < ops_migrations_builtin_count; i++)
        PROTO_CHECK(ops_migrations_builtin[i].version > ops_migrations_builtin[i - 1].version);
    PROTO_CHECK(ops_migrations_builtin[ops_migrations_builtin_count].name == NULL);

    ops_migrate_t *migrate = ops_migrate_new();
    PROTO_CHECK(ops_migrate_count(migrate) == ops_migrations_builtin_count);
    PROTO_CHECK(ops_migrate_add(migrate, 1, "again", "SELECT 1") == -1);
    PROTO_CHECK(ops_migrate_add(migrate, 0, "zero", "SELECT 1") == -1);
    PROTO_CHECK(ops_migrate_add(migrate, 9000, "late", "SELECT 1") == 0);
    PROTO_CHECK(ops_migrate_add(migrate, 8000, "early", "SELECT 1") == 0);
    PROTO_CHECK(ops_migrate_latest(migrate) == 9000);

    char folder[] = "/tmp/ops_migrate_testXXXXXX";
    PROTO_CHECK(mkdtemp(folder));
    char path[256];
    snprintf(path, sizeof path, "%s/0002_second.sql", folder);
    FILE *file = fopen(path, "w");
    fputs("SELECT 2;\n", file);
    fclose(file);
    snprintf(path, sizeof path, "%s/0001_first.sql", folder);
    file = fopen(path, "w");
    fputs("SELECT 1;\n", file);
    fclose(file);
    snprintf(path, sizeof path, "%s/README", folder);
    file = fopen(path, "w");
    fclose(file);
    char error[512];
    PROTO_CHECK(ops_migrate_load_dir(migrate, folder, error, sizeof error) == 0);
    PROTO_CHECK(ops_migrate_count(migrate) == 2 && ops_migrate_latest(migrate) == 2);
    snprintf(path, sizeof path, "%s/1_bad.sql", folder);
    file = fopen(path, "w");
    fclose(file);
    PROTO_CHECK(ops_migrate_load_dir(migrate, folder, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "1_bad.sql"));
    unlink(path);
    snprintf(path, sizeof path, "%s/0001_first.sql", folder);
    unlink(path);
    snprintf(path, sizeof path, "%s/0002_second.sql", folder);
    unlink(path);
    snprintf(path, sizeof path, "%s/README", folder);
    unlink(path);
    rmdir(folder);
    PROTO_CHECK(ops_migrate_load_dir(migrate, folder, error, sizeof error) == -1);
    ops_migrate_destroy(&migrate);
    PROTO_CHECK(migrate == NULL);
    if (verbose)
        printf("OK\n");
}
