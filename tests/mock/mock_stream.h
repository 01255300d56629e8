/*  mock_stream - the mock's answers as each API's stream of events

    The plan is a list of event kinds computed once; each event is rendered only when MHD
    asks for more body, so a long stream costs a few bytes per chunk until it is sent. Faults
    act here: delay-chunks parks the connection between two events, cut:N ends after N
    events, malformed breaks one event's JSON, no-terminator drops the final event(s).
*/

#ifndef MOCK_STREAM_H_INCLUDED
#define MOCK_STREAM_H_INCLUDED

#include "mock_req.h"

#include <sys/types.h>

//  Plans the event list of req's API for its pieces. Returns 0, or -1 when out of memory.
int mock_stream_plan(mock_req_t *req);

//  MHD content reader for a planned stream (cls is the mock_req_t).
ssize_t mock_stream_reader(void *cls, uint64_t pos, char *buf, size_t max);

//  MHD content reader for a non-stream answer cut after half its body (cut:N on a body).
ssize_t mock_stream_cut_reader(void *cls, uint64_t pos, char *buf, size_t max);

#endif
