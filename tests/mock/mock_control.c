/*  mock_control - the mock's control endpoints and the counters they report */

#include "mock_control.h"
#include "mock_shape.h"

#include <stdlib.h>
#include <string.h>

void mock_control_count(json_t *map, const char *key)
{
    json_t *value = json_object_get(map, key);
    if (value)
        json_integer_set(value, json_integer_value(value) + 1);
    else
        json_object_set_new(map, key, json_integer(1));
}

void mock_control_stream_opened(mock_upstream_t *self, mock_req_t *req)
{
    if (req->held)
        return;
    req->held = true;
    pthread_mutex_lock(&self->mutex);
    if (++self->open_streams > self->max_open_streams)
        self->max_open_streams = self->open_streams;
    pthread_mutex_unlock(&self->mutex);
}

void mock_control_reset(mock_upstream_t *self)
{
    json_decref(self->paths);
    json_decref(self->models_seen);
    json_decref(self->keys);
    json_decref(self->statuses);
    json_decref(self->flap_counts);
    json_decref(self->runtime_faults);
    json_decref(self->last);
    free(self->last_body);
    self->paths = json_object();
    self->models_seen = json_object();
    self->keys = json_object();
    self->statuses = json_object();
    self->flap_counts = json_object();
    self->runtime_faults = json_object();
    self->last = json_null();
    self->last_body = NULL;
    self->last_body_len = self->last_body_size = 0;
    self->requests_total = self->faults_injected = 0;
    self->client_aborts = self->streams_started = 0;
    //  open_streams describes live connections, so a reset keeps it; the peak restarts there.
    self->max_open_streams = self->open_streams;
}

void mock_control_answer(mock_req_t *req)
{
    mock_upstream_t *self = req->owner;
    req->proto = P_OPENAI;
    if (req->route == R_MOCK_STATS) {
        pthread_mutex_lock(&self->mutex);
        json_t *last = json_deep_copy(self->last);
        if (json_is_object(last)) {
            json_object_set_new(
                last, "body",
                json_stringn(self->last_body ? self->last_body : "", self->last_body_len));
            json_object_set_new(last, "body_size", json_integer((json_int_t)self->last_body_size));
            json_object_set_new(last, "body_truncated",
                                json_boolean(self->last_body_size > self->last_body_len));
            json_t *parsed =
                self->last_body ? json_loadb(self->last_body, self->last_body_len, 0, NULL) : NULL;
            json_object_set_new(last, "body_json", parsed ? parsed : json_null());
        }
        json_t *stats = json_pack(
            "{s:I, s:O, s:O, s:O, s:O, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:O, s:O}}",
            "requests_total", (json_int_t)self->requests_total, "paths", self->paths, "models",
            self->models_seen, "keys", self->keys, "statuses", self->statuses, "faults_injected",
            (json_int_t)self->faults_injected, "client_aborts", (json_int_t)self->client_aborts,
            "streams_started", (json_int_t)self->streams_started, "open_streams",
            (json_int_t)self->open_streams, "max_open_streams", (json_int_t)self->max_open_streams,
            "last", last, "faults", "static", self->static_faults, "runtime", self->runtime_faults);
        //  Dump under the lock: the maps inside are shared, not copied.
        mock_shape_json(req, 200, stats);
        pthread_mutex_unlock(&self->mutex);
        return;
    }
    if (req->route == R_MOCK_REQUESTS) {
        mock_shape_json(req, 200, json_pack("{s:o}", "requests", mock_journal_json(self->journal)));
        return;
    }
    if (req->route == R_MOCK_RESET) {
        pthread_mutex_lock(&self->mutex);
        mock_control_reset(self);
        pthread_mutex_unlock(&self->mutex);
        mock_journal_clear(self->journal);
        mock_shape_json(req, 200, json_pack("{s:b}", "ok", 1));
        return;
    }
    //  R_MOCK_FAULTS
    if (!strcmp(req->method, "POST")) {
        json_t *body = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
        const char *model = json_string_value(json_object_get(body, "model"));
        const char *spec = json_string_value(json_object_get(body, "fault"));
        mock_fault_t fault;
        if (!model || (spec && mock_fault_parse(spec, &fault)))
            mock_shape_error(req, 400,
                             "expected {\"model\":\"m\",\"fault\":\"SPEC\"} with a valid SPEC");
        else {
            pthread_mutex_lock(&self->mutex);
            if (spec && *spec)
                json_object_set_new(self->runtime_faults, model, json_string(spec));
            else
                json_object_del(self->runtime_faults, model);
            json_object_del(self->flap_counts, model);
            pthread_mutex_unlock(&self->mutex);
            mock_shape_json(req, 200, json_pack("{s:b}", "ok", 1));
        }
        json_decref(body);
        return;
    }
    pthread_mutex_lock(&self->mutex);
    mock_shape_json(
        req, 200,
        json_pack("{s:O, s:O}", "static", self->static_faults, "runtime", self->runtime_faults));
    pthread_mutex_unlock(&self->mutex);
}
