//  tollgate-ingress: the HTTP front door. See ingress_server.h.
#include "ingress_server.h"
#include "proto_malloc.h"
#include "proto_service.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    static const proto_service_def_t def = {
        .name = "ingress",
        .start = ingress_server_service_start,
        .drain = ingress_server_service_drain,
        .stop = ingress_server_service_stop,
        .status = ingress_server_service_status,
    };
    //  Ingress frees, on its thread, the CHUNK and DONE messages libzmq's
    //  I/O thread allocated: keep that arena's pages (proto_malloc.h).
    if (!proto_malloc_keep_heap_top())
        fprintf(stderr, "tollgate-ingress: glibc refused the malloc thresholds\n");
    return proto_service_main(argc, argv, &def);
}
