/*  proto_metrics: counters, gauges and histograms rendered in Prometheus'
    text exposition format. One registry per process, owned by its service;
    metrics are found by name and label text, created on first use.
*/
#ifndef PROTO_METRICS_H_INCLUDED
#define PROTO_METRICS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _proto_metrics_t proto_metrics_t;
typedef struct _proto_metric_t proto_metric_t;

//  Creates a registry. Caller owns return value.
proto_metrics_t *proto_metrics_new(void);

//  Destroys the registry and its metrics; nulls the pointer.
void proto_metrics_destroy(proto_metrics_t **self_p);

//  Finds or creates a counter. `labels` is Prometheus label text without
//  braces (`model="x",status="200"`) or NULL. Returned handle is borrowed and
//  lives as long as the registry.
proto_metric_t *proto_metrics_counter(proto_metrics_t *self, const char *name, const char *help,
                                      const char *labels);

//  Finds or creates a gauge.
proto_metric_t *proto_metrics_gauge(proto_metrics_t *self, const char *name, const char *help,
                                    const char *labels);

//  Finds or creates a histogram with the default latency buckets in seconds.
proto_metric_t *proto_metrics_histogram(proto_metrics_t *self, const char *name, const char *help,
                                        const char *labels);

//  Adds to a counter or gauge.
void proto_metric_add(proto_metric_t *metric, double value);

//  Sets a gauge.
void proto_metric_set(proto_metric_t *metric, double value);

//  Records one observation in a histogram.
void proto_metric_observe(proto_metric_t *metric, double value);

//  Current value of a counter or gauge.
double proto_metric_value(const proto_metric_t *metric);

//  Sets every series of a counter or gauge family to 0 (before a collect
//  hook sets the ones that still exist: a closed breaker reads 0).
void proto_metrics_zero(proto_metrics_t *self, const char *name);

//  Writes `text` into out (capacity size) as a Prometheus label value:
//  backslash, quote and newline escaped; truncated, always terminated.
//  Returns out.
char *proto_metrics_label(char *out, size_t size, const char *text);

//  Renders every metric. Caller owns return value (free()).
char *proto_metrics_render(proto_metrics_t *self);

//  Self test.
void proto_metrics_test(bool verbose);

#endif
