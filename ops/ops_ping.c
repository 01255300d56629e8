#include "ops_ping.h"
#include "proto_log.h"
#include "proto_loop.h"
#include "proto_msg.h"
#include "proto_socket.h"

#include <assert.h>
#include <czmq.h>
#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_PROGRAMS 32

int ops_ping_overrides(proto_config_t *config, char *error, size_t error_size)
{
    //  The programs let the environment override their file; so do we.
    const char *overrides[][2] = {{"TOLLGATE_SECURITY", "security"},
                                  {"TOLLGATE_CURVE_DIR", "curve.dir"}};
    for (size_t i = 0; i < 2; i++) {
        const char *value = getenv(overrides[i][0]);
        if (value &&
            proto_config_set(config, overrides[i][1], value, "env", error, error_size) != 0)
            return -1;
    }
    return 0;
}

int ops_ping_security(proto_config_t *config, char *error, size_t error_size)
{
    if (ops_ping_overrides(config, error, error_size) != 0)
        return -1;
    if (proto_socket_init(config, "tollgate", error, error_size) == 0)
        return 0;
    //  Inside one program's container only that program's certificate is
    //  at hand; it is one of the cluster's, so the servers admit it too.
    char secret[PATH_MAX];
    snprintf(secret, sizeof secret, "%s/secret", proto_config_str(config, "curve.dir"));
    DIR *folder =
        strcmp(proto_config_str(config, "security"), "curve") == 0 ? opendir(secret) : NULL;
    int rc = -1;
    struct dirent *entry;
    while (folder && rc != 0 && (entry = readdir(folder))) {
        size_t length = strlen(entry->d_name);
        if (entry->d_name[0] == '.' || length <= 5 || strcmp(entry->d_name + length - 5, ".cert"))
            continue;
        char program[64], ignored[512];
        snprintf(program, sizeof program, "%.*s", (int)(length - 5), entry->d_name);
        rc = proto_socket_init(config, program, ignored, sizeof ignored);
    }
    if (folder)
        closedir(folder);
    return rc;
}

int ops_ping_programs(proto_config_t *config, const char *const names[], int count, int timeout_ms,
                      ops_ping_result_t results[])
{
    assert(count <= S_MAX_PROGRAMS);
    char error[1024];
    if (ops_ping_security(config, error, sizeof error) != 0) {
        log_error(NULL, "%s", error);
        for (int i = 0; i < count; i++)
            results[i] = (ops_ping_result_t){0};
        return 0;
    }
    zsock_t *sockets[S_MAX_PROGRAMS] = {NULL};
    zmq_pollitem_t items[S_MAX_PROGRAMS];
    int waiting = 0;
    for (int i = 0; i < count; i++) {
        results[i] = (ops_ping_result_t){0};
        char key[96];
        snprintf(key, sizeof key, "%s.control_bind", names[i]);
        sockets[i] = proto_socket_new(ZMQ_DEALER);
        assert(sockets[i]);
        //  A program that never answers must not keep us alive at exit.
        zsock_set_linger(sockets[i], 0);
        if (!proto_config_known(key) ||
            proto_socket_connect(sockets[i], names[i], proto_config_str(config, key)) != 0) {
            zsock_destroy(&sockets[i]);
            continue;
        }
        proto_msg_t *ping = proto_msg_new(PROTO_MSG_PING);
        proto_msg_send(&ping, sockets[i]);
        waiting++;
    }
    int answered = 0;
    uint64_t deadline = proto_loop_now_ms() + (uint64_t)timeout_ms;
    while (waiting > 0) {
        uint64_t now = proto_loop_now_ms();
        if (now >= deadline)
            break;
        int used = 0;
        int index[S_MAX_PROGRAMS];
        for (int i = 0; i < count; i++)
            if (sockets[i] && !results[i].answered) {
                items[used] = (zmq_pollitem_t){zsock_resolve(sockets[i]), 0, ZMQ_POLLIN, 0};
                index[used++] = i;
            }
        int ready = zmq_poll(items, used, (long)(deadline - now));
        if (ready < 0)
            break; //  interrupted: report what we have
        for (int j = 0; j < used; j++) {
            if (!(items[j].revents & ZMQ_POLLIN))
                continue;
            int i = index[j];
            proto_msg_t *reply = NULL;
            if (proto_msg_recv(&reply, sockets[i]) != 0)
                continue;
            if (proto_msg_type(reply) == PROTO_MSG_PONG) {
                results[i].answered = true;
                if (proto_msg_has(reply, PROTO_FIELD_meta))
                    snprintf(results[i].meta, sizeof results[i].meta, "%s", proto_msg_meta(reply));
                answered++;
                waiting--;
            }
            proto_msg_destroy(&reply);
        }
    }
    for (int i = 0; i < count; i++)
        zsock_destroy(&sockets[i]);
    proto_socket_shutdown();
    return answered;
}
