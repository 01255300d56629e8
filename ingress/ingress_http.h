/*  ingress_http: the client API's side of libmicrohttpd.

    The access handler and the completion callback of the client listener
    (ingress_daemon): a request's headers are read into its route,
    protocol, id and key; local answers (health, metrics, models, errors
    decided from the headers) go out at once; a model call's body is read
    up to ingress.max_body_bytes, parsed, and handed to admission
    (ingress_admit). At its end a request is counted and its spans are
    kept or dropped.
*/
#ifndef INGRESS_HTTP_H_INCLUDED
#define INGRESS_HTTP_H_INCLUDED

#include <microhttpd.h>
#include <stdbool.h>
#include <stddef.h>

//  MHD access handler of the client listener (arg: the ingress_server_t).
enum MHD_Result ingress_http_access(void *arg, struct MHD_Connection *connection, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **request_p);

//  MHD completion callback of the client listener (arg: the server).
void ingress_http_completed(void *arg, struct MHD_Connection *connection, void **request_p,
                            enum MHD_RequestTerminationCode code);

//  Self test.
void ingress_http_test(bool verbose);

#endif
