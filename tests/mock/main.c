/*  tollgate-mock-upstream - command line front end of mock_upstream

    Prints "port=NNNN" as its first stdout line once listening, then runs until SIGINT or
    SIGTERM. See mock_upstream.h for the request controls and fault specs.
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "mock_agent.h"
#include "mock_upstream.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void s_usage(FILE *out)
{
    fprintf(out, "usage: tollgate-mock-upstream [options]\n"
                 "  --host ADDR           address to bind (default 127.0.0.1)\n"
                 "  --port N              port to bind, 0 = any free port (default 0)\n"
                 "  --threads N           MHD worker threads (default 2)\n"
                 "  --models a,b,c        models served by the list endpoints\n"
                 "  --alias FROM=TO       serve path FROM as TO (a relay's own paths), repeatable\n"
                 "  --fault MODEL=SPEC    static fault for MODEL (\"*\" = all), repeatable\n"
                 "  --require-key SECRET  answer 401 unless the request carries SECRET\n"
                 "  --verbose             log each request on stderr\n"
                 "  --selftest            run the built-in self test and exit\n"
                 "SPEC: 401|403|404|429[:S]|500|502|503|delay-headers:MS|delay-chunks:MS|cut:N|\n"
                 "      hang|malformed|no-terminator|flap:N|gather:N|cached:N|cache-write-5m:N|\n"
                 "      cache-write-1h:N (the last two: Anthropic's cache_creation),\n"
                 "      comma-separated to combine\n");
}

static bool s_number(const char *text, long low, long high, long *value)
{
    char *end;
    *value = strtol(text, &end, 10);
    return *text && !*end && *value >= low && *value <= high;
}

int main(int argc, char *argv[])
{
    mock_upstream_config_t config;
    mock_upstream_config_init(&config);
    const char *faults[64];
    char *aliases = NULL; //  joined --alias values
    int n_faults = 0;
    for (int index = 1; index < argc; index++) {
        const char *option = argv[index];
        const char *value = index + 1 < argc ? argv[index + 1] : NULL;
        long number;
        bool takes_value = true;
        if (!strcmp(option, "--verbose")) {
            config.verbose = true;
            takes_value = false;
        } else if (!strcmp(option, "--selftest")) {
            mock_upstream_test(config.verbose);
            mock_agent_test(config.verbose);
            return 0;
        } else if (!strcmp(option, "--help") || !strcmp(option, "-h")) {
            s_usage(stdout);
            return 0;
        } else if (!value) {
            fprintf(stderr, "mock: %s needs a value\n", option);
            s_usage(stderr);
            return 2;
        } else if (!strcmp(option, "--host"))
            config.host = value;
        else if (!strcmp(option, "--port") && s_number(value, 0, 65535, &number))
            config.port = (uint16_t)number;
        else if (!strcmp(option, "--threads") && s_number(value, 1, 256, &number))
            config.threads = (unsigned)number;
        else if (!strcmp(option, "--models"))
            config.models = value;
        else if (!strcmp(option, "--require-key"))
            config.require_key = value;
        else if (!strcmp(option, "--alias") && strchr(value, '=')) {
            //  Repeated aliases join into one comma-separated list.
            size_t size = (config.aliases ? strlen(config.aliases) + 1 : 0) + strlen(value) + 1;
            char *joined = malloc(size);
            if (!joined)
                return 1;
            snprintf(joined, size, "%s%s%s", config.aliases ? config.aliases : "",
                     config.aliases ? "," : "", value);
            free(aliases);
            aliases = joined;
            config.aliases = aliases;
        } else if (!strcmp(option, "--fault") && strchr(value, '=') &&
                   n_faults < (int)(sizeof(faults) / sizeof(faults[0])))
            faults[n_faults++] = value;
        else {
            fprintf(stderr, "mock: bad option %s %s\n", option, value);
            s_usage(stderr);
            return 2;
        }
        if (takes_value)
            index++;
    }

    //  Each held stream is an open socket; let the process have as many as it may.
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    //  Block the stop signals before MHD starts its threads, so they inherit the mask and
    //  only sigwait below ever sees them.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    mock_upstream_t *mock = mock_upstream_new(&config);
    if (!mock)
        return 1;
    for (int index = 0; index < n_faults; index++) {
        const char *equals = strchr(faults[index], '=');
        char *model = strndup(faults[index], (size_t)(equals - faults[index]));
        int rc = model ? mock_upstream_set_fault(mock, model, equals + 1) : -1;
        free(model);
        if (rc) {
            fprintf(stderr, "mock: bad --fault %s\n", faults[index]);
            mock_upstream_destroy(&mock);
            return 2;
        }
    }
    printf("port=%u\n", (unsigned)mock_upstream_port(mock));
    fflush(stdout);

    int received;
    sigwait(&stop, &received);
    mock_upstream_destroy(&mock);
    free(aliases);
    return 0;
}
