/*  mock_fault - the mock upstream's fault language (x-mock-fault, --fault, POST /mock/faults)

    A SPEC is a comma-separated list of: 401 403 404 429[:RETRY_AFTER] 500 502 503 (any
    4xx/5xx), delay-headers:MS, delay-chunks:MS, cut:N, hang, malformed, no-terminator, flap:N,
    gather:N, cached:N, cache-write-5m:N, cache-write-1h:N (mock_upstream.h says what each does to
   an answer).
*/

#ifndef MOCK_FAULT_H_INCLUDED
#define MOCK_FAULT_H_INCLUDED

#include <stdbool.h>

#define MOCK_MAX_CHUNKS 100000 //  Cap on x-mock-chunks / mock-N, to bound memory

typedef struct {
    int status;           //  HTTP error status to answer with, 0 = none
    int retry_after;      //  Retry-After seconds for 429
    int delay_headers_ms; //  Wait this long before sending the response headers
    int delay_chunks_ms;  //  Wait this long between two stream events
    int cut_after;        //  Stream: close after this many events; body: after half; -1 = off
    int flap;             //  Every Nth request for the model fails with 500; 0 = off
    int gather;           //  Stream: after the first event, wait until this many wait; 0 = off
    bool hang;            //  Never answer; hold the connection until the client leaves
    bool malformed;       //  Invalid JSON body / one malformed SSE data line
    bool no_terminator;   //  Stream ends cleanly at HTTP level but without its terminator
    int cached_tokens;    //  Report this many prompt tokens as cached (as x-mock-cached-tokens)
    int cache_write_5m;   //  Anthropic: report this many tokens written to the 5-minute cache
    int cache_write_1h;   //  Anthropic: report this many tokens written to the 1-hour cache
} mock_fault_t;

//  Parses SPEC (NULL = no fault) into fault. Returns 0, or -1 if any item is unknown; a spec
//  that does not parse leaves no partial fault behind.
int mock_fault_parse(const char *spec, mock_fault_t *fault);

//  True if the fault changes the answer in any way (counted in faults_injected).
bool mock_fault_any(const mock_fault_t *fault);

//  Parses a whole decimal integer within [low, high] into *value; false otherwise.
bool mock_parse_int(const char *text, int low, int high, int *value);

#endif
