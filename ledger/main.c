//  tollgate-ledger: batched, idempotent writer of usage and money (see ledger.h).
#include "ledger.h"

static void *s_start(proto_service_t *service)
{
    return ledger_new(service);
}

static void s_drain(void *state)
{
    ledger_drain(state);
}

static void s_stop(void **state_p)
{
    ledger_destroy((ledger_t **)state_p);
}

static char *s_status(void *state)
{
    return ledger_status(state);
}

int main(int argc, char **argv)
{
    static const proto_service_def_t def = {
        .name = "ledger", .start = s_start, .drain = s_drain, .stop = s_stop, .status = s_status};
    return proto_service_main(argc, argv, &def);
}
