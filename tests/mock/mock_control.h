/*  mock_control - the mock's control endpoints and the counters they report

    GET /mock/stats, POST /mock/reset, GET|POST /mock/faults, GET /mock/requests
    (mock_upstream.h describes them). The counters live in struct _mock_upstream_t, guarded
    by its mutex.
*/

#ifndef MOCK_CONTROL_H_INCLUDED
#define MOCK_CONTROL_H_INCLUDED

#include "mock_req.h"

//  Fills req's answer for a /mock/* route; the caller queues it.
void mock_control_answer(mock_req_t *req);

//  Adds one to map[key]. The caller holds the daemon's mutex.
void mock_control_count(json_t *map, const char *key);

//  Counts req once in open_streams (a stream or a held request); takes the mutex.
void mock_control_stream_opened(mock_upstream_t *self, mock_req_t *req);

//  Clears every counter, the last request and the runtime faults. The caller holds the
//  mutex (or owns self alone).
void mock_control_reset(mock_upstream_t *self);

#endif
