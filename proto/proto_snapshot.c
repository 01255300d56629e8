#include "proto_snapshot.h"
#include "proto_catalog.h"
#include "proto_check.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

//  One transaction id at *at, ended by `stop`; *at is left on the stop.
static int s_parse_xid(const char **at, char stop, uint64_t *xid)
{
    if (**at < '0' || **at > '9')
        return -1;
    errno = 0;
    char *end;
    unsigned long long value = strtoull(*at, &end, 10);
    if (errno || *end != stop)
        return -1;
    *xid = value;
    *at = end;
    return 0;
}

//  "xmin:xmax:xip,xip,...": pg_snapshot's text form.
static int s_parse_snapshot(proto_snapshot_t *parsed, const char *text)
{
    const char *at = text;
    if (s_parse_xid(&at, ':', &parsed->xmin) != 0)
        return -1;
    at++;
    if (s_parse_xid(&at, ':', &parsed->xmax) != 0 || parsed->xmin > parsed->xmax)
        return -1;
    at++;
    if (!*at)
        return 0;
    size_t count = 1;
    for (const char *c = at; *c; c++)
        count += *c == ',';
    parsed->in_progress = calloc(count, sizeof *parsed->in_progress);
    assert(parsed->in_progress);
    for (size_t i = 0; i < count; i++) {
        char stop = i + 1 < count ? ',' : '\0';
        if (s_parse_xid(&at, stop, &parsed->in_progress[i]) != 0)
            return -1;
        parsed->in_progress_count++;
        at++;
    }
    return 0;
}

void proto_snapshot_clear(proto_snapshot_t *snapshot)
{
    free(snapshot->in_progress);
    *snapshot = (proto_snapshot_t){0};
}

int proto_snapshot_parse(proto_snapshot_t *snapshot, const char *text)
{
    proto_snapshot_t parsed = {0};
    if (s_parse_snapshot(&parsed, text) != 0) {
        free(parsed.in_progress);
        return -1;
    }
    parsed.known = true;
    proto_snapshot_clear(snapshot);
    *snapshot = parsed;
    return 0;
}

bool proto_snapshot_saw(const proto_snapshot_t *snapshot, uint64_t txid)
{
    if (!snapshot->known || txid == 0 || txid >= snapshot->xmax)
        return false;
    if (txid < snapshot->xmin)
        return true;
    for (size_t i = 0; i < snapshot->in_progress_count; i++)
        if (snapshot->in_progress[i] == txid)
            return false;
    return true;
}

static bool s_snapshot_parses(const char *text)
{
    proto_snapshot_t snapshot = {0};
    int rc = proto_snapshot_parse(&snapshot, text);
    free(snapshot.in_progress);
    return rc == 0;
}

void proto_snapshot_test(bool verbose)
{
    if (verbose)
        printf(" * proto_snapshot: ");
    PROTO_CHECK(s_snapshot_parses("5:5:"));
    PROTO_CHECK(s_snapshot_parses("100:110:100,104,109"));
    PROTO_CHECK(!s_snapshot_parses(""));
    PROTO_CHECK(!s_snapshot_parses("5:4:"));    //  xmin above xmax
    PROTO_CHECK(!s_snapshot_parses("5:9"));     //  no list part
    PROTO_CHECK(!s_snapshot_parses("5:9:6,"));  //  an empty id
    PROTO_CHECK(!s_snapshot_parses("5:9:6,x")); //  not a number
    PROTO_CHECK(!s_snapshot_parses("-1:9:"));
    PROTO_CHECK(!s_snapshot_parses("5:99999999999999999999:"));

    char error[256];
    proto_catalog_t *catalog =
        proto_catalog_from_json("{\"snapshot\":\"100:110:100,104,109\"}", error, sizeof error);
    PROTO_CHECK(catalog);
    PROTO_CHECK(proto_catalog_saw_transaction(catalog, 99));   //  before the oldest running
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 100)); //  running at the read
    PROTO_CHECK(proto_catalog_saw_transaction(catalog, 103));  //  committed between
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 104));
    PROTO_CHECK(proto_catalog_saw_transaction(catalog, 108));
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 109));
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 110)); //  started after the read
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 0));   //  no transaction named
    proto_catalog_destroy(&catalog);

    //  Without a snapshot nothing counts as seen.
    catalog = proto_catalog_from_json("{}", error, sizeof error);
    PROTO_CHECK(catalog && !proto_catalog_saw_transaction(catalog, 1));
    proto_catalog_destroy(&catalog);
    catalog = proto_catalog_new_empty();
    PROTO_CHECK(!proto_catalog_saw_transaction(catalog, 1));
    proto_catalog_destroy(&catalog);
    catalog = proto_catalog_from_json("{\"snapshot\":\"nonsense\"}", error, sizeof error);
    PROTO_CHECK(catalog && !proto_catalog_saw_transaction(catalog, 1));
    proto_catalog_destroy(&catalog);
    if (verbose)
        printf("OK\n");
}
