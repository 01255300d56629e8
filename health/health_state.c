#include "health_state.h"
#include "proto_check.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_WINDOW 64 //  attempts in the success-rate window

typedef struct {
    health_entry_t entry; //  public view
    uint64_t window;      //  bit per recent attempt, 1 = success
    uint32_t filled;      //  attempts in the window so far
} s_slot_t;

struct _health_state_t {
    s_slot_t *slots; //  entries, unsorted
    size_t count;    //  used
    size_t capacity; //  allocated
};

health_state_t *health_state_new(void)
{
    health_state_t *self = calloc(1, sizeof *self);
    assert(self);
    return self;
}

void health_state_destroy(health_state_t **self_p)
{
    assert(self_p);
    if (!*self_p)
        return;
    free((*self_p)->slots);
    free(*self_p);
    *self_p = NULL;
}

static s_slot_t *s_slot(health_state_t *self, uint64_t provider_id, uint64_t key_id,
                        const char *model)
{
    for (size_t i = 0; i < self->count; i++) {
        health_entry_t *entry = &self->slots[i].entry;
        if (entry->provider_id == provider_id && entry->provider_key_id == key_id &&
            strcmp(entry->upstream_model, model) == 0)
            return &self->slots[i];
    }
    if (self->count == self->capacity) {
        self->capacity = self->capacity ? self->capacity * 2 : 16;
        self->slots = realloc(self->slots, self->capacity * sizeof *self->slots);
        assert(self->slots);
    }
    s_slot_t *slot = &self->slots[self->count++];
    memset(slot, 0, sizeof *slot);
    slot->entry.provider_id = provider_id;
    slot->entry.provider_key_id = key_id;
    snprintf(slot->entry.upstream_model, sizeof slot->entry.upstream_model, "%s", model);
    return slot;
}

//  EWMA with alpha = 1/8, in integers; the first sample seeds it.
static uint64_t s_ewma(uint64_t average, uint64_t sample, uint64_t attempts)
{
    if (attempts <= 1)
        return sample;
    return average - average / 8 + sample / 8;
}

const health_entry_t *health_state_record(health_state_t *self, uint64_t provider_id,
                                          uint64_t provider_key_id, const char *upstream_model,
                                          bool ok, uint64_t latency_us, uint64_t ttfb_us,
                                          int status, const char *error)
{
    s_slot_t *slot = s_slot(self, provider_id, provider_key_id, upstream_model);
    health_entry_t *entry = &slot->entry;
    entry->attempts++;
    slot->window = (slot->window << 1) | (ok ? 1 : 0);
    if (slot->filled < S_WINDOW)
        slot->filled++;
    uint64_t mask = slot->filled == 64 ? UINT64_MAX : (((uint64_t)1 << slot->filled) - 1);
    uint32_t successes = (uint32_t)__builtin_popcountll(slot->window & mask);
    entry->success_ppm = (uint32_t)((uint64_t)successes * 1000000 / slot->filled);
    entry->latency_us = s_ewma(entry->latency_us, latency_us, entry->attempts);
    if (ttfb_us)
        entry->ttfb_us = s_ewma(entry->ttfb_us, ttfb_us, entry->attempts);
    entry->last_status = status;
    snprintf(entry->last_error, sizeof entry->last_error, "%s", error ? error : "");
    entry->level = entry->success_ppm >= 900000   ? HEALTH_UP
                   : entry->success_ppm >= 500000 ? HEALTH_DEGRADED
                                                  : HEALTH_DOWN;
    return entry;
}

const char *health_level_name(health_level_t level)
{
    static const char *names[] = {"unknown", "up", "degraded", "down"};
    return (unsigned)level < 4 ? names[level] : "unknown";
}

size_t health_state_count(health_state_t *self)
{
    return self->count;
}

const health_entry_t *health_state_at(health_state_t *self, size_t index)
{
    return index < self->count ? &self->slots[index].entry : NULL;
}

void health_state_test(bool verbose)
{
    if (verbose)
        printf(" * health_state: ");
    health_state_t *state = health_state_new();
    const health_entry_t *entry = NULL;
    for (int i = 0; i < 10; i++)
        entry = health_state_record(state, 1, 2, "m", true, 1000, 100, 200, NULL);
    PROTO_CHECK(entry->level == HEALTH_UP && entry->success_ppm == 1000000);
    PROTO_CHECK(entry->latency_us == 1000);
    //  Failures pull the rate down through degraded to down.
    for (int i = 0; i < 10; i++)
        entry = health_state_record(state, 1, 2, "m", false, 5000, 0, 502, "timeout");
    PROTO_CHECK(entry->success_ppm == 500000 && entry->level == HEALTH_DEGRADED);
    for (int i = 0; i < 64; i++)
        entry = health_state_record(state, 1, 2, "m", false, 5000, 0, 502, "timeout");
    PROTO_CHECK(entry->success_ppm == 0 && entry->level == HEALTH_DOWN);
    PROTO_CHECK(entry->last_status == 502 && strcmp(entry->last_error, "timeout") == 0);
    PROTO_CHECK(strcmp(health_level_name(entry->level), "down") == 0);
    PROTO_CHECK(entry->latency_us > 4000);
    //  A window of 64: 64 successes make it fully healthy again.
    for (int i = 0; i < 64; i++)
        entry = health_state_record(state, 1, 2, "m", true, 1000, 100, 200, NULL);
    PROTO_CHECK(entry->success_ppm == 1000000);
    health_state_record(state, 1, 3, "m", true, 1, 1, 200, NULL);
    PROTO_CHECK(health_state_count(state) == 2);
    health_state_destroy(&state);
    PROTO_CHECK(state == NULL);
    if (verbose)
        printf("OK\n");
}
