//  tollgate-health: probes provider keys, folds attempt outcomes into health.
#include "health_server.h"
#include "proto_crypto.h"

#include <curl/curl.h>

int main(int argc, char **argv)
{
    //  Both before any thread starts (ZeroMQ's I/O threads, libcurl's resolver).
    if (proto_crypto_init() != 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    int rc = proto_service_main(argc, argv, &health_server_def);
    curl_global_cleanup();
    return rc;
}
