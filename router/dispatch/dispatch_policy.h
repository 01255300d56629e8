/*  dispatch_policy: what to do after an upstream attempt, and what to tell
    the client when every candidate failed.

    DESIGN: "a retryable failure (connect error, timeout, 429, 5xx, and any
    failure before the first byte of a stream) moves to the next candidate
    with no round trip. After the first byte has gone to the client, a
    failure ends the stream with a protocol-correct error event."
    A client error the upstream reports (400, 413, 422, ...) would be the
    same anywhere, so it goes back to the client at once. 401, 403 and 404
    are about our provider key or model name, not the client: they fail over.
    Pure functions, tested in the selftest.
*/
#ifndef DISPATCH_POLICY_H_INCLUDED
#define DISPATCH_POLICY_H_INCLUDED

#include "proto_catalog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  How an attempt ended, apart from its HTTP status.
typedef enum {
    DISPATCH_FAIL_NONE = 0,  //  the transfer completed: judge by status
    DISPATCH_FAIL_CONNECT,   //  no connection: refused, DNS, TLS
    DISPATCH_FAIL_TIMEOUT,   //  connect, first byte, idle gap, total or deadline
    DISPATCH_FAIL_TRANSPORT, //  the connection broke during the answer
    DISPATCH_FAIL_PROTOCOL,  //  unreadable answer, cut stream, error inside the stream
    DISPATCH_FAIL_TOO_LARGE, //  answer over the buffer limit
} dispatch_fail_t;

//  What comes next.
typedef enum {
    DISPATCH_NEXT_SUCCESS,  //  answer the client with this attempt
    DISPATCH_NEXT_FAILOVER, //  try the next candidate (or give up if none)
    DISPATCH_NEXT_RELAY,    //  give the client the upstream's error now
    DISPATCH_NEXT_BROKEN,   //  bytes went out already: end with an error event
} dispatch_next_t;

//  Failed attempts of one request, for the final answer.
typedef struct {
    int failed;              //  attempts that failed over
    int rate_limited;        //  of them, answered 429
    dispatch_fail_t last;    //  how the last one failed
    int last_status;         //  its HTTP status, 0 when none
    uint64_t retry_after_ms; //  smallest Retry-After among the 429s, 0 = none
} dispatch_failures_t;

//  Decides after an attempt. `relayed` is true when bytes of this attempt
//  already went to the client.
dispatch_next_t dispatch_policy_next(dispatch_fail_t fail, int status, bool relayed);

//  The provider's word over the default (failover_statuses, return_statuses
//  of migration 0012): an HTTP answer with a status it lists fails over, or
//  is returned to the client as it is. Success, transport failures and
//  answers already relayed are not its to change; provider may be NULL.
dispatch_next_t dispatch_policy_provider(dispatch_next_t next, const proto_provider_t *provider,
                                         dispatch_fail_t fail, int status);

//  The status to judge an upstream answer by: Gemini refuses a bad or
//  expired API key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), which
//  is our key's fault, not the request's, so it counts as 401 (fail over,
//  and the router's key breaker sees it). Any other answer keeps its status.
int dispatch_policy_key_status(int upstream_protocol, int status, const char *body, size_t size);

//  Records a failed attempt.
void dispatch_policy_record(dispatch_failures_t *failures, dispatch_fail_t fail, int status,
                            uint64_t retry_after_ms);

//  The status, error code and message for the client when no candidate
//  answered. Strings are static.
int dispatch_policy_final(const dispatch_failures_t *failures, const char **code,
                          const char **message);

//  The status an OUTCOME reports for an attempt: the HTTP status, or for a
//  transport failure 502 (504 for a timeout).
int dispatch_policy_outcome_status(dispatch_fail_t fail, int status);

//  Short name of a failure for error codes and logs ("timeout"). Static.
const char *dispatch_policy_fail_name(dispatch_fail_t fail);

//  Self test.
void dispatch_policy_test(bool verbose);

#endif
