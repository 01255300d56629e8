//  tollgate-router: answers route decisions from memory.
#include "proto_crypto.h"
#include "router_server.h"

int main(int argc, char **argv)
{
    if (proto_crypto_init() != 0)
        return 1;
    return proto_service_main(argc, argv, &router_server_def);
}
