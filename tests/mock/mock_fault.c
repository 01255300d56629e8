/*  mock_fault - the mock upstream's fault language */

#include "mock_fault.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool mock_parse_int(const char *text, int low, int high, int *value)
{
    if (!text || !*text)
        return false;
    char *end;
    errno = 0;
    long number = strtol(text, &end, 10);
    if (errno || *end || number < low || number > high)
        return false;
    *value = (int)number;
    return true;
}

//  Parses SPEC, a comma-separated list; returns 0 or -1 if any item is unknown.
static int s_parse_items(const char *spec, mock_fault_t *fault)
{
    memset(fault, 0, sizeof(*fault));
    fault->cut_after = -1;
    if (!spec)
        return 0;
    char copy[256];
    if (strlen(spec) >= sizeof(copy))
        return -1;
    strcpy(copy, spec);
    char *save = NULL;
    for (char *item = strtok_r(copy, ", ", &save); item; item = strtok_r(NULL, ", ", &save)) {
        char *arg = strchr(item, ':');
        if (arg)
            *arg++ = 0;
        int value;
        if (mock_parse_int(item, 400, 599, &value)) {
            fault->status = value;
            fault->retry_after = 1;
            if (arg && !(value == 429 && mock_parse_int(arg, 0, 86400, &fault->retry_after)))
                return -1;
        } else if (!strcmp(item, "delay-headers") && mock_parse_int(arg, 0, 3600000, &value))
            fault->delay_headers_ms = value;
        else if (!strcmp(item, "delay-chunks") && mock_parse_int(arg, 0, 3600000, &value))
            fault->delay_chunks_ms = value;
        else if (!strcmp(item, "cut") && mock_parse_int(arg, 0, MOCK_MAX_CHUNKS * 2, &value))
            fault->cut_after = value;
        else if (!strcmp(item, "flap") && mock_parse_int(arg, 1, 1000000, &value))
            fault->flap = value;
        else if (!strcmp(item, "gather") && mock_parse_int(arg, 1, 1000000, &value))
            fault->gather = value;
        else if (!strcmp(item, "hang") && !arg)
            fault->hang = true;
        else if (!strcmp(item, "malformed") && !arg)
            fault->malformed = true;
        else if (!strcmp(item, "no-terminator") && !arg)
            fault->no_terminator = true;
        else if (!strcmp(item, "cached") && mock_parse_int(arg, 0, 1 << 30, &value))
            fault->cached_tokens = value;
        else if (!strcmp(item, "cache-write-5m") && mock_parse_int(arg, 0, 1 << 30, &value))
            fault->cache_write_5m = value;
        else if (!strcmp(item, "cache-write-1h") && mock_parse_int(arg, 0, 1 << 30, &value))
            fault->cache_write_1h = value;
        else
            return -1;
    }
    return 0;
}

//  A spec that does not parse leaves no partial fault behind.
int mock_fault_parse(const char *spec, mock_fault_t *fault)
{
    if (s_parse_items(spec, fault) == 0)
        return 0;
    memset(fault, 0, sizeof(*fault));
    fault->cut_after = -1;
    return -1;
}

bool mock_fault_any(const mock_fault_t *fault)
{
    return fault->status || fault->delay_headers_ms || fault->delay_chunks_ms ||
           fault->cut_after >= 0 || fault->flap || fault->gather || fault->hang ||
           fault->malformed || fault->no_terminator;
}
