#include "proto_config.h"
#include "proto_check.h"
#include "proto_log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum {
    S_STR,       //  any text
    S_INT,       //  integer within [min, max]
    S_BOOL,      //  true/false/1/0/yes/no/on/off
    S_LEVEL,     //  a log level name
    S_ENDPOINT,  //  a ZeroMQ endpoint: tcp://, ipc:// or inproc://
    S_ENDPOINTS, //  comma-separated ZeroMQ endpoints or dns://name:port, may be empty
    S_ADDRESS,   //  host:port for an HTTP listener
    S_URL,       //  a database URL or conninfo; its password is masked
} s_kind_t;

typedef struct {
    const char *key;      //  dotted name
    s_kind_t kind;        //  what values are accepted
    const char *fallback; //  default, as text
    int64_t min, max;     //  bounds for S_INT
    bool secret;          //  printed masked
    const char *help;     //  one line for --print-config readers
} s_key_t;

#define I64MAX INT64_MAX
//  Every key any program reads. Ports 71x0 are defaults for a hand-run
//  single host; `tollgate up` writes ipc:// endpoints in its state folder.
static const s_key_t s_keys[] = {
    {"log_level", S_LEVEL, "info", 0, 0, false, "debug, info, warn or error"},
    {"instance_id", S_STR, "", 0, 0, false, "name of this instance; default host-pid"},
    {"database_url", S_URL, "postgresql://127.0.0.1:5432/tollgate", 0, 0, false,
     "libpq connection string or URL"},
    {"db_connect_attempts", S_INT, "10", 1, 1000, false, "tries before giving up at start"},
    {"db_retry_interval_ms", S_INT, "500", 10, 60000, false, "wait between those tries"},
    {"secret_key", S_STR, "", 0, 0, true, "64 hex digits: key that encrypts provider secrets"},
    {"state_dir", S_STR, "", 0, 0, false, "folder for local spill files"},
    {"catalog_file", S_STR, "", 0, 0, false,
     "a catalog as JSON instead of PostgreSQL's (server selftests and tools); empty = database"},
    {"security", S_STR, "curve", 0, 0, false,
     "curve (ZeroMQ CURVE: certificates, encryption) or none (plain sockets; warns)"},
    {"curve.dir", S_STR, "", 0, 0, false,
     "the cluster's certificates: public/NAME.cert for every program, secret/NAME.cert"},
    {"ingress.listen", S_ADDRESS, "127.0.0.1:8080", 0, 0, false, "client API listener"},
    {"ingress.tls_cert", S_STR, "", 0, 0, false,
     "PEM certificate chain (leaf first): the client listener speaks HTTPS; reloaded on SIGHUP"},
    {"ingress.tls_key", S_STR, "", 0, 0, false,
     "PEM private key (unencrypted) of ingress.tls_cert; set both or neither"},
    {"admin.listen", S_ADDRESS, "127.0.0.1:8081", 0, 0, false, "admin API and console listener"},
    {"admin.tls_cert", S_STR, "", 0, 0, false,
     "PEM certificate chain (leaf first): the admin listener speaks HTTPS; reloaded on SIGHUP"},
    {"admin.tls_key", S_STR, "", 0, 0, false,
     "PEM private key (unencrypted) of admin.tls_cert; set both or neither"},
    {"admin.token", S_STR, "", 0, 0, true, "bootstrap admin token"},
    {"admin.lockout_ms", S_INT, "900000", 100, 86400000, false,
     "admin logins refused this long after too many failures; doubles on each lock in a day"},
    {"admin.lockout_attempts", S_INT, "5", 1, 1000, false,
     "failed admin logins (per user and address, per address) before a lockout"},
    {"admin.bootstrap_attempts", S_INT, "10", 1, 100000, false,
     "wrong bootstrap tokens from one address within admin.lockout_ms before it is refused"},
    {"admin.session_ttl_s", S_INT, "43200", 1, 2592000, false,
     "longest an admin login session lasts"},
    {"admin.workers", S_INT, "4", 1, 64, false,
     "threads answering admin requests, each with its own database connection"},
    {"admin.console_dir", S_STR, "", 0, 0, false,
     "the console's files; empty = `console` beside the executable"},
    {"admin.metrics_listen", S_STR, "", 0, 0, false, "Prometheus /metrics listener; empty = off"},
    {"admin.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7170", 0, 0, false, "control socket"},
    {"ingress.max_body_bytes", S_INT, "16777216", 1024, 1073741824, false,
     "largest request body accepted"},
    {"ingress.internal_timeout_ms", S_INT, "5000", 10, 600000, false,
     "wait for admission and route replies"},
    {"ingress.request_timeout_ms", S_INT, "900000", 100, 86400000, false,
     "longest a client request may take"},
    {"ingress.dispatch_grace_ms", S_INT, "5000", 0, 600000, false,
     "a request whose dispatch connection dropped waits this long for that instance"},
    //  MHD zeroes all of the pool when a keep-alive connection starts its
    //  next request, and glibc hands freed pools to new connections, so each
    //  open connection costs the whole pool: at 16 KiB it was 160 MiB of
    //  ingress's 190 MiB with 10,000 streams open (docs/benchmarks.md).
    {"ingress.connection_memory", S_INT, "8192", 4096, 1048576, false,
     "bytes of MHD pool per client connection: the request's headers, then the write buffer; "
     "heads above the pool less 512 bytes are refused 431 (the SDKs send under 2 KiB)"},
    {"ingress.sched_batch", S_BOOL, "true", 0, 0, false,
     "while 4 or more requests are in flight, run every thread as SCHED_BATCH: a thread woken "
     "by another does not preempt it (far fewer context switches under load)"},
    {"ingress.max_connections_per_ip", S_INT, "1000", 0, 1000000, false,
     "client connections open at once from one address; 0 = no limit (behind a proxy)"},
    {"ingress.read_timeout_ms", S_INT, "30000", 0, 3600000, false,
     "a request's headers and body must arrive within this (not reset by each byte); 0 = none"},
    {"ingress.max_json_elements", S_INT, "1000000", 1000, 100000000, false,
     "most JSON values a request body may hold (counted before parsing)"},
    {"ingress.client_metrics", S_BOOL, "true", 0, 0, false,
     "serve /metrics on the client port too (off: 404 there; ingress.metrics_listen is apart)"},
    {"ingress.client_metrics_token", S_STR, "", 0, 0, true,
     "when set, /metrics on the client port needs Authorization: Bearer TOKEN"},
    {"ingress.metrics_listen", S_STR, "", 0, 0, false,
     "Prometheus /metrics listener host:port; empty = off"},
    {"ingress.models_cache_ms", S_INT, "10000", 0, 3600000, false,
     "a key's model list is rebuilt after this long (or when the configuration changes)"},
    {"ingress.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7110", 0, 0, false, "control socket"},
    {"billing.bind", S_ENDPOINT, "tcp://127.0.0.1:7120", 0, 0, false, "admission and settlement"},
    {"billing.endpoints", S_ENDPOINTS, "", 0, 0, false, "billing instances to connect to"},
    {"billing.metrics_listen", S_STR, "", 0, 0, false, "Prometheus /metrics listener; empty = off"},
    {"billing.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7121", 0, 0, false, "control socket"},
    {"billing.grant_key", S_STR, "", 0, 0, true,
     "64 hex digits, the same in every billing instance: signs the grants a SETTLE must carry "
     "(docs/billing.md); empty = derived from secret_key"},
    {"billing.leases", S_BOOL, "true", 0, 0, false,
     "grant ingresses leases to admit from (else every request asks with ADMIT)"},
    {"billing.lease_ttl_ms", S_INT, "2000", 100, 600000, false,
     "a lease grant is valid this long; holders renew ahead of it"},
    {"billing.lease_max_micros", S_INT, "0", 0, I64MAX, false,
     "most credit one lease grant adds (0: a quarter of the account's headroom)"},
    {"router.bind", S_ENDPOINT, "tcp://127.0.0.1:7130", 0, 0, false, "route decisions"},
    {"router.endpoints", S_ENDPOINTS, "", 0, 0, false, "router instances to connect to"},
    {"router.metrics_listen", S_STR, "", 0, 0, false, "Prometheus /metrics listener; empty = off"},
    {"router.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7131", 0, 0, false, "control socket"},
    {"router.table.bind", S_ENDPOINT, "tcp://127.0.0.1:7132", 0, 0, false,
     "publishes routing tables to dispatch"},
    {"router.table.endpoints", S_ENDPOINTS, "", 0, 0, false, "routing table publishers"},
    {"router.table_interval_ms", S_INT, "1000", 50, 60000, false,
     "a routing table goes out at least this often (and on every change)"},
    {"router.zero_config", S_BOOL, "true", 0, 0, false,
     "serve a model no rule names from any provider that lists it"},
    {"router.preference_ttl_ms", S_INT, "86400000", 1000, 2592000000, false,
     "how long a key's last good model per provider is preferred"},
    {"router.breaker_threshold", S_INT, "3", 1, 1000, false,
     "5xx or network failures in a row that open a breaker"},
    {"router.cooldown_network_ms", S_INT, "10000", 1, 86400000, false,
     "key breaker after connect errors and timeouts"},
    {"router.cooldown_429_ms", S_INT, "10000", 1, 86400000, false,
     "model breaker after a 429 without Retry-After"},
    {"router.cooldown_5xx_ms", S_INT, "5000", 1, 86400000, false,
     "model breaker after 5xx; doubles on each re-opening"},
    {"router.cooldown_5xx_max_ms", S_INT, "300000", 1, 86400000, false,
     "cap of the 5xx cooldown doubling"},
    {"router.cooldown_404_ms", S_INT, "3600000", 1, 604800000, false,
     "model breaker after 404 model not found"},
    {"router.trial_timeout_ms", S_INT, "60000", 100, 86400000, false,
     "a half-open trial that does not report back is given up after this"},
    {"router.persist_disable", S_BOOL, "true", 0, 0, false,
     "write 401/403 key disables to provider_keys (off the request path)"},
    {"dispatch.bind", S_ENDPOINT, "tcp://127.0.0.1:7140", 0, 0, false, "dispatch requests"},
    {"dispatch.endpoints", S_ENDPOINTS, "", 0, 0, false, "dispatch instances to connect to"},
    {"dispatch.events.bind", S_ENDPOINT, "tcp://127.0.0.1:7141", 0, 0, false,
     "publishes attempt outcomes"},
    {"dispatch.events.endpoints", S_ENDPOINTS, "", 0, 0, false, "outcome publishers"},
    {"dispatch.metrics_listen", S_STR, "", 0, 0, false,
     "Prometheus /metrics listener; empty = off"},
    {"dispatch.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7142", 0, 0, false, "control socket"},
    {"dispatch.connect_timeout_ms", S_INT, "5000", 1, 600000, false, "upstream connect"},
    {"dispatch.first_byte_timeout_ms", S_INT, "120000", 1, 3600000, false, "upstream first byte"},
    {"dispatch.idle_timeout_ms", S_INT, "120000", 1, 3600000, false, "gap between chunks"},
    {"dispatch.total_timeout_ms", S_INT, "900000", 1, 86400000, false, "whole upstream call"},
    {"dispatch.instances", S_INT, "0", 0, 1024, false,
     "dispatch instances sharing provider-key limits before a router grants shares; 0 = the "
     "number of dispatch.endpoints"},
    {"dispatch.sched_batch", S_BOOL, "true", 0, 0, false,
     "while 4 or more requests are in flight, run every thread as SCHED_BATCH: a thread woken "
     "by another does not preempt it (far fewer context switches under load)"},
    {"dispatch.journal_sync", S_BOOL, "false", 0, 0, false,
     "fdatasync the settlement journal before DONE (host crashes, not only SIGKILL)"},
    {"dispatch.replay_hold_ms", S_INT, "10000", 0, 600000, false,
     "after a crash, provisional records from the journal wait this long before they are "
     "settled, so that a request ingress sends here again is settled by its new run"},
    {"health.events.bind", S_ENDPOINT, "tcp://127.0.0.1:7150", 0, 0, false,
     "publishes health state"},
    {"health.events.endpoints", S_ENDPOINTS, "", 0, 0, false, "health publishers"},
    {"health.metrics_listen", S_STR, "", 0, 0, false, "Prometheus /metrics listener; empty = off"},
    {"health.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7151", 0, 0, false, "control socket"},
    {"health.probe_interval_ms", S_INT, "30000", 100, 86400000, false, "active probe period"},
    {"health.probe_timeout_ms", S_INT, "10000", 100, 600000, false, "one probe's time limit"},
    {"health.probe_concurrency", S_INT, "8", 1, 1000, false, "probes in flight at once"},
    {"health.completion_probe_interval_ms", S_INT, "600000", 0, 86400000, false,
     "1-token completion probe of every (key, model) pair; 0 = only on demand"},
    {"health.probe_budget_micros", S_INT, "1000000", 0, 1000000000000, false,
     "what scheduled completion probes may cost per UTC day (micro-units); 0 = none"},
    {"health.instance_index", S_INT, "0", 0, 1023, false,
     "this health instance's share of the probing: keys with id % count == index"},
    {"health.instance_count", S_INT, "1", 1, 1024, false, "health instances splitting the probing"},
    {"ledger.bind", S_ENDPOINT, "tcp://127.0.0.1:7160", 0, 0, false, "usage and money entries"},
    {"ledger.endpoints", S_ENDPOINTS, "", 0, 0, false, "ledger instances to connect to"},
    {"ledger.metrics_listen", S_STR, "", 0, 0, false, "Prometheus /metrics listener; empty = off"},
    {"ledger.control_bind", S_ENDPOINT, "tcp://127.0.0.1:7161", 0, 0, false, "control socket"},
    {"ledger.batch_max", S_INT, "2000", 1, 100000, false, "entries per transaction"},
    {"ledger.batch_delay_ms", S_INT, "10", 0, 10000, false,
     "wait to fill a batch while busy (ledger.batch_busy_db_pct, ledger.batch_busy_idle_pct)"},
    {"ledger.batch_idle_delay_ms", S_INT, "2", 0, 10000, false,
     "wait to fill a batch otherwise: short statements while there is CPU to spare"},
    {"ledger.batch_busy_db_pct", S_INT, "30", 1, 100, false,
     "busy (ledger.batch_delay_ms) while transactions take this share of the time"},
    {"ledger.batch_busy_idle_pct", S_INT, "30", 0, 100, false,
     "busy (ledger.batch_delay_ms) while the host's CPUs are less idle than this (0: never)"},
    {"ledger.grant_interval_ms", S_INT, "60000", 100, 86400000, false,
     "how often recurring credit grants are checked for a new period"},
    {"ledger.span_retention_days", S_INT, "7", 1, 3650, false,
     "trace spans older than this are pruned in the background"},
    {"ledger.prune_interval_ms", S_INT, "60000", 100, 86400000, false,
     "how often the ledger prunes spans and request details"},
    {"trace.spans", S_BOOL, "true", 0, 0, false, "send trace spans to the ledger"},
    {"trace.sample_ppm", S_INT, "10000", 0, 1000000, false,
     "requests traced per million besides the failed, failed-over and slow ones"},
    {"trace.slow_ms", S_INT, "5000", 0, 86400000, false,
     "a request that made its client wait this long (a stream: for its first byte) keeps "
     "its spans (0 = no such rule)"},
    {"log_level_watch", S_BOOL, "true", 0, 0, false,
     "follow settings 'log_level' in the database (LISTEN/NOTIFY)"},
};
#define S_KEY_COUNT (sizeof s_keys / sizeof s_keys[0])

//  Keys that were renamed: the old name still works in files, the
//  environment and --set, so existing configurations keep running.
static const char *const s_aliases[][2] = {
    {"ingress.admin_listen", "admin.listen"},
    {"ingress.admin_token", "admin.token"},
    {"ingress.admin_lockout_ms", "admin.lockout_ms"},
    {"ingress.admin_lockout_attempts", "admin.lockout_attempts"},
    {"ingress.admin_session_ttl_s", "admin.session_ttl_s"},
};
#define S_ALIAS_COUNT (sizeof s_aliases / sizeof s_aliases[0])
#define S_MAX_ENDPOINTS 64

//  Environment variables with our prefix that belong to the CLI, not to programs.
static const char *s_env_allowed[] = {"TOLLGATE_CONFIG",      "TOLLGATE_ADMIN_URL",
                                      "TOLLGATE_ADMIN_TOKEN", "TOLLGATE_DIR",
                                      "TOLLGATE_BIN",         NULL};

typedef struct {
    char *value;                        //  current value, as text
    const char *origin;                 //  "default", "file", "env" or "command line"
    int64_t number;                     //  parsed value for S_INT and S_BOOL
    char *split;                        //  for S_ENDPOINTS: copy of value with NULs between items
    const char *items[S_MAX_ENDPOINTS]; //  pointers into split
    int item_count;                     //  how many items
} s_value_t;

struct _proto_config_t {
    s_value_t values[S_KEY_COUNT]; //  one per entry of s_keys
    char **expanded;               //  endpoints made from dns:// items, kept until destroy
    size_t expanded_count;         //  how many
};

static int s_index(const char *key)
{
    for (size_t i = 0; i < S_KEY_COUNT; i++)
        if (strcmp(s_keys[i].key, key) == 0)
            return (int)i;
    return -1;
}

//  The current name of a key given by an old one, else the key itself.
static const char *s_current(const char *key)
{
    for (size_t i = 0; i < S_ALIAS_COUNT; i++)
        if (strcmp(s_aliases[i][0], key) == 0)
            return s_aliases[i][1];
    return key;
}

bool proto_config_known(const char *key)
{
    return s_index(s_current(key)) >= 0;
}

static int s_parse_int(const char *text, int64_t *out)
{
    if (!*text)
        return -1;
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || *end)
        return -1;
    *out = value;
    return 0;
}

static int s_parse_bool(const char *text, int64_t *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return (*out = 1), 0;
        if (strcasecmp(text, no[i]) == 0)
            return (*out = 0), 0;
    }
    return -1;
}

static bool s_endpoint_valid(const char *text)
{
    return (strncmp(text, "tcp://", 6) == 0 && strchr(text + 6, ':')) ||
           (strncmp(text, "ipc://", 6) == 0 && text[6]) ||
           (strncmp(text, "inproc://", 9) == 0 && text[9]);
}

//  dns://NAME:PORT in an endpoint list: every IPv4 address NAME resolves
//  to when a program reads the list (see proto_config_endpoints).
static bool s_dns_valid(const char *text)
{
    if (strncmp(text, "dns://", 6) != 0)
        return false;
    const char *colon = strrchr(text + 6, ':');
    if (!colon || colon == text + 6)
        return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return colon[1] && !*end && port > 0 && port <= 65535;
}

static bool s_address_valid(const char *text)
{
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text)
        return false;
    int64_t port;
    return s_parse_int(colon + 1, &port) == 0 && port >= 0 && port <= 65535;
}

//  Splits a comma list in place into value->items, checking each endpoint.
static int s_split_endpoints(s_value_t *value, const char **bad)
{
    free(value->split);
    value->split = strdup(value->value);
    value->item_count = 0;
    char *save = NULL;
    for (char *item = strtok_r(value->split, ", ", &save); item;
         item = strtok_r(NULL, ", ", &save)) {
        if (!(s_endpoint_valid(item) || s_dns_valid(item)) ||
            value->item_count == S_MAX_ENDPOINTS) {
            *bad = item;
            return -1;
        }
        value->items[value->item_count++] = item;
    }
    return 0;
}

int proto_config_set(proto_config_t *self, const char *key, const char *text, const char *origin,
                     char *error, size_t error_size)
{
    key = s_current(key);
    int index = s_index(key);
    if (index < 0) {
        snprintf(error, error_size, "unknown configuration key '%s' (from %s)", key, origin);
        return -1;
    }
    const s_key_t *spec = &s_keys[index];
    s_value_t candidate = {.value = strdup(text), .origin = origin};
    const char *problem = NULL;
    const char *bad = NULL;
    switch (spec->kind) {
    case S_INT:
        if (s_parse_int(text, &candidate.number) != 0 || candidate.number < spec->min ||
            candidate.number > spec->max)
            problem = "an integer in range";
        break;
    case S_BOOL:
        if (s_parse_bool(text, &candidate.number) != 0)
            problem = "true or false";
        break;
    case S_LEVEL: {
        proto_log_level_t level;
        if (proto_log_level_parse(text, &level) != 0)
            problem = "one of debug, info, warn, error";
        break;
    }
    case S_ENDPOINT:
        if (!s_endpoint_valid(text))
            problem = "a ZeroMQ endpoint such as tcp://127.0.0.1:7120 or ipc:///path";
        break;
    case S_ENDPOINTS:
        if (s_split_endpoints(&candidate, &bad) != 0)
            problem = "a comma-separated list of ZeroMQ endpoints or dns://name:port "
                      "(at most 64)";
        break;
    case S_ADDRESS:
        if (!s_address_valid(text))
            problem = "host:port";
        break;
    case S_STR:
    case S_URL:
        break;
    }
    //  A secret left at a template's placeholder would start a cluster
    //  anyone who read the template can enter.
    if ((spec->secret || spec->kind == S_URL) && strcasestr(text, "CHANGE-ME"))
        problem = "a real secret, not a placeholder";
    if (problem) {
        if (spec->kind == S_INT)
            snprintf(error, error_size,
                     "bad value for '%s' (from %s): expected an integer from %lld to %lld", key,
                     origin, (long long)spec->min, (long long)spec->max);
        else
            snprintf(error, error_size, "bad value for '%s' (from %s): expected %s%s%s", key,
                     origin, problem, bad ? ", not " : "", bad ? bad : "");
        free(candidate.value);
        free(candidate.split);
        return -1;
    }
    s_value_t *slot = &self->values[index];
    free(slot->value);
    free(slot->split);
    *slot = candidate;
    return 0;
}

proto_config_t *proto_config_new(void)
{
    proto_config_t *self = calloc(1, sizeof *self);
    assert(self);
    char error[256];
    for (size_t i = 0; i < S_KEY_COUNT; i++) {
        int rc = proto_config_set(self, s_keys[i].key, s_keys[i].fallback, "default", error,
                                  sizeof error);
        assert(rc == 0);
        (void)rc;
    }
    return self;
}

void proto_config_destroy(proto_config_t **self_p)
{
    assert(self_p);
    proto_config_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < S_KEY_COUNT; i++) {
        free(self->values[i].value);
        free(self->values[i].split);
    }
    for (size_t i = 0; i < self->expanded_count; i++)
        free(self->expanded[i]);
    free(self->expanded);
    free(self);
    *self_p = NULL;
}

static char *s_trim(char *text)
{
    while (isspace((unsigned char)*text))
        text++;
    char *end = text + strlen(text);
    while (end > text && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return text;
}

int proto_config_load_file(proto_config_t *self, const char *path, char *error, size_t error_size)
{
    FILE *file = fopen(path, "r");
    if (!file) {
        snprintf(error, error_size, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int number = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, file)) {
        number++;
        char *text = s_trim(line);
        if (*text == '#' || *text == '\0')
            continue;
        char *equals = strchr(text, '=');
        if (!equals) {
            snprintf(error, error_size, "%s:%d: expected 'key = value'", path, number);
            rc = -1;
            break;
        }
        *equals = '\0';
        char *key = s_trim(text);
        char *value = s_trim(equals + 1);
        //  Origins must outlive this call; the file's origin is one constant.
        rc = proto_config_set(self, key, value, "file", error, error_size);
        if (rc != 0) {
            size_t used = strlen(error);
            snprintf(error + used, error_size - used, " at %s:%d", path, number);
        }
    }
    fclose(file);
    return rc;
}

static bool s_env_is_allowed(const char *name, size_t length)
{
    for (int i = 0; s_env_allowed[i]; i++)
        if (strlen(s_env_allowed[i]) == length && strncmp(s_env_allowed[i], name, length) == 0)
            return true;
    return false;
}

int proto_config_load_env(proto_config_t *self, char **environment, char *error, size_t error_size)
{
    for (char **entry = environment; entry && *entry; entry++) {
        if (strncmp(*entry, "TOLLGATE_", 9) != 0)
            continue;
        const char *equals = strchr(*entry, '=');
        if (!equals)
            continue;
        size_t name_length = (size_t)(equals - *entry);
        if (s_env_is_allowed(*entry, name_length))
            continue;
        //  Map the variable name back to a key (or an old name of one) by
        //  comparing the mangled form.
        const char *found = NULL;
        for (size_t i = 0; i < S_KEY_COUNT + S_ALIAS_COUNT && !found; i++) {
            const char *key = i < S_KEY_COUNT ? s_keys[i].key : s_aliases[i - S_KEY_COUNT][0];
            size_t key_length = strlen(key);
            if (key_length != name_length - 9)
                continue;
            size_t k = 0;
            for (; k < key_length; k++) {
                char want = key[k] == '.' ? '_' : (char)toupper((unsigned char)key[k]);
                if ((*entry)[9 + k] != want)
                    break;
            }
            if (k == key_length)
                found = key;
        }
        if (!found) {
            snprintf(error, error_size, "unknown configuration variable %.*s", (int)name_length,
                     *entry);
            return -1;
        }
        if (proto_config_set(self, found, equals + 1, "env", error, error_size) != 0)
            return -1;
    }
    return 0;
}

static s_value_t *s_value(proto_config_t *self, const char *key)
{
    int index = s_index(key);
    assert(index >= 0); //  asking for an unknown key is our own mistake
    return &self->values[index];
}

const char *proto_config_str(proto_config_t *self, const char *key)
{
    return s_value(self, key)->value;
}

int64_t proto_config_int(proto_config_t *self, const char *key)
{
    int index = s_index(key);
    assert(index >= 0 && s_keys[index].kind == S_INT);
    return self->values[index].number;
}

bool proto_config_bool(proto_config_t *self, const char *key)
{
    int index = s_index(key);
    assert(index >= 0 && s_keys[index].kind == S_BOOL);
    return self->values[index].number != 0;
}

//  Keeps an endpoint made by expansion until destroy. Returns it.
static const char *s_keep(proto_config_t *self, const char *endpoint)
{
    self->expanded = realloc(self->expanded, (self->expanded_count + 1) * sizeof *self->expanded);
    assert(self->expanded);
    self->expanded[self->expanded_count] = strdup(endpoint);
    assert(self->expanded[self->expanded_count]);
    return self->expanded[self->expanded_count++];
}

static int s_compare_text(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

//  Expands dns://NAME:PORT into tcp://ADDRESS:PORT for every IPv4 address of
//  NAME (ZeroMQ sockets here do not enable IPv6), sorted so that every
//  program reading the same list sees the same order: billing shards by
//  position. A name that does not resolve yet (its peers are not up, a
//  headless service with no pods) becomes tcp://NAME:PORT, which ZeroMQ
//  resolves on each reconnect, reaching one instance rather than none.
//  Adds up to `max` endpoints to out; returns how many.
static int s_expand_dns(proto_config_t *self, const char *item, const char **out, int max)
{
    char host[256], port[16];
    const char *colon = strrchr(item + 6, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - (item + 6)), item + 6);
    snprintf(port, sizeof port, "%s", colon + 1);
    char endpoint[320];
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *found = NULL;
    int rc = getaddrinfo(host, port, &hints, &found);
    char *addresses[S_MAX_ENDPOINTS];
    int count = 0;
    for (struct addrinfo *entry = rc == 0 ? found : NULL; entry && count < S_MAX_ENDPOINTS;
         entry = entry->ai_next) {
        char address[64];
        if (getnameinfo(entry->ai_addr, entry->ai_addrlen, address, sizeof address, NULL, 0,
                        NI_NUMERICHOST) != 0)
            continue;
        bool seen = false;
        for (int i = 0; i < count && !seen; i++)
            seen = strcmp(addresses[i], address) == 0;
        if (!seen)
            addresses[count++] = strdup(address);
    }
    if (found)
        freeaddrinfo(found);
    if (count == 0) {
        if (max < 1)
            return 0;
        log_warn(NULL, "%s: %s resolves to no IPv4 address yet (%s); connecting to the name", item,
                 host, rc ? gai_strerror(rc) : "no records");
        snprintf(endpoint, sizeof endpoint, "tcp://%s:%s", host, port);
        out[0] = s_keep(self, endpoint);
        return 1;
    }
    qsort(addresses, (size_t)count, sizeof addresses[0], s_compare_text);
    int used = 0;
    for (int i = 0; i < count; i++) {
        if (used < max) {
            snprintf(endpoint, sizeof endpoint, "tcp://%s:%s", addresses[i], port);
            out[used++] = s_keep(self, endpoint);
        }
        free(addresses[i]);
    }
    return used;
}

int proto_config_endpoints(proto_config_t *self, const char *component, const char **out, int max)
{
    char name[64];
    snprintf(name, sizeof name, "%s.endpoints", component);
    s_value_t *list = s_value(self, name);
    if (list->item_count > 0) {
        int count = 0;
        for (int i = 0; i < list->item_count && count < max; i++) {
            if (strncmp(list->items[i], "dns://", 6) == 0)
                count += s_expand_dns(self, list->items[i], out + count, max - count);
            else
                out[count++] = list->items[i];
        }
        return count;
    }
    snprintf(name, sizeof name, "%s.bind", component);
    if (max < 1)
        return 0;
    out[0] = s_value(self, name)->value;
    return 1;
}

void proto_config_mask_url(const char *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", value);
    //  URL form: scheme://user:password@host
    char *scheme = strstr(out, "://");
    if (scheme) {
        char *at = strchr(scheme + 3, '@');
        char *colon = strchr(scheme + 3, ':');
        if (at && colon && colon < at) {
            char rest[1024];
            snprintf(rest, sizeof rest, "%s", at);
            snprintf(colon + 1, out_size - (size_t)(colon + 1 - out), "***%s", rest);
        }
    }
    //  conninfo form: password=secret
    char *password = strstr(out, "password=");
    if (password) {
        char *end = password + 9;
        while (*end && !isspace((unsigned char)*end))
            end++;
        char rest[1024];
        snprintf(rest, sizeof rest, "%s", end);
        snprintf(password + 9, out_size - (size_t)(password + 9 - out), "***%s", rest);
    }
}

void proto_config_print(proto_config_t *self, FILE *out)
{
    for (size_t i = 0; i < S_KEY_COUNT; i++) {
        const s_key_t *spec = &s_keys[i];
        const s_value_t *value = &self->values[i];
        char shown[1024];
        if (spec->secret)
            snprintf(shown, sizeof shown, "%s", *value->value ? "***" : "");
        else if (spec->kind == S_URL)
            proto_config_mask_url(value->value, shown, sizeof shown);
        else
            snprintf(shown, sizeof shown, "%s", value->value);
        fprintf(out, "%s = %s    # %s\n", spec->key, shown, value->origin);
    }
}

void proto_config_test(bool verbose)
{
    if (verbose)
        printf(" * proto_config: ");
    char error[512];
    proto_config_t *config = proto_config_new();
    PROTO_CHECK(proto_config_int(config, "ingress.max_body_bytes") == 16777216);
    PROTO_CHECK(proto_config_set(config, "ingress.max_body_bytes", "2048", "test", error,
                                 sizeof error) == 0);
    PROTO_CHECK(proto_config_int(config, "ingress.max_body_bytes") == 2048);
    PROTO_CHECK(proto_config_set(config, "ingress.max_body_bytes", "12x", "test", error,
                                 sizeof error) == -1);
    PROTO_CHECK(strstr(error, "ingress.max_body_bytes"));
    PROTO_CHECK(proto_config_set(config, "nope", "1", "test", error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "unknown"));
    PROTO_CHECK(proto_config_set(config, "log_level", "loud", "test", error, sizeof error) == -1);
    PROTO_CHECK(proto_config_set(config, "billing.bind", "http://x", "test", error, sizeof error) ==
                -1);
    //  Templates' placeholders are refused where a secret goes.
    PROTO_CHECK(proto_config_set(config, "admin.token", "CHANGE-ME", "test", error, sizeof error) ==
                -1);
    PROTO_CHECK(strstr(error, "placeholder"));
    PROTO_CHECK(proto_config_set(config, "database_url", "postgresql://u:CHANGE-ME@h/db", "test",
                                 error, sizeof error) == -1);
    PROTO_CHECK(proto_config_set(config, "log_level", "info", "test", error, sizeof error) == 0);

    const char *endpoints[4];
    PROTO_CHECK(proto_config_endpoints(config, "billing", endpoints, 4) == 1);
    PROTO_CHECK(strcmp(endpoints[0], "tcp://127.0.0.1:7120") == 0);
    PROTO_CHECK(proto_config_set(config, "billing.endpoints", "tcp://a:1, tcp://b:2", "test", error,
                                 sizeof error) == 0);
    PROTO_CHECK(proto_config_endpoints(config, "billing", endpoints, 4) == 2);
    PROTO_CHECK(strcmp(endpoints[1], "tcp://b:2") == 0);
    PROTO_CHECK(proto_config_set(config, "billing.endpoints", "tcp://a:1,bogus", "test", error,
                                 sizeof error) == -1);
    PROTO_CHECK(strstr(error, "bogus"));
    //  dns:// items expand into one tcp:// endpoint per address, sorted;
    //  plain items keep their place.
    PROTO_CHECK(proto_config_set(config, "billing.endpoints", "tcp://a:1,dns://127.0.0.1:7120",
                                 "test", error, sizeof error) == 0);
    PROTO_CHECK(proto_config_endpoints(config, "billing", endpoints, 4) == 2);
    PROTO_CHECK(strcmp(endpoints[0], "tcp://a:1") == 0);
    PROTO_CHECK(strcmp(endpoints[1], "tcp://127.0.0.1:7120") == 0);
    PROTO_CHECK(proto_config_set(config, "billing.endpoints", "dns://localhost:7", "test", error,
                                 sizeof error) == 0);
    PROTO_CHECK(proto_config_endpoints(config, "billing", endpoints, 4) >= 1);
    PROTO_CHECK(strcmp(endpoints[0], "tcp://127.0.0.1:7") == 0);
    PROTO_CHECK(proto_config_set(config, "billing.endpoints", "dns://x", "test", error,
                                 sizeof error) == -1);
    PROTO_CHECK(
        proto_config_set(config, "billing.bind", "dns://x:1", "test", error, sizeof error) == -1);

    char *env[] = {"PATH=/bin", "TOLLGATE_LEDGER_BATCH_MAX=5", "TOLLGATE_ADMIN_URL=x", NULL};
    PROTO_CHECK(proto_config_load_env(config, env, error, sizeof error) == 0);
    PROTO_CHECK(proto_config_int(config, "ledger.batch_max") == 5);
    char *bad_env[] = {"TOLLGATE_NO_SUCH=1", NULL};
    PROTO_CHECK(proto_config_load_env(config, bad_env, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, "TOLLGATE_NO_SUCH"));

    char path[] = "/tmp/proto_config_testXXXXXX";
    int fd = mkstemp(path);
    PROTO_CHECK(fd >= 0);
    const char *text = "# comment\n\nlog_level = debug\nsecret_key = abc\n"
                       "database_url = postgresql://u:hunter2@h/db\n";
    PROTO_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    PROTO_CHECK(proto_config_load_file(config, path, error, sizeof error) == 0);
    PROTO_CHECK(strcmp(proto_config_str(config, "log_level"), "debug") == 0);
    char *printed = NULL;
    size_t printed_size = 0;
    FILE *memory = open_memstream(&printed, &printed_size);
    proto_config_print(config, memory);
    fclose(memory);
    PROTO_CHECK(!strstr(printed, "hunter2"));
    PROTO_CHECK(!strstr(printed, "abc"));
    PROTO_CHECK(strstr(printed, "postgresql://u:***@h/db"));
    free(printed);
    FILE *file = fopen(path, "w");
    fputs("log_level debug\n", file);
    fclose(file);
    PROTO_CHECK(proto_config_load_file(config, path, error, sizeof error) == -1);
    PROTO_CHECK(strstr(error, ":1"));
    unlink(path);

    char masked[128];
    proto_config_mask_url("host=x password=s3cret user=u", masked, sizeof masked);
    PROTO_CHECK(strcmp(masked, "host=x password=*** user=u") == 0);
    proto_config_destroy(&config);
    PROTO_CHECK(config == NULL);
    if (verbose)
        printf("OK\n");
}
