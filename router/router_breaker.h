/*  router_breaker: circuit breakers in two layers, as a pure function of
    attempt outcomes.

    Key layer, per provider key:
        401/403                      -> DISABLED until an operator re-enables
                                        the key (router_breaker_enable_key)
        connect error, timeout, 408  -> after `threshold` in a row: OPEN for
                                        cooldown_network_ms
    Model layer, per (provider, upstream model):
        429                          -> OPEN for retry_after_ms when the
                                        upstream sent one, else cooldown_429_ms
        5xx, unreadable answer       -> after `threshold` in a row: OPEN for
                                        cooldown_5xx_ms x 2^(opens-1), capped
                                        at cooldown_5xx_max_ms
        404                          -> OPEN for cooldown_404_ms
    Any 2xx closes both layers of the pair it came from. Client errors (400,
    413, 422 ...) and cancellations say nothing about the upstream and are
    ignored.

    OPEN turns HALF_OPEN when its cooldown is over: the next decision may
    send exactly one trial there (router_breaker_check with claim = true
    takes the trial); the trial's outcome closes or re-opens it. A trial
    that never reports back is given up after trial_timeout_ms and another
    one may go.

    Every router instance hears the same OUTCOME stream, so every instance
    computes the same OPEN/CLOSED state. Trials are claimed locally: with R
    routers at most R trials go at once.

    Times are milliseconds of one clock the caller chooses (monotonic in the
    router). The module holds no sockets and is not thread-safe.
*/
#ifndef ROUTER_BREAKER_H_INCLUDED
#define ROUTER_BREAKER_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t threshold;           //  failures in a row that open (5xx, network); >= 1
    uint64_t cooldown_network_ms; //  key layer: connect errors and timeouts
    uint64_t cooldown_429_ms;     //  model layer: 429 without Retry-After
    uint64_t cooldown_5xx_ms;     //  model layer: first 5xx opening
    uint64_t cooldown_5xx_max_ms; //  model layer: cap of the doubling
    uint64_t cooldown_404_ms;     //  model layer: model not found
    uint64_t trial_timeout_ms;    //  a half-open trial unanswered this long is given up
} router_breaker_config_t;

typedef enum {
    ROUTER_BREAKER_CLOSED = 0,    //  traffic flows
    ROUTER_BREAKER_OPEN = 1,      //  cooling down: excluded
    ROUTER_BREAKER_HALF_OPEN = 2, //  cooled down: one trial may go
    ROUTER_BREAKER_DISABLED = 3,  //  key layer only: until an operator acts
} router_breaker_state_t;

//  What one outcome did to the breakers.
typedef enum {
    ROUTER_BREAKER_NONE = 0,     //  no state change
    ROUTER_BREAKER_OPENED,       //  a breaker opened (or re-opened)
    ROUTER_BREAKER_CLOSED_NOW,   //  a breaker closed
    ROUTER_BREAKER_KEY_DISABLED, //  the key layer disabled a key: persist it
} router_breaker_event_t;

//  The verdict for one candidate.
typedef struct {
    router_breaker_state_t state; //  worse of the two layers
    bool key_layer;               //  the verdict comes from the key layer
    bool trial;                   //  this decision took the half-open trial
    uint64_t until_ms;            //  when OPEN ends (0 otherwise)
    const char *reason;           //  "401", "timeout", "429", "5xx", "404", ... (static)
} router_breaker_verdict_t;

typedef struct _router_breaker_t router_breaker_t;

//  The defaults the configuration keys start from.
router_breaker_config_t router_breaker_defaults(void);

//  Creates breakers with a configuration (copied). Caller owns return value.
router_breaker_t *router_breaker_new(const router_breaker_config_t *config);

//  Destroys the breakers; nulls the pointer.
void router_breaker_destroy(router_breaker_t **self_p);

//  Folds one attempt outcome in. `status` is the OUTCOME status, `error_code`
//  its error code ("connect_error", "timeout", ... or NULL), retry_after_ms 0
//  when none. Returns what changed.
router_breaker_event_t router_breaker_record(router_breaker_t *self, uint64_t provider_id,
                                             uint64_t provider_key_id, const char *upstream_model,
                                             int status, const char *error_code,
                                             uint64_t retry_after_ms, uint64_t now_ms);

//  The state of a candidate now. With claim, a HALF_OPEN breaker hands its
//  trial to this call (verdict.trial = true) and is then OPEN to others until
//  the trial reports or times out.
router_breaker_verdict_t router_breaker_check(router_breaker_t *self, uint64_t provider_id,
                                              uint64_t provider_key_id, const char *upstream_model,
                                              uint64_t now_ms, bool claim);

//  Closes a key's disabled breaker (an operator re-enabled the key).
//  Returns true when there was one.
bool router_breaker_enable_key(router_breaker_t *self, uint64_t provider_key_id);

//  The disable of a key is in the database (committed, or the key was
//  inactive there already): any catalog loaded from now on shows it.
void router_breaker_key_persisted(router_breaker_t *self, uint64_t provider_key_id);

//  Tells the breakers whether a freshly loaded catalog has the key active.
//  A disabled key whose disable is known to be in the database (persisted,
//  or a catalog showed it inactive) but that the catalog shows active again
//  was re-enabled by an operator: its breaker closes. Returns true when it did.
bool router_breaker_sync_key(router_breaker_t *self, uint64_t provider_key_id, bool active);

//  Closes the model breaker of (provider, model). Returns true when one was open.
bool router_breaker_reset_model(router_breaker_t *self, uint64_t provider_id,
                                const char *upstream_model);

//  Disabled reason of a key ("upstream 401"), or NULL when not disabled. Borrowed.
const char *router_breaker_disabled_reason(router_breaker_t *self, uint64_t provider_key_id);

//  Every breaker that is not plainly closed, as a JSON array. `wall_now_ms`
//  converts the times to epoch milliseconds for people. Caller owns return value.
json_t *router_breaker_list(router_breaker_t *self, uint64_t now_ms, uint64_t wall_now_ms);

//  Merges a router's cluster view (router_breaker_list's JSON, from the
//  routing table) into these breakers, which hold this dispatch's own
//  outcomes: an open or disabled breaker there opens here (until the
//  later of the two ends); one the list no longer shows is closed here,
//  unless it is our own failure younger than grace_ms (the router may not
//  have heard it yet). Returns how many were closed.
size_t router_breaker_merge(router_breaker_t *self, json_t *list, uint64_t now_ms,
                            uint64_t wall_now_ms, uint64_t grace_ms);

//  Name of a state ("open"). Static string.
const char *router_breaker_state_name(router_breaker_state_t state);

//  Self test.
void router_breaker_test(bool verbose);

#endif
