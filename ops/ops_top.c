#include "ops_top.h"
#include "proto_check.h"
#include "proto_config.h"

#include <assert.h>
#include <curl/curl.h>
#include <czmq.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_DEFAULT_DIR "./var"
#define S_ADDRESSES_MAX 32
#define S_SCRAPE_TIMEOUT_MS 2000
#define S_BUCKETS_MAX 64

//  One scrape of every address: "name{labels}" -> value, summed over
//  instances.
typedef struct {
    zhashx_t *series; //  key text -> double* (owned)
    int scraped;      //  addresses that answered
} s_sample_t;

static s_sample_t *s_sample_new(void)
{
    s_sample_t *self = calloc(1, sizeof *self);
    assert(self);
    self->series = zhashx_new();
    zhashx_set_destructor(self->series, (zhashx_destructor_fn *)zstr_free);
    return self;
}

static void s_sample_destroy(s_sample_t **self_p)
{
    if (!*self_p)
        return;
    zhashx_destroy(&(*self_p)->series);
    free(*self_p);
    *self_p = NULL;
}

//  Adds one exposition's samples. Comment lines and lines that do not
//  parse are skipped: the programs' own format is checked by their tests.
static void s_parse(s_sample_t *self, const char *text)
{
    const char *line = text;
    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t)(end - line) : strlen(line);
        if (length && line[0] != '#' && length < 4096) {
            char buffer[4096];
            memcpy(buffer, line, length);
            buffer[length] = '\0';
            //  The value follows the last space (we write no timestamps).
            char *space = strrchr(buffer, ' ');
            char *number_end = NULL;
            double value = space ? strtod(space + 1, &number_end) : 0;
            if (space && number_end && *number_end == '\0' && space > buffer) {
                *space = '\0';
                if (strncmp(buffer, "tollgate_info", 13) != 0) {
                    double *sum = zhashx_lookup(self->series, buffer);
                    if (sum)
                        *sum += value;
                    else {
                        sum = malloc(sizeof *sum);
                        assert(sum);
                        *sum = value;
                        zhashx_insert(self->series, buffer, sum);
                    }
                }
            }
        }
        line = end ? end + 1 : NULL;
    }
}

static size_t s_write(char *data, size_t size, size_t count, void *arg)
{
    zchunk_t *chunk = arg;
    zchunk_extend(chunk, data, size * count);
    return size * count;
}

//  Scrapes one address into the sample. Returns 0 or -1.
static int s_scrape(s_sample_t *self, const char *address)
{
    CURL *curl = curl_easy_init();
    if (!curl)
        return -1;
    char url[512];
    snprintf(url, sizeof url, "http://%s/metrics", address);
    zchunk_t *body = zchunk_new(NULL, 0);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)S_SCRAPE_TIMEOUT_MS);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(curl);
    int result = -1;
    if (rc == CURLE_OK && status == 200) {
        char *text = zchunk_strdup(body);
        s_parse(self, text);
        free(text);
        self->scraped++;
        result = 0;
    }
    zchunk_destroy(&body);
    return result;
}

//  The family name of a series key ("a_total{x=\"1\"}" -> "a_total").
static void s_name(const char *key, char *out, size_t size)
{
    size_t length = strcspn(key, "{");
    if (length >= size)
        length = size - 1;
    memcpy(out, key, length);
    out[length] = '\0';
}

//  A label's value from a series key, unescaped. Returns false when absent.
static bool s_label(const char *key, const char *label, char *out, size_t size)
{
    const char *cursor = strchr(key, '{');
    size_t label_length = strlen(label);
    while (cursor && *cursor && *cursor != '}') {
        cursor++; //  past '{' or ','
        const char *equals = strchr(cursor, '=');
        if (!equals || equals[1] != '"')
            return false;
        bool match =
            (size_t)(equals - cursor) == label_length && strncmp(cursor, label, label_length) == 0;
        size_t n = 0;
        const char *p = equals + 2;
        for (; *p && *p != '"'; p++) {
            char c = *p;
            if (c == '\\' && p[1]) {
                p++;
                c = *p == 'n' ? '\n' : *p;
            }
            if (match && n + 1 < size)
                out[n++] = c;
        }
        if (match) {
            out[n] = '\0';
            return true;
        }
        cursor = *p ? p + 1 : p; //  at ',' or '}'
    }
    return false;
}

static double s_value(s_sample_t *self, const char *key)
{
    double *value = self ? zhashx_lookup(self->series, key) : NULL;
    return value ? *value : 0;
}

//  Sums a family's series whose `label` is `value` (label NULL: all) and
//  whose status label passes `status_filter` (NULL: all).
typedef bool(s_status_fn)(int status);

static double s_sum(s_sample_t *self, const char *family, const char *label, const char *value,
                    s_status_fn *status_filter)
{
    double sum = 0;
    for (double *item = zhashx_first(self->series); item; item = zhashx_next(self->series)) {
        const char *key = zhashx_cursor(self->series);
        char name[256], found[256], status[16];
        s_name(key, name, sizeof name);
        if (strcmp(name, family) != 0)
            continue;
        if (label && (!s_label(key, label, found, sizeof found) || strcmp(found, value) != 0))
            continue;
        if (status_filter &&
            !status_filter(s_label(key, "status", status, sizeof status) ? atoi(status) : 0))
            continue;
        sum += *item;
    }
    return sum;
}

static bool s_upstream_error(int status)
{
    return status == 0 || status >= 400;
}

static bool s_server_error(int status)
{
    return status == 0 || status >= 500;
}

static bool s_client_error(int status)
{
    return status >= 400 && status < 500;
}

typedef struct {
    double le;    //  upper bound, seconds
    double count; //  cumulative count
} s_bucket_t;

static int s_bucket_compare(const void *a, const void *b)
{
    double x = ((const s_bucket_t *)a)->le, y = ((const s_bucket_t *)b)->le;
    return x < y ? -1 : x > y;
}

//  Collects a histogram's buckets for provider (summed), minus `before`'s
//  when given. Returns the number of buckets.
static size_t s_buckets(s_sample_t *after, s_sample_t *before, const char *family,
                        const char *provider, s_bucket_t *buckets)
{
    char bucket_name[256];
    snprintf(bucket_name, sizeof bucket_name, "%s_bucket", family);
    size_t count = 0;
    for (double *item = zhashx_first(after->series); item; item = zhashx_next(after->series)) {
        const char *key = zhashx_cursor(after->series);
        char name[256], found[256], le[32];
        s_name(key, name, sizeof name);
        if (strcmp(name, bucket_name) != 0 || !s_label(key, "le", le, sizeof le))
            continue;
        if (provider &&
            (!s_label(key, "provider", found, sizeof found) || strcmp(found, provider) != 0))
            continue;
        double bound = strcmp(le, "+Inf") == 0 ? INFINITY : strtod(le, NULL);
        double value = *item - (before ? s_value(before, key) : 0);
        size_t i = 0;
        while (i < count && buckets[i].le != bound)
            i++;
        if (i == count) {
            if (count == S_BUCKETS_MAX)
                continue;
            buckets[count++] = (s_bucket_t){bound, 0};
        }
        buckets[i].count += value;
    }
    qsort(buckets, count, sizeof *buckets, s_bucket_compare);
    return count;
}

//  The q-quantile in ms of a histogram, interpolated within its bucket as
//  Prometheus' histogram_quantile does; from the growth since `before`
//  when there was any, else from the whole life. -1 when empty.
static double s_quantile(s_sample_t *after, s_sample_t *before, const char *family,
                         const char *provider, double q)
{
    s_bucket_t buckets[S_BUCKETS_MAX];
    size_t count = s_buckets(after, before, family, provider, buckets);
    if (count == 0 || buckets[count - 1].count <= 0)
        count = s_buckets(after, NULL, family, provider, buckets);
    if (count == 0 || buckets[count - 1].count <= 0)
        return -1;
    double rank = q * buckets[count - 1].count;
    double lower = 0, below = 0;
    for (size_t i = 0; i < count; i++) {
        if (buckets[i].count >= rank) {
            if (isinf(buckets[i].le))
                return lower * 1000.0; //  beyond the last bound: say the bound
            double within = buckets[i].count - below;
            double fraction = within > 0 ? (rank - below) / within : 1;
            return (lower + (buckets[i].le - lower) * fraction) * 1000.0;
        }
        lower = buckets[i].le;
        below = buckets[i].count;
    }
    return lower * 1000.0;
}

static int s_state_rank(const char *state)
{
    if (strcmp(state, "disabled") == 0)
        return 3;
    if (strcmp(state, "open") == 0)
        return 2;
    if (strcmp(state, "half_open") == 0)
        return 1;
    return 0;
}

//  The provider entry of a frame, made on first use.
static json_t *s_provider(json_t *providers, const char *name)
{
    json_t *entry = json_object_get(providers, name);
    if (!entry) {
        entry = json_pack("{s:s, s:s, s:[]}", "provider", name, "breaker", "closed", "breakers");
        json_object_set_new(providers, name, entry);
    }
    return entry;
}

static json_t *s_number(double value)
{
    return value < 0 ? json_null() : json_real(round(value * 1000.0) / 1000.0);
}

//  Builds one frame from two samples interval_ms apart. Caller owns it.
static json_t *s_frame(s_sample_t *before, s_sample_t *after, double interval_ms)
{
    double seconds = interval_ms > 0 ? interval_ms / 1000.0 : 1;
    json_t *providers = json_object();
    //  Providers from dispatch's attempts and the routers' breakers.
    for (double *item = zhashx_first(after->series); item; item = zhashx_next(after->series)) {
        const char *key = zhashx_cursor(after->series);
        char name[256], provider[256];
        s_name(key, name, sizeof name);
        if ((strcmp(name, "tollgate_upstream_attempts_total") == 0 ||
             (strcmp(name, "tollgate_router_breaker_open") == 0 && *item > 0)) &&
            s_label(key, "provider", provider, sizeof provider))
            s_provider(providers, provider);
    }
    for (double *item = zhashx_first(after->series); item; item = zhashx_next(after->series)) {
        const char *key = zhashx_cursor(after->series);
        char name[256], provider[256], layer[16], target[256], state[32];
        s_name(key, name, sizeof name);
        if (strcmp(name, "tollgate_router_breaker_open") != 0 || *item <= 0 ||
            !s_label(key, "provider", provider, sizeof provider) ||
            !s_label(key, "state", state, sizeof state))
            continue;
        s_label(key, "layer", layer, sizeof layer);
        s_label(key, "target", target, sizeof target);
        json_t *entry = s_provider(providers, provider);
        json_array_append_new(
            json_object_get(entry, "breakers"),
            json_pack("{s:s, s:s, s:s}", "layer", layer, "target", target, "state", state));
        if (s_state_rank(state) >
            s_state_rank(json_string_value(json_object_get(entry, "breaker"))))
            json_object_set_new(entry, "breaker", json_string(state));
    }
    json_t *list = json_array();
    const char *name;
    json_t *entry;
    json_object_foreach(providers, name, entry)
    {
        const char *family = "tollgate_upstream_attempts_total";
        double attempts = s_sum(after, family, "provider", name, NULL);
        double errors = s_sum(after, family, "provider", name, s_upstream_error);
        double attempts_rate = (attempts - s_sum(before, family, "provider", name, NULL)) / seconds;
        double errors_rate =
            (errors - s_sum(before, family, "provider", name, s_upstream_error)) / seconds;
        json_object_set_new(entry, "attempts_total", json_integer((json_int_t)attempts));
        json_object_set_new(entry, "errors_total", json_integer((json_int_t)errors));
        json_object_set_new(entry, "attempts_per_s", s_number(attempts_rate));
        json_object_set_new(entry, "errors_per_s", s_number(errors_rate));
        json_object_set_new(entry, "error_ratio",
                            attempts_rate > 0 ? s_number(errors_rate / attempts_rate)
                            : attempts > 0    ? s_number(errors / attempts)
                                              : json_null());
        json_object_set_new(
            entry, "latency_p50_ms",
            s_number(s_quantile(after, before, "tollgate_upstream_seconds", name, 0.5)));
        json_object_set_new(
            entry, "latency_p95_ms",
            s_number(s_quantile(after, before, "tollgate_upstream_seconds", name, 0.95)));
        json_object_set_new(
            entry, "ttfb_p50_ms",
            s_number(s_quantile(after, before, "tollgate_upstream_ttfb_seconds", name, 0.5)));
        json_array_append(list, entry);
    }
    json_decref(providers);
    const char *requests = "tollgate_ingress_requests_total";
    double total = s_sum(after, requests, NULL, NULL, NULL);
    json_t *gateway = json_pack(
        "{s:I, s:o, s:o, s:o, s:o, s:o, s:o}", "requests_total", (json_int_t)total,
        "requests_per_s", s_number((total - s_sum(before, requests, NULL, NULL, NULL)) / seconds),
        "server_errors_per_s",
        s_number((s_sum(after, requests, NULL, NULL, s_server_error) -
                  s_sum(before, requests, NULL, NULL, s_server_error)) /
                 seconds),
        "client_errors_per_s",
        s_number((s_sum(after, requests, NULL, NULL, s_client_error) -
                  s_sum(before, requests, NULL, NULL, s_client_error)) /
                 seconds),
        "in_flight", s_number(s_sum(after, "tollgate_ingress_in_flight", NULL, NULL, NULL)),
        "latency_p50_ms",
        s_number(s_quantile(after, before, "tollgate_ingress_request_seconds", NULL, 0.5)),
        "ttft_p50_ms",
        s_number(s_quantile(after, before, "tollgate_ingress_ttft_seconds", NULL, 0.5)));
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_pack("{s:s, s:I, s:i, s:o, s:o}", "at", stamp, "interval_ms",
                     (json_int_t)interval_ms, "sources", after->scraped, "gateway", gateway,
                     "providers", list);
}

static void s_cell(FILE *out, json_t *value, const char *format)
{
    if (json_is_number(value))
        fprintf(out, format, json_number_value(value));
    else
        fprintf(out, "%*s", atoi(format + 1), "-");
}

static void s_print(FILE *out, json_t *frame)
{
    json_t *gateway = json_object_get(frame, "gateway");
    fprintf(out, "tollgate top  %s  every %.1f s  %d source(s)\n\n",
            json_string_value(json_object_get(frame, "at")),
            (double)json_integer_value(json_object_get(frame, "interval_ms")) / 1000.0,
            (int)json_integer_value(json_object_get(frame, "sources")));
    fprintf(out, "gateway  ");
    s_cell(out, json_object_get(gateway, "requests_per_s"), "%8.1f");
    fprintf(out, " req/s  ");
    s_cell(out, json_object_get(gateway, "server_errors_per_s"), "%6.1f");
    fprintf(out, " 5xx/s  ");
    s_cell(out, json_object_get(gateway, "client_errors_per_s"), "%6.1f");
    fprintf(out, " 4xx/s  in flight ");
    s_cell(out, json_object_get(gateway, "in_flight"), "%.0f");
    fprintf(out, "  p50 ");
    s_cell(out, json_object_get(gateway, "latency_p50_ms"), "%.1f");
    fprintf(out, " ms  ttft p50 ");
    s_cell(out, json_object_get(gateway, "ttft_p50_ms"), "%.1f");
    fprintf(out, " ms\n\n%-20s %8s %8s %6s %9s %9s %9s  %s\n", "PROVIDER", "ATT/S", "ERR/S", "ERR%",
            "P50 MS", "P95 MS", "TTFB P50", "BREAKER");
    size_t index;
    json_t *entry;
    json_array_foreach(json_object_get(frame, "providers"), index, entry)
    {
        fprintf(out, "%-20.20s ", json_string_value(json_object_get(entry, "provider")));
        s_cell(out, json_object_get(entry, "attempts_per_s"), "%8.1f");
        fprintf(out, " ");
        s_cell(out, json_object_get(entry, "errors_per_s"), "%8.1f");
        fprintf(out, " ");
        json_t *ratio = json_object_get(entry, "error_ratio");
        if (json_is_number(ratio))
            fprintf(out, "%6.1f", json_number_value(ratio) * 100.0);
        else
            fprintf(out, "%6s", "-");
        fprintf(out, " ");
        s_cell(out, json_object_get(entry, "latency_p50_ms"), "%9.1f");
        fprintf(out, " ");
        s_cell(out, json_object_get(entry, "latency_p95_ms"), "%9.1f");
        fprintf(out, " ");
        s_cell(out, json_object_get(entry, "ttfb_p50_ms"), "%9.1f");
        fprintf(out, "  %s", json_string_value(json_object_get(entry, "breaker")));
        size_t i;
        json_t *breaker;
        json_array_foreach(json_object_get(entry, "breakers"), i, breaker)
        {
            fprintf(out, "%s%s %s %s", i ? ", " : " (",
                    json_string_value(json_object_get(breaker, "layer")),
                    json_string_value(json_object_get(breaker, "target")),
                    json_string_value(json_object_get(breaker, "state")));
        }
        fprintf(out, "%s\n", json_array_size(json_object_get(entry, "breakers")) ? ")" : "");
    }
    if (json_array_size(json_object_get(frame, "providers")) == 0)
        fprintf(out, "(no upstream attempts yet)\n");
}

static s_sample_t *s_sample_take(char **addresses, int count)
{
    s_sample_t *sample = s_sample_new();
    for (int i = 0; i < count; i++)
        s_scrape(sample, addresses[i]);
    return sample;
}

//  Adds comma-separated addresses to the list. Returns the new count.
static int s_add_addresses(char **addresses, int count, const char *text)
{
    char *copy = strdup(text);
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item && count < S_ADDRESSES_MAX;
         item = strtok_r(NULL, ",", &save))
        if (*item)
            addresses[count++] = strdup(item);
    free(copy);
    return count;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: tollgate top [--dir DIR] [--metrics HOST:PORT,...] [--interval MS] [--once] "
            "[--json]\n"
            "  live requests/s, errors, latency and breaker state per provider, from the\n"
            "  programs' /metrics (ingress, dispatch and router .metrics_listen in\n"
            "  DIR/tollgate.conf, or --metrics); --once prints one frame and exits\n");
}

int ops_top_main(int argc, char **argv)
{
    static const struct option options[] = {{"dir", required_argument, NULL, 'd'},
                                            {"metrics", required_argument, NULL, 'm'},
                                            {"interval", required_argument, NULL, 'i'},
                                            {"once", no_argument, NULL, 'o'},
                                            {"json", no_argument, NULL, 'j'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    const char *dir = getenv("TOLLGATE_DIR");
    if (!dir || !*dir)
        dir = S_DEFAULT_DIR;
    char *addresses[S_ADDRESSES_MAX];
    int count = 0;
    long interval_ms = 1000;
    bool once = false, json = false;
    optind = 1;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case 'd':
            dir = optarg;
            break;
        case 'm':
            count = s_add_addresses(addresses, count, optarg);
            break;
        case 'i':
            interval_ms = strtol(optarg, NULL, 10);
            if (interval_ms < 100 || interval_ms > 600000) {
                fprintf(stderr, "tollgate top: --interval takes 100 to 600000 ms\n");
                return 2;
            }
            break;
        case 'o':
            once = true;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        s_usage(stderr);
        return 2;
    }
    if (count == 0) {
        //  The cluster's configuration, with the environment on top, as the
        //  programs themselves read it.
        extern char **environ;
        proto_config_t *config = proto_config_new();
        char path[4096], error[1024];
        snprintf(path, sizeof path, "%s/tollgate.conf", dir);
        if ((access(path, R_OK) == 0 &&
             proto_config_load_file(config, path, error, sizeof error) != 0) ||
            proto_config_load_env(config, environ, error, sizeof error) != 0) {
            fprintf(stderr, "tollgate top: %s\n", error);
            proto_config_destroy(&config);
            return 2;
        }
        for (const char **program = (const char *[]){"ingress", "dispatch", "router", NULL};
             *program; program++) {
            char key[64];
            snprintf(key, sizeof key, "%s.metrics_listen", *program);
            count = s_add_addresses(addresses, count, proto_config_str(config, key));
        }
        proto_config_destroy(&config);
    }
    if (count == 0) {
        fprintf(stderr, "tollgate top: no metrics to read: set ingress.metrics_listen, "
                        "dispatch.metrics_listen and router.metrics_listen, or pass --metrics\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 0;
    s_sample_t *before = s_sample_take(addresses, count);
    for (;;) {
        uint64_t started = zclock_mono();
        usleep((useconds_t)interval_ms * 1000);
        s_sample_t *after = s_sample_take(addresses, count);
        if (after->scraped == 0) {
            fprintf(stderr, "tollgate top: no /metrics answered (%s%s)\n", addresses[0],
                    count > 1 ? ", ..." : "");
            rc = 1;
        }
        json_t *frame = s_frame(before, after, (double)(zclock_mono() - started));
        if (rc == 0) {
            if (json) {
                char *text = json_dumps(frame, JSON_INDENT(2));
                printf("%s\n", text);
                free(text);
            } else {
                if (!once && isatty(STDOUT_FILENO))
                    printf("\033[H\033[2J");
                s_print(stdout, frame);
            }
            fflush(stdout);
        }
        json_decref(frame);
        s_sample_destroy(&before);
        before = after;
        if (once || rc != 0)
            break;
    }
    s_sample_destroy(&before);
    for (int i = 0; i < count; i++)
        free(addresses[i]);
    curl_global_cleanup();
    return rc;
}

void ops_top_test(bool verbose)
{
    if (verbose)
        printf(" * ops_top: ");
    const char *first =
        "# TYPE tollgate_upstream_attempts_total counter\n"
        "tollgate_upstream_attempts_total{provider=\"a\\\"b\",model=\"m\",status=\"200\"} 10\n"
        "tollgate_upstream_attempts_total{provider=\"a\\\"b\",model=\"m\",status=\"500\"} 2\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"0.1\"} 5\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"1\"} 12\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"+Inf\"} 12\n"
        "tollgate_ingress_requests_total{route=\"chat\",model=\"m\",status=\"200\"} 10\n"
        "tollgate_info{program=\"dispatch\",instance=\"x\"} 1\n";
    const char *second =
        "tollgate_upstream_attempts_total{provider=\"a\\\"b\",model=\"m\",status=\"200\"} 14\n"
        "tollgate_upstream_attempts_total{provider=\"a\\\"b\",model=\"m\",status=\"500\"} 4\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"0.1\"} 15\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"1\"} 22\n"
        "tollgate_upstream_seconds_bucket{provider=\"a\\\"b\",le=\"+Inf\"} 22\n"
        "tollgate_ingress_requests_total{route=\"chat\",model=\"m\",status=\"200\"} 14\n"
        "tollgate_ingress_requests_total{route=\"chat\",model=\"m\",status=\"502\"} 2\n"
        "tollgate_ingress_in_flight 3\n"
        "tollgate_router_breaker_open{provider=\"a\\\"b\",layer=\"model\",target=\"m\","
        "state=\"open\"} 1\n"
        "tollgate_router_breaker_open{provider=\"c\",layer=\"key\",target=\"key 2\","
        "state=\"open\"} 0\n";
    s_sample_t *before = s_sample_new();
    s_parse(before, first);
    s_sample_t *after = s_sample_new();
    s_parse(after, second);
    s_parse(after, "tollgate_ingress_in_flight 1\n"); //  a second instance adds up
    char value[32];
    PROTO_CHECK(s_label("x{a=\"1\",b=\"q\\\"\"}", "b", value, sizeof value) &&
                strcmp(value, "q\"") == 0);
    PROTO_CHECK(!s_label("x{a=\"1\"}", "c", value, sizeof value));
    json_t *frame = s_frame(before, after, 2000);
    json_t *providers = json_object_get(frame, "providers");
    PROTO_CHECK(json_array_size(providers) == 1); //  c's breaker is closed again
    json_t *a = json_array_get(providers, 0);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(a, "provider")), "a\"b") == 0);
    PROTO_CHECK(json_number_value(json_object_get(a, "attempts_per_s")) == 3.0);
    PROTO_CHECK(json_number_value(json_object_get(a, "errors_per_s")) == 1.0);
    PROTO_CHECK(json_integer_value(json_object_get(a, "errors_total")) == 4);
    //  The window's 10 observations all fell under 100 ms: p50 is 50 ms.
    PROTO_CHECK(fabs(json_number_value(json_object_get(a, "latency_p50_ms")) - 50.0) < 0.01);
    PROTO_CHECK(strcmp(json_string_value(json_object_get(a, "breaker")), "open") == 0);
    json_t *gateway = json_object_get(frame, "gateway");
    PROTO_CHECK(json_number_value(json_object_get(gateway, "requests_per_s")) == 3.0);
    PROTO_CHECK(json_number_value(json_object_get(gateway, "server_errors_per_s")) == 1.0);
    PROTO_CHECK(json_number_value(json_object_get(gateway, "in_flight")) == 4.0);
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    s_print(out, frame);
    fclose(out);
    PROTO_CHECK(strstr(text, "a\"b") && strstr(text, "open (model m open)"));
    free(text);
    json_decref(frame);
    s_sample_destroy(&before);
    s_sample_destroy(&after);
    if (verbose)
        printf("OK\n");
}
