/*  ingress_fixture: an ingress server under test, with fake peers.

    For the selftests of the server's parts (ingress_http, ingress_admit,
    ingress_relay, ingress_server): the server in this process with an
    empty catalog and the key "tg-test" (id 7, account 3); billing and
    dispatch are ROUTER sockets in the same loop, answering as the fields
    below say; clients are plain sockets in the same loop too, so every
    step is driven by messages, never sleeps. Test code only: nothing on
    the request path calls it.
*/
#ifndef INGRESS_FIXTURE_H_INCLUDED
#define INGRESS_FIXTURE_H_INCLUDED

#include "ingress_server.h"
#include "proto_catalog.h"
#include "proto_config.h"
#include "proto_loop.h"
#include "proto_metrics.h"

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INGRESS_FIXTURE_CLIENTS 220

typedef struct _ingress_fixture_t ingress_fixture_t;

typedef struct {
    ingress_fixture_t *test; //  owner
    int fd;                  //  socket, -1 once closed
    char data[16384];        //  what came back
    size_t size;             //  bytes in data
    bool ended;              //  the server closed the connection
} ingress_fixture_client_t;

//  What the fake dispatch does with a DISPATCH when dispatch_status is 200.
typedef enum {
    INGRESS_FIXTURE_DONE_WHOLE,  //  one DONE with a whole JSON answer
    INGRESS_FIXTURE_STREAM_DONE, //  two CHUNKs, then DONE
    INGRESS_FIXTURE_STREAM_HOLD, //  one CHUNK, then nothing
    INGRESS_FIXTURE_HOLD,        //  nothing at all
} ingress_fixture_mode_t;

struct _ingress_fixture_t {
    proto_loop_t *loop;                       //  the loop
    ingress_server_t *server;                 //  under test
    int port;                                 //  client API port
    zsock_t *billing;                         //  fake billing (ROUTER)
    zsock_t *dispatch;                        //  fake dispatch (ROUTER)
    int admit_status;                         //  what billing answers
    bool billing_silent;                      //  billing answers nothing
    int dispatch_status;                      //  what dispatch answers, 200 = normally
    const char *dispatch_code;                //  its error code when not 200
    ingress_fixture_mode_t mode;              //  what dispatch does
    int admits, dispatches, cancels, settles; //  messages seen
    char dispatch_body[512];                  //  last DISPATCH body
    bool dispatch_ok;                         //  last DISPATCH carried what it should
    char dispatch_model[64];                  //  last DISPATCH's model
    char dispatch_meta[64];                   //  last DISPATCH's meta, "" when none
    bool dispatch_stream;                     //  last DISPATCH's stream flag
    int dispatch_protocol;                    //  last DISPATCH's client protocol
    uint64_t dispatch_link[2];                //  last DISPATCH's link and link_sequence
    uint64_t dispatch_attempt;                //  last DISPATCH's attempt
    uint64_t dones_numbered;                  //  whole DONEs sent, numbered on link 7
    ingress_fixture_client_t clients[INGRESS_FIXTURE_CLIENTS]; //  clients in use
    int client_count;                                          //  how many
    bool (*until)(ingress_fixture_t *);                        //  the loop stops once this holds
    bool drained;                                              //  drain callback ran
    proto_config_t *config;                                    //  the server's configuration
    proto_metrics_t *metrics;                                  //  its metrics registry
    proto_api_key_t key;                                       //  what "tg-test" authenticates as
};

//  A chat completion body for model "m".
extern const char ingress_fixture_chat_body[];

//  Starts the server and its fake peers, with ingress.internal_timeout_ms
//  as given (short: a silent billing or a held request is answered soon).
//  Caller owns return value.
ingress_fixture_t *ingress_fixture_new(uint64_t internal_timeout_ms);

//  The same, with the fake dispatch on a TCP port of 127.0.0.1 instead of
//  inproc:// when dispatch_over_tcp: a connection ZeroMQ makes again after
//  the socket is bound again, as between processes.
//  Caller owns return value.
ingress_fixture_t *ingress_fixture_new_with(uint64_t internal_timeout_ms, bool dispatch_over_tcp);

//  Stops and frees it all; nulls the pointer.
void ingress_fixture_destroy(ingress_fixture_t **self_p);

//  A client sends request (whole, as text) on a new connection.
ingress_fixture_client_t *ingress_fixture_send(ingress_fixture_t *test, const char *request);

//  One client, one request, run until the server closes the connection
//  (after ingress_fixture_reset).
ingress_fixture_client_t *ingress_fixture_request(ingress_fixture_t *test, const char *request);

//  Closes every client and zeroes the message counts.
void ingress_fixture_reset(ingress_fixture_t *test);

//  Runs the loop until `until` holds (fails the test after 10 s).
void ingress_fixture_run(ingress_fixture_t *test, bool (*until)(ingress_fixture_t *));

//  Runs the loop for ms with nothing to wait for.
void ingress_fixture_idle(ingress_fixture_t *test, uint64_t ms);

//  Conditions for ingress_fixture_run.
bool ingress_fixture_all_ended(ingress_fixture_t *test);
bool ingress_fixture_all_streaming(ingress_fixture_t *test);
bool ingress_fixture_all_cancelled(ingress_fixture_t *test);
//  One SETTLE came and billing's COMMIT reached the server.
bool ingress_fixture_settled(ingress_fixture_t *test);

//  A POST /v1/chat/completions with key tg-test, written into out.
char *ingress_fixture_chat(const char *extra_headers, const char *body, char *out, size_t size);

//  CPU time this process has used, in seconds.
double ingress_fixture_cpu_seconds(void);

//  The fake dispatch's socket handler (arg: the fixture), for a test that
//  binds its socket again.
void ingress_fixture_dispatch_ready(proto_loop_t *loop, zsock_t *socket, void *arg);

//  Drain callback: sets test->drained (arg: the fixture).
void ingress_fixture_drained(void *arg);

#endif
