#include "proto_watch.h"
#include "proto_db.h"
#include "proto_log.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define S_COALESCE_MS 20
#define S_RECONNECT_MS 1000

struct _proto_watch_t {
    proto_loop_t *loop;     //  the owner's loop
    proto_config_t *config; //  for database_url and secret_key
    bool open_secrets;      //  decrypt provider secrets
    proto_watch_fn *fn;     //  receives new catalogs
    void *arg;              //  its argument
    PGconn *db;             //  listening connection, or NULL while down
    int fd;                 //  PQsocket watched in the loop, or -1
    int reload_timer;       //  pending reload, 0 when none
    int reconnect_timer;    //  pending reconnect, 0 when none
    uint64_t loads;         //  catalogs handed over
    const char *file;       //  catalog_file, or NULL: the catalog comes from PostgreSQL
};

static void s_schedule_reconnect(proto_watch_t *self);

static void s_disconnect(proto_watch_t *self)
{
    if (self->fd >= 0)
        proto_loop_remove_fd(self->loop, self->fd);
    self->fd = -1;
    PQfinish(self->db);
    self->db = NULL;
}

//  Consumes queued notifications; returns true if there were any.
static bool s_take_notifications(proto_watch_t *self)
{
    bool changed = false;
    PGnotify *notice;
    while ((notice = PQnotifies(self->db))) {
        changed = true;
        PQfreemem(notice);
    }
    return changed;
}

//  The catalog from catalog_file. NULL with a reason.
static proto_catalog_t *s_load_file(const char *path, char *error, size_t error_size)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "catalog_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert(out);
    char buffer[8192];
    size_t got;
    while ((got = fread(buffer, 1, sizeof buffer, file)) > 0)
        fwrite(buffer, 1, got, out);
    fclose(file);
    fclose(out);
    proto_catalog_t *catalog = proto_catalog_from_json(text, error, error_size);
    free(text);
    return catalog;
}

static int s_reload_now(proto_watch_t *self, char *error, size_t error_size)
{
    const char *secret_key =
        self->open_secrets ? proto_config_str(self->config, "secret_key") : NULL;
    proto_catalog_t *catalog = self->file
                                   ? s_load_file(self->file, error, error_size)
                                   : proto_catalog_load(self->db, secret_key, error, error_size);
    if (!catalog)
        return -1;
    //  The names providers list that no logical model has, as routing
    //  serves them: every program's catalog agrees on them.
    proto_catalog_add_unlisted(catalog, proto_config_bool(self->config, "router.zero_config"));
    self->loads++;
    self->fn(&catalog, self->arg);
    proto_catalog_destroy(&catalog); //  in case the owner did not take it
    if (self->file)
        return 0;
    //  The load's queries read from the same socket, so libpq may have
    //  queued notifications that arrived meanwhile; the fd will not wake us
    //  for them again. A change committed during the load may be missing
    //  from it: load once more.
    if (s_take_notifications(self))
        proto_watch_reload(self);
    return 0;
}

static void s_reload_due(proto_loop_t *loop, int id, void *arg)
{
    proto_watch_t *self = arg;
    self->reload_timer = 0;
    if (!self->db && !self->file)
        return;
    char error[512];
    if (s_reload_now(self, error, sizeof error) != 0) {
        log_warn(NULL, "config reload failed, keeping the previous one: %s", error);
        if (self->db && PQstatus(self->db) != CONNECTION_OK) {
            s_disconnect(self);
            s_schedule_reconnect(self);
        }
    }
}

void proto_watch_reload(proto_watch_t *self)
{
    if (!self->reload_timer)
        self->reload_timer =
            proto_loop_add_timer(self->loop, S_COALESCE_MS, false, s_reload_due, self);
}

static void s_readable(proto_loop_t *loop, int fd, uint32_t events, void *arg)
{
    proto_watch_t *self = arg;
    if (!PQconsumeInput(self->db)) {
        char error[256];
        proto_db_error(self->db, error, sizeof error);
        log_warn(NULL, "config watch lost its database connection: %s", error);
        s_disconnect(self);
        s_schedule_reconnect(self);
        return;
    }
    if (s_take_notifications(self))
        proto_watch_reload(self);
}

//  Opens the connection and LISTENs. Returns 0 or -1 with a reason.
static int s_connect(proto_watch_t *self, bool retry, char *error, size_t error_size)
{
    self->db = retry ? proto_db_connect(self->config, error, error_size)
                     : proto_db_connect_once(proto_config_str(self->config, "database_url"), error,
                                             error_size);
    if (!self->db)
        return -1;
    if (proto_db_exec(self->db, "LISTEN tollgate_config", error, error_size) != 0 ||
        PQsetnonblocking(self->db, 0) != 0) {
        s_disconnect(self);
        return -1;
    }
    self->fd = PQsocket(self->db);
    proto_loop_add_fd(self->loop, self->fd, EPOLLIN, s_readable, self);
    return 0;
}

static void s_reconnect_due(proto_loop_t *loop, int id, void *arg)
{
    proto_watch_t *self = arg;
    self->reconnect_timer = 0;
    char error[512];
    if (s_connect(self, false, error, sizeof error) != 0) {
        s_schedule_reconnect(self);
        return;
    }
    log_info(NULL, "config watch reconnected");
    //  Notifications sent while we were away are lost: reload.
    proto_watch_reload(self);
}

static void s_schedule_reconnect(proto_watch_t *self)
{
    if (!self->reconnect_timer)
        self->reconnect_timer =
            proto_loop_add_timer(self->loop, S_RECONNECT_MS, false, s_reconnect_due, self);
}

proto_watch_t *proto_watch_new(proto_loop_t *loop, proto_config_t *config, bool open_secrets,
                               proto_watch_fn *fn, void *arg, char *error, size_t error_size)
{
    proto_watch_t *self = calloc(1, sizeof *self);
    assert(self);
    *self = (proto_watch_t){.loop = loop,
                            .config = config,
                            .open_secrets = open_secrets,
                            .fn = fn,
                            .arg = arg,
                            .fd = -1};
    const char *file = proto_config_str(config, "catalog_file");
    if (file && *file) {
        self->file = file;
        if (s_reload_now(self, error, error_size) != 0) {
            proto_watch_destroy(&self);
            return NULL;
        }
        return self;
    }
    if (s_connect(self, true, error, error_size) != 0 ||
        s_reload_now(self, error, error_size) != 0) {
        proto_watch_destroy(&self);
        return NULL;
    }
    return self;
}

void proto_watch_destroy(proto_watch_t **self_p)
{
    assert(self_p);
    proto_watch_t *self = *self_p;
    if (!self)
        return;
    if (self->reload_timer)
        proto_loop_cancel_timer(self->loop, self->reload_timer);
    if (self->reconnect_timer)
        proto_loop_cancel_timer(self->loop, self->reconnect_timer);
    s_disconnect(self);
    free(self);
    *self_p = NULL;
}

uint64_t proto_watch_loads(proto_watch_t *self)
{
    return self->loads;
}
