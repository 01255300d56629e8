/*  ops_top: `tollgate top`, the cluster's vital signs in the terminal.

    Scrapes the Prometheus /metrics of the programs (NAME.metrics_listen of
    ingress, dispatch and router from the cluster configuration, or the
    addresses given with --metrics), twice an interval apart, and shows per
    provider: attempts and errors per second, latency and time-to-first-
    byte percentiles (from the histograms' growth over the interval, else
    over the process' life), and the worst breaker state the routers
    report; and for the gateway: requests and errors per second and
    requests in flight. Series with the same name and labels from several
    instances are added up.

    Refreshes every interval until interrupted; --once prints one frame and
    exits (scripts, tests); --json prints the frame as JSON.
*/
#ifndef OPS_TOP_H_INCLUDED
#define OPS_TOP_H_INCLUDED

#include <stdbool.h>
#include <stdio.h>

//  `tollgate top [--dir DIR] [--metrics HOST:PORT,...] [--interval MS] [--once] [--json]`.
//  argv[0] is "top". Returns the exit code: 0, 1 when nothing could be
//  scraped, 2 for bad usage.
int ops_top_main(int argc, char **argv);

//  Self test: parsing, merging, quantiles and a frame from canned text.
void ops_top_test(bool verbose);

#endif
