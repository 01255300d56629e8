//  tollgate-health: folds attempt outcomes into provider health.
#include "health_server.h"

int main(int argc, char **argv)
{
    return proto_service_main(argc, argv, &health_server_def);
}
