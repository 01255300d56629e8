//  tollgate-admin: the operator admin API and web console (see admin_server.h).
#include "admin_server.h"

static void *s_start(proto_service_t *service)
{
    return admin_server_new(service);
}

static void s_drain(void *state)
{
    admin_server_drain(state);
}

static void s_stop(void **state_p)
{
    admin_server_destroy((admin_server_t **)state_p);
}

static char *s_status(void *state)
{
    return admin_server_status(state);
}

int main(int argc, char **argv)
{
    static const proto_service_def_t def = {
        .name = "admin", .start = s_start, .drain = s_drain, .stop = s_stop, .status = s_status};
    return proto_service_main(argc, argv, &def);
}
