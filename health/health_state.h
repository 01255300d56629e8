/*  health_state: folds attempt outcomes into health per (provider, key,
    upstream model): success rate over a sliding window of recent attempts,
    and EWMA latency and time to first token. Pure data, no sockets.
*/
#ifndef HEALTH_STATE_H_INCLUDED
#define HEALTH_STATE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    HEALTH_UNKNOWN = 0,  //  nothing heard yet
    HEALTH_UP = 1,       //  success rate at or above 90%
    HEALTH_DEGRADED = 2, //  between 50% and 90%
    HEALTH_DOWN = 3,     //  below 50%
} health_level_t;

typedef struct {
    uint64_t provider_id;     //  providers.id
    uint64_t provider_key_id; //  provider_keys.id
    char upstream_model[128]; //  model at the provider
    health_level_t level;     //  derived from success_ppm
    uint32_t success_ppm;     //  successes per million over the window
    uint64_t latency_us;      //  EWMA of attempt latency
    uint64_t ttfb_us;         //  EWMA of time to first byte
    uint64_t attempts;        //  attempts ever seen
    int last_status;          //  status of the latest attempt (0 = no answer)
    char last_error[64];      //  its error code, "" when none
} health_entry_t;

typedef struct _health_state_t health_state_t;

//  Creates an empty state. Caller owns return value.
health_state_t *health_state_new(void);

//  Destroys the state; nulls the pointer.
void health_state_destroy(health_state_t **self_p);

//  Records one attempt; `ok` is a success (2xx); status and error (may be
//  NULL) describe it. Returns the updated entry (borrowed until the next call).
const health_entry_t *health_state_record(health_state_t *self, uint64_t provider_id,
                                          uint64_t provider_key_id, const char *upstream_model,
                                          bool ok, uint64_t latency_us, uint64_t ttfb_us,
                                          int status, const char *error);

//  Name of a level ("up"). Static string.
const char *health_level_name(health_level_t level);

//  Number of entries, and entry by index (borrowed).
size_t health_state_count(health_state_t *self);
const health_entry_t *health_state_at(health_state_t *self, size_t index);

//  Self test.
void health_state_test(bool verbose);

#endif
