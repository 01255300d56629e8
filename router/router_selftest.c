//  Runs the router's selftests.
#include "router_select.h"

int main(void)
{
    router_select_test(true);
    return 0;
}
