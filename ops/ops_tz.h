/*  ops_tz: times in the CLI's tables in the operator's time zone.

    The admin API and PostgreSQL keep and answer UTC (ISO 8601); tables show
    UTC too unless `--tz ZONE` or the TZ environment variable names another
    zone (an IANA name such as Europe/Paris, or UTC). A zone is checked
    against the system's zone files first, so a typo is an error instead of
    glibc's silent UTC. --json output is the API's, always UTC.
*/
#ifndef OPS_TZ_H_INCLUDED
#define OPS_TZ_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  True when zone names a time zone the system knows: "UTC" (or "Z"), an
//  IANA name with a zone file under TZDIR (default /usr/share/zoneinfo), or
//  a zone file's absolute path (":/etc/localtime" as glibc reads it).
bool ops_tz_known(const char *zone);

//  Picks the zone for tables: option (--tz) first, else the TZ environment
//  variable, else UTC. Returns 0 with the zone in out ("" for UTC), or -1
//  with a message naming --tz in error when the option names no zone. A TZ
//  that names none is said on stderr and UTC is used: a script's
//  environment must not stop its commands.
int ops_tz_choose(const char *option, char *out, size_t out_size, char *error, size_t error_size);

//  Writes an ISO 8601 timestamp ("2026-12-03T16:50:39.123+00:00", "...Z")
//  as "YYYY-MM-DD HH:MM:SS" in zone ("" = UTC, as given) followed by the
//  zone's abbreviation when it is not UTC. Returns 0, or -1 (out then
//  holds the text cut to seconds as before) when it is not such a time.
int ops_tz_format(const char *iso, const char *zone, char *out, size_t out_size);

//  Self test.
void ops_tz_test(bool verbose);

#endif
