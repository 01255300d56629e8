/*  ingress_request: one client request, its life and its answers.

    The record every part of the request path reads and writes, how long
    it lives, its suspension while other programs work, and the answers it
    sends the client.

    A client request's life, and who holds it
    -----------------------------------------
    Each HTTP request gets one ingress_request_t, reference-counted by up to
    three holders, and freed when the last lets go:
      - the connection: from the first access-handler call until MHD's
        completion callback (normal end, error, client abort, shutdown);
      - the pipeline: while the request id is registered in `requests`,
        i.e. while a reply from billing or dispatch may still be due for
        it (from ADMIT until DONE, CANCEL or a decision);
      - the content reader: from the creation of a streamed response until
        MHD frees that response.
    Replies are looked up by request id, never by pointer: a reply for an id
    no longer registered is dropped with a debug line (Mongrel2's rule).

    Suspend and resume
    ------------------
    libmicrohttpd only lets us queue a response from inside its access
    handler. While we wait on other programs the connection is suspended;
    when the answer is ready we keep the response in the request, resume
    the connection, and the handler (called again by MHD after a resume)
    queues it. A streamed response is read by a content reader from the request's
    buffer; when the buffer is empty and DONE has not come, the reader
    suspends the connection and returns 0 (no busy polling) and the next
    CHUNK resumes it. A suspended connection is invisible to MHD, so to
    notice a client that hangs up meanwhile we watch its socket ourselves
    (EPOLLRDHUP) for exactly as long as it is suspended.

    The record is not opaque: it is the state the parts of one server hand
    each other, read on every step of the hot path, so they use its fields
    directly rather than through calls.
*/
#ifndef INGRESS_REQUEST_H_INCLUDED
#define INGRESS_REQUEST_H_INCLUDED

#include "ingress_buffer.h"
#include "ingress_lease.h"
#include "ingress_parse.h"
#include "ingress_queue.h"
#include "ingress_route.h"
#include "ingress_server.h"
#include "proto_capture.h"
#include "proto_msg.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _ingress_request_t ingress_request_t;

typedef enum {
    INGRESS_PHASE_RECEIVING,  //  reading the request (or answering it at once)
    INGRESS_PHASE_WAITING,    //  ADMIT out; connection suspended
    INGRESS_PHASE_DISPATCHED, //  DISPATCH out; suspended until the first CHUNK or DONE
    INGRESS_PHASE_STREAMING,  //  streamed response queued; bytes flow through `out`
    INGRESS_PHASE_ANSWERED,   //  a complete response is queued or about to be
    INGRESS_PHASE_ABANDONED,  //  no client to answer; waiting to learn whether billing admitted it
    INGRESS_PHASE_QUERY,      //  BALANCE out for the key's own figures (ingress_usage); suspended
} ingress_phase_t;

struct _ingress_request_t {
    ingress_server_t *server;          //  owner
    struct MHD_Connection *connection; //  client connection; NULL once it has ended
    const ingress_route_t *route;      //  matched route, NULL for 404/405
    int protocol;                      //  client protocol of every answer
    ingress_phase_t phase;             //  where the request is
    int refs;                          //  holders: connection, pipeline, reader
    bool registered;                   //  pipeline holder: id is in server->requests
    bool in_handler;                   //  inside MHD's access handler: may queue
    bool first_call;                   //  inside the handler's first call (headers only)
    bool bare_answer;                  //  no headers of ours: the pool is nearly full (431)
    bool close_now;                    //  answer without reading the body (413)
    bool suspended;                    //  connection suspended by us
    bool reader_waiting;               //  suspended by the content reader
    bool watching;                     //  waits to hear its client hang up
    char id[PROTO_MSG_RID_MAX + 1];    //  request id
    char trace[INGRESS_TRACE_SIZE];    //  traceparent we send on
    uint64_t key_id;                   //  authenticated client key
    uint64_t account_id;               //  its account
    char *body;                        //  request body so far
    size_t body_size;                  //  bytes in body
    size_t body_capacity;              //  bytes allocated for body
    size_t body_discarded;             //  bytes dropped after going over the limit
    bool body_too_large;               //  went over ingress.max_body_bytes
    ingress_body_t parsed;             //  what the body asks for
    char *path_model;                  //  model named by the path (Gemini), NULL when none
    bool json_array;                   //  Gemini stream without alt=sse: one JSON array
    proto_msg_t *admit_reply;          //  billing's answer, once in
    ingress_lease_take_t lease;        //  what it took from a lease (lease_id 0: none)
    int64_t reserve_micros;            //  its admission estimate
    bool done_seen;                    //  DONE came: done_cost is the real cost
    int64_t done_cost;                 //  what it cost, priced from DONE's usage
    uint64_t done_tokens;              //  tokens it used, from DONE
    int abandon_status;                //  status to settle with when abandoned
    int dispatch_index;                //  dispatch socket holding it, -1 before
    uint32_t dispatch_tried;           //  bit per dispatch instance sent the DISPATCH
    uint64_t held_until_ms;            //  held for a dispatch until then, 0 = never held
    int lost_index;                    //  dispatch whose connection dropped holding it, -1
    uint64_t lost_until_ms;            //  waits for that one to come back until then
    uint64_t dispatched_ms;            //  when the DISPATCH last went out
    uint32_t dispatch_sends;           //  DISPATCHes that went out (each says which it is)
    uint64_t admit_resend_ms;          //  when ADMIT may be re-sent next, 0 = not yet
    uint64_t admit_resend_gap_ms;      //  the gap after that (doubles, capped)
    uint64_t next_sequence;            //  CHUNK sequence expected next
    struct MHD_Response *response;     //  response for the handler to queue
    unsigned response_status;          //  its status
    ingress_buffer_t *out;             //  streamed bytes not yet read by MHD
    bool upstream_done;                //  no more bytes will come (DONE, cut, cancel)
    bool client_gone;                  //  the client hung up while suspended
    int status;                        //  status sent to the client, for metrics
    uint64_t attempts;                 //  upstream attempts, from DONE
    uint64_t started_us;               //  monotonic, first handler call
    uint64_t started_wall_us;          //  wall clock, for SETTLE
    uint64_t received_us;              //  monotonic, body complete (0 = not yet)
    uint64_t first_byte_us;            //  monotonic, a stream's first byte out (0 = none)
    proto_capture_t *capture;          //  request-log headers, NULL at level base
    ingress_queue_item_t timeout;      //  place in a timeout queue (waiting, running, held)
    ingress_request_t *live_prev;      //  neighbours among live connections
    ingress_request_t *live_next;
};

//  A request for a new client connection, with the connection's hold,
//  linked among the server's live requests. Freed by the last unref.
ingress_request_t *ingress_request_new(ingress_server_t *server, struct MHD_Connection *connection);

//  Takes the request off the server's live requests: its connection ended.
void ingress_request_unlink(ingress_request_t *r);

//  Lets go of one hold; the last frees the request.
void ingress_request_unref(ingress_request_t *r);

//  The request a timeout queue's item belongs to.
ingress_request_t *ingress_request_of(ingress_queue_item_t *item);

//  Takes the pipeline's hold: the id goes into the server's requests, so
//  replies find the request. False when another request has that id.
bool ingress_request_register(ingress_request_t *r);

//  Suspends the connection and watches its socket for a hang-up
//  (ingress_server_hangup).
void ingress_request_suspend(ingress_request_t *r);

//  Gives a suspended connection back to MHD (no-op when not suspended).
void ingress_request_resume(ingress_request_t *r);

//  Stops watching the socket for a hang-up.
void ingress_request_unwatch(ingress_request_t *r);

//  Hands a response to the client: at once inside the access handler,
//  else through a resume and the handler's next call. Takes the response.
void ingress_request_answer(ingress_request_t *r, unsigned status, struct MHD_Response *response);

//  Answers a text body (freed by MHD when owned, else static).
void ingress_request_answer_text(ingress_request_t *r, unsigned status, const char *content_type,
                                 char *text, bool owned);

//  Answers an error in the shape of the request's protocol.
void ingress_request_answer_error(ingress_request_t *r, unsigned status, const char *code,
                                  const char *message);

//  Answers with the error another program decided (ADMIT_REPLY,
//  BALANCE_REPLY), with Retry-After where it says when.
void ingress_request_answer_reply_error(ingress_request_t *r, proto_msg_t *reply,
                                        const char *fallback_code, const char *fallback_message);

//  Sets the request's id, trace and deadline (timeout_ms from now) on msg.
void ingress_request_stamp(ingress_request_t *r, proto_msg_t *msg, uint64_t timeout_ms);

//  Self test.
void ingress_request_test(bool verbose);

#endif
