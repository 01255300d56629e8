//  tollgate-ingress: the HTTP front door. See ingress_server.h.
#include "ingress_server.h"
#include "proto_service.h"

int main(int argc, char **argv)
{
    static const proto_service_def_t def = {
        .name = "ingress",
        .start = ingress_server_service_start,
        .drain = ingress_server_service_drain,
        .stop = ingress_server_service_stop,
        .status = ingress_server_service_status,
    };
    return proto_service_main(argc, argv, &def);
}
