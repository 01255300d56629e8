//  Runs the health selftests.
#include "health_state.h"

int main(void)
{
    health_state_test(true);
    return 0;
}
