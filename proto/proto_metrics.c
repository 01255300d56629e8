#include "proto_metrics.h"
#include "proto_check.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

static const double s_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
#define S_BUCKETS (sizeof s_buckets / sizeof s_buckets[0])

struct _proto_metric_t {
    s_type_t type;               //  kind of metric
    char *name;                  //  metric family name
    char *help;                  //  HELP text
    char *labels;                //  label text, "" when none
    double value;                //  counter/gauge value; histogram sum
    uint64_t count;              //  histogram observations
    uint64_t buckets[S_BUCKETS]; //  histogram cumulative-free bucket counts
    proto_metric_t *next;        //  next in registry order
    proto_metric_t *same_hash;   //  next in its index bucket
    uint64_t hash;               //  of name and labels
};

//  Metrics are looked up on hot paths (a label set per upstream attempt, the
//  first byte of every answer), so the registry keeps an index by name and
//  labels: callers need no cache of their own (one keyed by the registry's
//  address could outlive it).
struct _proto_metrics_t {
    proto_metric_t *head;     //  metrics in creation order
    proto_metric_t *tail;     //  last created
    proto_metric_t **buckets; //  index: chains by hash
    size_t bucket_count;      //  a power of two
    size_t count;             //  metrics in the registry
};

proto_metrics_t *proto_metrics_new(void)
{
    proto_metrics_t *self = calloc(1, sizeof *self);
    assert(self);
    self->bucket_count = 64;
    self->buckets = calloc(self->bucket_count, sizeof *self->buckets);
    assert(self->buckets);
    return self;
}

//  FNV-1a over the name, a separator no name holds, and the labels.
static uint64_t s_hash(const char *name, const char *labels)
{
    uint64_t hash = 1469598103934665603ull;
    for (const char *cursor = name; *cursor; cursor++)
        hash = (hash ^ (uint8_t)*cursor) * 1099511628211ull;
    hash = (hash ^ '{') * 1099511628211ull;
    for (const char *cursor = labels; *cursor; cursor++)
        hash = (hash ^ (uint8_t)*cursor) * 1099511628211ull;
    return hash;
}

//  Doubles the index once chains would average more than two metrics.
static void s_grow(proto_metrics_t *self)
{
    if (self->count <= self->bucket_count * 2)
        return;
    size_t count = self->bucket_count * 2;
    proto_metric_t **buckets = calloc(count, sizeof *buckets);
    assert(buckets);
    for (proto_metric_t *metric = self->head; metric; metric = metric->next) {
        size_t at = metric->hash & (count - 1);
        metric->same_hash = buckets[at];
        buckets[at] = metric;
    }
    free(self->buckets);
    self->buckets = buckets;
    self->bucket_count = count;
}

void proto_metrics_destroy(proto_metrics_t **self_p)
{
    assert(self_p);
    proto_metrics_t *self = *self_p;
    if (!self)
        return;
    for (proto_metric_t *metric = self->head, *next; metric; metric = next) {
        next = metric->next;
        free(metric->name);
        free(metric->help);
        free(metric->labels);
        free(metric);
    }
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static proto_metric_t *s_find(proto_metrics_t *self, s_type_t type, const char *name,
                              const char *help, const char *labels)
{
    labels = labels ? labels : "";
    uint64_t hash = s_hash(name, labels);
    proto_metric_t **bucket = &self->buckets[hash & (self->bucket_count - 1)];
    for (proto_metric_t *metric = *bucket; metric; metric = metric->same_hash)
        if (metric->hash == hash && strcmp(metric->name, name) == 0 &&
            strcmp(metric->labels, labels) == 0) {
            assert(metric->type == type); //  one name, one type: our own mistake otherwise
            return metric;
        }
    proto_metric_t *metric = calloc(1, sizeof *metric);
    assert(metric);
    metric->type = type;
    metric->name = strdup(name);
    metric->help = strdup(help ? help : "");
    metric->labels = strdup(labels);
    metric->hash = hash;
    metric->same_hash = *bucket;
    *bucket = metric;
    if (self->tail)
        self->tail->next = metric;
    else
        self->head = metric;
    self->tail = metric;
    self->count++;
    s_grow(self);
    return metric;
}

proto_metric_t *proto_metrics_counter(proto_metrics_t *self, const char *name, const char *help,
                                      const char *labels)
{
    return s_find(self, S_COUNTER, name, help, labels);
}

proto_metric_t *proto_metrics_gauge(proto_metrics_t *self, const char *name, const char *help,
                                    const char *labels)
{
    return s_find(self, S_GAUGE, name, help, labels);
}

proto_metric_t *proto_metrics_histogram(proto_metrics_t *self, const char *name, const char *help,
                                        const char *labels)
{
    return s_find(self, S_HISTOGRAM, name, help, labels);
}

void proto_metric_add(proto_metric_t *metric, double value)
{
    metric->value += value;
}

void proto_metric_set(proto_metric_t *metric, double value)
{
    metric->value = value;
}

void proto_metric_observe(proto_metric_t *metric, double value)
{
    metric->count++;
    metric->value += value;
    for (size_t i = 0; i < S_BUCKETS; i++)
        if (value <= s_buckets[i]) {
            metric->buckets[i]++;
            break;
        }
}

double proto_metric_value(const proto_metric_t *metric)
{
    return metric->value;
}

void proto_metrics_zero(proto_metrics_t *self, const char *name)
{
    for (proto_metric_t *metric = self->head; metric; metric = metric->next)
        if (metric->type != S_HISTOGRAM && strcmp(metric->name, name) == 0)
            metric->value = 0;
}

char *proto_metrics_label(char *out, size_t size, const char *text)
{
    size_t n = 0;
    for (const char *p = text ? text : ""; *p && n + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            out[n++] = '\\';
            out[n++] = *p;
        } else if (*p == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else
            out[n++] = *p;
    }
    if (size)
        out[n < size ? n : size - 1] = '\0';
    return out;
}

static void s_labels(FILE *out, const char *labels, const char *extra)
{
    bool any = *labels || extra;
    if (!any)
        return;
    fprintf(out, "{%s%s%s}", labels, *labels && extra ? "," : "", extra ? extra : "");
}

char *proto_metrics_render(proto_metrics_t *self)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    assert(out);
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    for (proto_metric_t *metric = self->head; metric; metric = metric->next) {
        //  HELP and TYPE once per family: at its first series.
        bool first = true;
        for (proto_metric_t *other = self->head; other != metric; other = other->next)
            if (strcmp(other->name, metric->name) == 0)
                first = false;
        if (first)
            fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", metric->name, metric->help, metric->name,
                    type_names[metric->type]);
        if (metric->type != S_HISTOGRAM) {
            fprintf(out, "%s", metric->name);
            s_labels(out, metric->labels, NULL);
            fprintf(out, " %.17g\n", metric->value);
            continue;
        }
        uint64_t cumulative = 0;
        for (size_t i = 0; i < S_BUCKETS; i++) {
            cumulative += metric->buckets[i];
            char le[32];
            snprintf(le, sizeof le, "le=\"%g\"", s_buckets[i]);
            fprintf(out, "%s_bucket", metric->name);
            s_labels(out, metric->labels, le);
            fprintf(out, " %llu\n", (unsigned long long)cumulative);
        }
        fprintf(out, "%s_bucket", metric->name);
        s_labels(out, metric->labels, "le=\"+Inf\"");
        fprintf(out, " %llu\n%s_sum", (unsigned long long)metric->count, metric->name);
        s_labels(out, metric->labels, NULL);
        fprintf(out, " %.17g\n%s_count", metric->value, metric->name);
        s_labels(out, metric->labels, NULL);
        fprintf(out, " %llu\n", (unsigned long long)metric->count);
    }
    fclose(out);
    return text;
}

void proto_metrics_test(bool verbose)
{
    if (verbose)
        printf(" * proto_metrics: ");
    proto_metrics_t *metrics = proto_metrics_new();
    proto_metric_t *ok =
        proto_metrics_counter(metrics, "tg_requests_total", "Requests.", "status=\"200\"");
    proto_metric_t *bad =
        proto_metrics_counter(metrics, "tg_requests_total", "Requests.", "status=\"500\"");
    PROTO_CHECK(ok != bad);
    PROTO_CHECK(proto_metrics_counter(metrics, "tg_requests_total", NULL, "status=\"200\"") == ok);
    proto_metric_add(ok, 2);
    proto_metric_add(bad, 1);
    proto_metric_set(proto_metrics_gauge(metrics, "tg_up", "Up.", NULL), 1);
    proto_metric_t *latency =
        proto_metrics_histogram(metrics, "tg_latency_seconds", "Latency.", NULL);
    proto_metric_observe(latency, 0.003);
    proto_metric_observe(latency, 100);
    char *text = proto_metrics_render(metrics);
    PROTO_CHECK(strstr(text, "# TYPE tg_requests_total counter\n"));
    PROTO_CHECK(strstr(text, "tg_requests_total{status=\"200\"} 2\n"));
    PROTO_CHECK(strstr(text, "tg_requests_total{status=\"500\"} 1\n"));
    //  HELP appears once per family.
    const char *help = strstr(text, "# HELP tg_requests_total");
    PROTO_CHECK(help && !strstr(help + 1, "# HELP tg_requests_total"));
    PROTO_CHECK(strstr(text, "tg_up 1\n"));
    PROTO_CHECK(strstr(text, "tg_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
    PROTO_CHECK(strstr(text, "tg_latency_seconds_bucket{le=\"0.005\"} 1\n"));
    PROTO_CHECK(strstr(text, "tg_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
    PROTO_CHECK(strstr(text, "tg_latency_seconds_count 2\n"));
    free(text);
    proto_metrics_zero(metrics, "tg_requests_total");
    PROTO_CHECK(proto_metric_value(ok) == 0 && proto_metric_value(bad) == 0);
    char label[16];
    PROTO_CHECK(strcmp(proto_metrics_label(label, sizeof label, "a\"b\\c\nd"), "a\\\"b\\\\c\\nd") ==
                0);
    PROTO_CHECK(strlen(proto_metrics_label(label, 6, "abcdefgh")) <= 5);
    //  Past the index's first size: every series is found again, and renders
    //  in creation order.
    proto_metrics_t *many = proto_metrics_new();
    proto_metric_t *made[1000];
    for (int i = 0; i < 1000; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "n=\"%d\"", i);
        made[i] = proto_metrics_counter(many, i % 2 ? "a_total" : "b_total", "x", labels);
    }
    for (int i = 0; i < 1000; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "n=\"%d\"", i);
        PROTO_CHECK(proto_metrics_counter(many, i % 2 ? "a_total" : "b_total", "x", labels) ==
                    made[i]);
    }
    char *many_text = proto_metrics_render(many);
    char *first = strstr(many_text, "b_total{n=\"0\"}");
    char *second = strstr(many_text, "b_total{n=\"2\"}");
    PROTO_CHECK(first && second && first < second);
    free(many_text);
    proto_metrics_destroy(&many);

    proto_metrics_destroy(&metrics);
    PROTO_CHECK(metrics == NULL);
    if (verbose)
        printf("OK\n");
}
