//  Runs the health selftests: all, or the classes named on the command line.
#include "health_models.h"
#include "health_state.h"

#include <string.h>

int main(int argc, char **argv)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (argc < 2 || strcmp(argv[1], "health_state") == 0)
        health_state_test(true);
    if (argc < 2 || strcmp(argv[1], "health_models") == 0)
        health_models_test(true);
    curl_global_cleanup();
    return 0;
}
