//  tollgate-billing: admission and settlement from memory (see billing.h).
#include "billing.h"

static void *s_start(proto_service_t *service)
{
    return billing_new(service);
}

static void s_drain(void *state)
{
    billing_drain(state);
}

static void s_stop(void **state_p)
{
    billing_destroy((billing_t **)state_p);
}

static char *s_status(void *state)
{
    return billing_status(state);
}

int main(int argc, char **argv)
{
    static const proto_service_def_t def = {
        .name = "billing", .start = s_start, .drain = s_drain, .stop = s_stop, .status = s_status};
    return proto_service_main(argc, argv, &def);
}
