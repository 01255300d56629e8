/*  curve_rtt: what ZeroMQ CURVE costs per message. A DEALER sends N
    messages of SIZE bytes to a ROUTER over TCP on 127.0.0.1 and waits for
    each echo (one round trip = two messages), once with plain sockets and
    once through proto_socket with CURVE; prints microseconds per round trip
    and the process CPU per message for both.

        curve_rtt [N=20000] [SIZE=1024]
*/
#include "proto_socket.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double s_cpu_us(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec * 1e6 + usage.ru_utime.tv_usec + usage.ru_stime.tv_sec * 1e6 +
           usage.ru_stime.tv_usec;
}

static void s_echo(zsock_t *pipe, void *args)
{
    zsock_t *router = args;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which != router)
            break;
        zmsg_t *msg = zmsg_recv(router);
        zmsg_send(&msg, router);
    }
    zpoller_destroy(&poller);
}

static void s_run(const char *label, bool curve, const char *dir, int count, size_t size)
{
    char error[512];
    if (proto_socket_init_with(curve ? "curve" : "none", dir, "billing", -1, error, sizeof error) !=
        0) {
        fprintf(stderr, "%s\n", error);
        exit(1);
    }
    zsock_t *router = proto_socket_new(ZMQ_ROUTER);
    int port = proto_socket_bind(router, "tcp://127.0.0.1:*");
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    zactor_t *echo = zactor_new(s_echo, router);
    zsock_t *dealer = proto_socket_client(ZMQ_DEALER, "billing", endpoint);
    char *payload = calloc(1, size);
    for (int i = 0; i < 100; i++) { //  warm up: handshake done, buffers sized
        zframe_t *frame = zframe_new(payload, size);
        zframe_send(&frame, dealer, 0);
        frame = zframe_recv(dealer);
        zframe_destroy(&frame);
    }
    double cpu = s_cpu_us();
    int64_t start = zclock_usecs();
    for (int i = 0; i < count; i++) {
        zframe_t *frame = zframe_new(payload, size);
        zframe_send(&frame, dealer, 0);
        frame = zframe_recv(dealer);
        zframe_destroy(&frame);
    }
    double wall = (double)(zclock_usecs() - start);
    cpu = s_cpu_us() - cpu;
    printf("%-6s %6zu B: %7.1f us per round trip, %6.1f us CPU per message (both ends)\n", label,
           size, wall / count, cpu / (2.0 * count));
    free(payload);
    zsock_destroy(&dealer);
    zactor_destroy(&echo);
    zsock_destroy(&router);
    proto_socket_shutdown();
}

int main(int argc, char **argv)
{
    int count = argc > 1 ? atoi(argv[1]) : 20000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 1024;
    char dir[] = "/tmp/curve_rtt.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    const char *programs[] = {"billing"};
    char error[512];
    if (proto_socket_make_certs(dir, programs, 1, false, error, sizeof error) < 0) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    zsys_init();
    s_run("plain", false, dir, count, size);
    s_run("curve", true, dir, count, size);
    char command[128];
    snprintf(command, sizeof command, "rm -rf %s", dir);
    return system(command) == 0 ? 0 : 1;
}
