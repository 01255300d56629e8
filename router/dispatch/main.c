//  tollgate-dispatch: executes route decisions against the upstream providers.
#include "dispatch_server.h"
#include "proto_service.h"

#include <curl/curl.h>

#ifdef TOLLGATE_JEMALLOC_CONF
//  jemalloc's options, read at its first allocation (CMakeLists.txt,
//  tollgate_data_plane_malloc); MALLOC_CONF in the environment still adds to them.
const char *malloc_conf = TOLLGATE_JEMALLOC_CONF;
#endif

static void *s_start(proto_service_t *service)
{
    return dispatch_server_new(service);
}

static void s_drain(void *state)
{
    dispatch_server_drain(state);
}

static void s_stop(void **state_p)
{
    dispatch_server_destroy((dispatch_server_t **)state_p);
}

static char *s_status(void *state)
{
    return dispatch_server_status(state);
}

int main(int argc, char **argv)
{
    //  Once, before any thread exists (libcurl's rule; CZMQ's zhttp_client
    //  gets this wrong by calling it inside its actor thread).
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    static const proto_service_def_t def = {
        .name = "dispatch",
        .start = s_start,
        .drain = s_drain,
        .stop = s_stop,
        .status = s_status,
    };
    int rc = proto_service_main(argc, argv, &def);
    curl_global_cleanup();
    return rc;
}
