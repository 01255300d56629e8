/*  tollgate-forge: sends one forged internal message to a Tollgate program
    and says what happened, for tests/security/forged.test.mjs.

    usage: tollgate-forge MODE KIND ENDPOINT [NAME=VALUE ...]
      MODE  plain      no certificate (ZeroMQ's NULL mechanism)
            stranger   CURVE with a certificate of its own, not the cluster's;
                       server=FILE names the server's public certificate (public
                       knowledge), so only ZAP stands in the way. On ipc://,
                       PLAIN as a program of the cluster (as=PROGRAM, default
                       dispatch) with the proof its own key pair makes
            cluster    CURVE as the cluster's `probe` (TOLLGATE_CURVE_DIR): the
                       control run, proving the message itself would work;
                       as=PROGRAM takes that program's certificate instead
                       (a stolen one: the handshake and the sender check pass)
      KIND  dispatch        DISPATCH (account, key, provider, provider_key,
                            model, upstream_model): waits for DONE
            settle          SETTLE (account, key, model; grant=TEXT and
                            lease=ID when given): waits for COMMIT
            entry           ENTRY (account, key, model, cost): waits for COMMIT
            breaker-reset   BREAKER_RESET (provider, upstream_model): waits
                            for BREAKERS_REPLY
            outcome         OUTCOME (provider, provider_key, upstream_model),
                            status 503, three times: no reply expected
            subscribe       a SUB socket: waits for any published message
      Common: rid=REQUEST_ID, wait_ms=N (default 5000).

    Prints one line: `handshake=refused` when the server would not complete
    the handshake, else `handshake=accepted reply=TYPE` (or reply=none),
    with ` status=N` after a DONE.
    Exit 0 whatever happened, 2 for bad usage.
*/
#include "proto_log.h"
#include "proto_msg.h"
#include "proto_socket.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_arg(int argc, char **argv, const char *name, const char *fallback)
{
    size_t length = strlen(name);
    for (int i = 4; i < argc; i++)
        if (strncmp(argv[i], name, length) == 0 && argv[i][length] == '=')
            return argv[i] + length + 1;
    return fallback;
}

static uint64_t s_num(int argc, char **argv, const char *name)
{
    return strtoull(s_arg(argc, argv, name, "0"), NULL, 10);
}

//  Waits for the handshake's outcome on the socket's monitor. True when
//  it succeeded; false when it failed or nothing happened by the deadline.
static bool s_handshake(void *monitor, int wait_ms)
{
    zmq_pollitem_t item = {monitor, 0, ZMQ_POLLIN, 0};
    int64_t deadline = zclock_mono() + wait_ms;
    while (zclock_mono() < deadline) {
        if (zmq_poll(&item, 1, (long)(deadline - zclock_mono())) <= 0)
            continue;
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, monitor, 0) < 6) {
            zmq_msg_close(&msg);
            return false;
        }
        uint16_t event;
        memcpy(&event, zmq_msg_data(&msg), sizeof event);
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        zmq_msg_recv(&msg, monitor, 0);
        zmq_msg_close(&msg);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED)
            return true;
        if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL))
            return false;
    }
    return false;
}

static proto_msg_t *s_message(const char *kind, int argc, char **argv)
{
    proto_msg_t *msg = NULL;
    char rid[80];
    snprintf(rid, sizeof rid, "%s", s_arg(argc, argv, "rid", "forged-0000000000000001"));
    proto_candidate_t candidate = {.provider_id = s_num(argc, argv, "provider"),
                                   .provider_key_id = s_num(argc, argv, "provider_key"),
                                   .upstream_protocol = PROTO_PROTOCOL_OPENAI};
    snprintf(candidate.upstream_model, sizeof candidate.upstream_model, "%s",
             s_arg(argc, argv, "upstream_model", "fast"));
    if (strcmp(kind, "dispatch") == 0) {
        msg = proto_msg_new(PROTO_MSG_DISPATCH);
        proto_msg_set_client_protocol(msg, PROTO_PROTOCOL_OPENAI);
        proto_msg_set_model(msg, s_arg(argc, argv, "model", "fast"));
        proto_msg_set_candidates(msg, &candidate, 1);
        proto_msg_set_key_id(msg, s_num(argc, argv, "key"));
        proto_msg_set_account_id(msg, s_num(argc, argv, "account"));
        const char *body = "{\"model\":\"fast\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"free tokens, please\"}]}";
        proto_msg_set_body_bytes(msg, body, strlen(body));
    } else if (strcmp(kind, "settle") == 0 || strcmp(kind, "entry") == 0) {
        bool entry = strcmp(kind, "entry") == 0;
        msg = proto_msg_new(entry ? PROTO_MSG_ENTRY : PROTO_MSG_SETTLE);
        proto_msg_set_account_id(msg, s_num(argc, argv, "account"));
        proto_msg_set_key_id(msg, s_num(argc, argv, "key"));
        proto_msg_set_model(msg, s_arg(argc, argv, "model", "fast"));
        proto_msg_set_status(msg, 200);
        proto_msg_set_tokens_in(msg, 1000000);
        proto_msg_set_tokens_out(msg, 1000000);
        proto_msg_set_started_us(msg, (uint64_t)zclock_time() * 1000);
        if (entry)
            proto_msg_set_cost_micros(msg, (int64_t)s_num(argc, argv, "cost"));
        else {
            if (*s_arg(argc, argv, "grant", ""))
                proto_msg_set_grant(msg, s_arg(argc, argv, "grant", ""));
            if (s_num(argc, argv, "lease"))
                proto_msg_set_lease_id(msg, s_num(argc, argv, "lease"));
        }
    } else if (strcmp(kind, "breaker-reset") == 0) {
        msg = proto_msg_new(PROTO_MSG_BREAKER_RESET);
        proto_msg_set_provider_id(msg, candidate.provider_id);
        proto_msg_set_upstream_model(msg, candidate.upstream_model);
    } else if (strcmp(kind, "outcome") == 0) {
        msg = proto_msg_new(PROTO_MSG_OUTCOME);
        proto_msg_set_provider_id(msg, candidate.provider_id);
        proto_msg_set_provider_key_id(msg, candidate.provider_key_id);
        proto_msg_set_upstream_model(msg, candidate.upstream_model);
        proto_msg_set_status(msg, 503);
    }
    if (msg)
        proto_msg_set_request_id(msg, rid);
    return msg;
}

//  What answers a message of this kind, or 0 when none is expected.
static int s_expected(const char *kind)
{
    if (strcmp(kind, "dispatch") == 0)
        return PROTO_MSG_DONE;
    if (strcmp(kind, "settle") == 0 || strcmp(kind, "entry") == 0)
        return PROTO_MSG_COMMIT;
    if (strcmp(kind, "breaker-reset") == 0)
        return PROTO_MSG_BREAKERS_REPLY;
    return 0;
}

//  The program a message of this kind goes to (whose public key a cluster
//  member names).
static const char *s_program(const char *kind)
{
    if (strcmp(kind, "settle") == 0)
        return "billing";
    if (strcmp(kind, "entry") == 0)
        return "ledger";
    if (strcmp(kind, "breaker-reset") == 0 || strcmp(kind, "outcome") == 0)
        return "router";
    return "dispatch";
}

static zsock_t *s_socket(const char *mode, const char *kind, const char *endpoint, int argc,
                         char **argv)
{
    int type = strcmp(kind, "subscribe") == 0 ? ZMQ_SUB : ZMQ_DEALER;
    zsock_t *socket = NULL;
    if (strcmp(mode, "cluster") == 0) {
        char error[512];
        if (proto_socket_init_env(s_arg(argc, argv, "as", "probe"), error, sizeof error) != 0) {
            fprintf(stderr, "tollgate-forge: %s\n", error);
            return NULL;
        }
        socket = proto_socket_new(type);
    } else
        socket = zsock_new(type);
    if (type == ZMQ_SUB)
        zsock_set_subscribe(socket, "");
    if (strcmp(mode, "stranger") == 0) {
        zcert_t *server = zcert_load(s_arg(argc, argv, "server", ""));
        if (!server) {
            fprintf(stderr, "tollgate-forge: stranger needs server=PUBLIC_CERT_FILE\n");
            zsock_destroy(&socket);
            return NULL;
        }
        zcert_t *own = zcert_new();
        if (strncmp(endpoint, "ipc://", 6) == 0) {
            const char *claim = s_arg(argc, argv, "as", "dispatch");
            char proof[PROTO_SOCKET_PROOF_SIZE];
            if (proto_socket_ipc_proof(zcert_secret_key(own), zcert_public_key(server), claim,
                                       proof) == 0) {
                zsock_set_plain_username(socket, claim);
                zsock_set_plain_password(socket, proof);
            }
        } else {
            zcert_apply(own, socket);
            zsock_set_curve_serverkey(socket, zcert_public_txt(server));
        }
        zcert_destroy(&own);
        zcert_destroy(&server);
    }
    return socket;
}

int main(int argc, char **argv)
{
    if (argc < 4 ||
        (strcmp(argv[1], "plain") && strcmp(argv[1], "stranger") && strcmp(argv[1], "cluster"))) {
        fprintf(stderr, "usage: tollgate-forge plain|stranger|cluster KIND ENDPOINT [N=V ...]\n");
        return 2;
    }
    const char *mode = argv[1], *kind = argv[2], *endpoint = argv[3];
    int wait_ms = atoi(s_arg(argc, argv, "wait_ms", "5000"));
    proto_log_init("forge", PROTO_LOG_ERROR);
    zsys_init();
    zsys_set_linger(0);
    proto_msg_t *msg = s_message(kind, argc, argv);
    if (!msg && strcmp(kind, "subscribe") != 0) {
        fprintf(stderr, "tollgate-forge: unknown kind '%s'\n", kind);
        return 2;
    }
    zsock_t *socket = s_socket(mode, kind, endpoint, argc, argv);
    if (!socket) {
        proto_msg_destroy(&msg);
        return 2;
    }
    zmq_socket_monitor(zsock_resolve(socket), "inproc://forge-monitor", ZMQ_EVENT_ALL);
    void *monitor = zmq_socket(zsys_init(), ZMQ_PAIR);
    zmq_connect(monitor, "inproc://forge-monitor");
    int rc = strcmp(mode, "cluster") == 0 ? proto_socket_connect(socket, s_program(kind), endpoint)
                                          : zsock_connect(socket, "%s", endpoint);
    if (rc != 0) {
        fprintf(stderr, "tollgate-forge: cannot connect to %s\n", endpoint);
        return 2;
    }
    if (!s_handshake(monitor, wait_ms)) {
        printf("handshake=refused\n");
        proto_msg_destroy(&msg);
    } else {
        int expected = s_expected(kind);
        for (int i = 0; msg && i < (strcmp(kind, "outcome") == 0 ? 3 : 1); i++) {
            proto_msg_t *copy = s_message(kind, argc, argv);
            proto_msg_send(&copy, socket);
        }
        proto_msg_destroy(&msg);
        const char *reply = "none";
        int status = 0;
        zpoller_t *poller = zpoller_new(socket, NULL);
        int64_t deadline = zclock_mono() + wait_ms;
        while ((expected || strcmp(kind, "subscribe") == 0) && zclock_mono() < deadline) {
            if (!zpoller_wait(poller, (int)(deadline - zclock_mono())))
                continue;
            proto_msg_t *answer = NULL;
            if (proto_msg_recv(&answer, socket) != 0)
                continue;
            int type = proto_msg_type(answer);
            if (type == PROTO_MSG_DONE)
                status = (int)proto_msg_status(answer);
            proto_msg_destroy(&answer);
            if (type == expected || type == PROTO_MSG_BATCH || !expected) {
                reply = proto_msg_type_name(type);
                break;
            }
        }
        zpoller_destroy(&poller);
        if (status)
            printf("handshake=accepted reply=%s status=%d\n", reply, status);
        else
            printf("handshake=accepted reply=%s\n", reply);
    }
    fflush(stdout);
    zmq_socket_monitor(zsock_resolve(socket), NULL, 0);
    zmq_close(monitor);
    zsock_destroy(&socket);
    proto_socket_shutdown();
    return 0;
}
