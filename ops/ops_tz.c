#include "ops_tz.h"
#include "proto_check.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

bool ops_tz_known(const char *zone)
{
    if (!zone || !*zone)
        return false;
    if (strcmp(zone, "UTC") == 0 || strcmp(zone, "Z") == 0)
        return true;
    //  glibc reads ":NAME" as NAME, and a path as the zone file it names
    //  (TZ=:/etc/localtime is common in containers).
    if (*zone == ':')
        zone++;
    if (*zone == '/')
        return access(zone, R_OK) == 0;
    if (!*zone || strstr(zone, "..") || strlen(zone) > 200)
        return false;
    for (const char *c = zone; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("/_+-", *c))
            return false;
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", zone);
    return access(path, R_OK) == 0;
}

int ops_tz_choose(const char *option, char *out, size_t out_size, char *error, size_t error_size)
{
    const char *env = getenv("TZ");
    const char *zone = option ? option : env && *env ? env : NULL;
    *out = '\0';
    if (!zone)
        return 0;
    if (!ops_tz_known(zone)) {
        snprintf(error, error_size,
                 "%s: unknown time zone '%.100s' (an IANA name such as Europe/Paris, or UTC)",
                 option ? "--tz" : "TZ", zone);
        if (option)
            return -1;
        //  The environment is not this command's input: a TZ other
        //  programs read differently must not stop a script. Said, then UTC.
        fprintf(stderr, "tollgate: %s; times in UTC\n", error);
        return 0;
    }
    if (strcmp(zone, "UTC") != 0 && strcmp(zone, "Z") != 0)
        snprintf(out, out_size, "%s", zone);
    return 0;
}

//  Seconds since the epoch of an ISO 8601 time, or -1.
static int s_parse(const char *iso, time_t *seconds)
{
    struct tm tm = {0};
    const char *rest = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return -1;
    if (*rest == '.')
        for (rest++; isdigit((unsigned char)*rest); rest++)
            ;
    long offset = 0;
    if (*rest == '+' || *rest == '-') {
        int hours, minutes = 0;
        if (sscanf(rest + 1, "%2d:%2d", &hours, &minutes) < 1)
            return -1;
        offset = (hours * 3600L + minutes * 60L) * (*rest == '-' ? -1 : 1);
    } else if (*rest != 'Z' && *rest)
        return -1;
    *seconds = timegm(&tm) - offset;
    return 0;
}

int ops_tz_format(const char *iso, const char *zone, char *out, size_t out_size)
{
    time_t seconds;
    if (s_parse(iso, &seconds) != 0) {
        snprintf(out, out_size, "%.19s", iso);
        char *t = strchr(out, 'T');
        if (t)
            *t = ' ';
        return -1;
    }
    struct tm shown;
    if (!zone || !*zone) {
        gmtime_r(&seconds, &shown);
        strftime(out, out_size, "%Y-%m-%d %H:%M:%S", &shown);
        return 0;
    }
    //  localtime_r follows TZ; the CLI is one thread and sets it once per
    //  call, restoring what was there.
    char *saved = getenv("TZ") ? strdup(getenv("TZ")) : NULL;
    setenv("TZ", zone, 1);
    tzset();
    localtime_r(&seconds, &shown);
    strftime(out, out_size, "%Y-%m-%d %H:%M:%S %Z", &shown);
    if (saved)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved);
    return 0;
}

void ops_tz_test(bool verbose)
{
    if (verbose)
        printf(" * ops_tz: ");
    char out[64], error[160];
    PROTO_CHECK(ops_tz_known("UTC") && ops_tz_known("Europe/Paris"));
    PROTO_CHECK(!ops_tz_known("Mars/Olympus") && !ops_tz_known("../etc/passwd"));
    PROTO_CHECK(!ops_tz_known("/nonexistent/zone") && !ops_tz_known(""));
    PROTO_CHECK(ops_tz_known(":/usr/share/zoneinfo/Asia/Tokyo"));
    PROTO_CHECK(ops_tz_format("2026-12-03T16:50:39.123456+00:00", "", out, sizeof out) == 0);
    PROTO_CHECK(strcmp(out, "2026-12-03 16:50:39") == 0);
    PROTO_CHECK(ops_tz_format("2026-12-03T16:50:39Z", "Europe/Paris", out, sizeof out) == 0);
    PROTO_CHECK(strcmp(out, "2026-12-03 17:50:39 CET") == 0);
    //  Summer time, and an offset in the input.
    PROTO_CHECK(ops_tz_format("2026-07-01T02:00:00+02:00", "America/New_York", out, sizeof out) ==
                0);
    PROTO_CHECK(strcmp(out, "2026-06-30 20:00:00 EDT") == 0);
    PROTO_CHECK(ops_tz_format("not a time", "", out, sizeof out) == -1);
    PROTO_CHECK(ops_tz_choose("Asia/Tokyo", out, sizeof out, error, sizeof error) == 0 &&
                strcmp(out, "Asia/Tokyo") == 0);
    PROTO_CHECK(ops_tz_choose("UTC", out, sizeof out, error, sizeof error) == 0 && !*out);
    PROTO_CHECK(ops_tz_choose("Nowhere/City", out, sizeof out, error, sizeof error) == -1 &&
                strstr(error, "--tz") && strstr(error, "Nowhere/City"));
    if (verbose)
        printf("OK\n");
}
