/*  mock_req - one request of the mock upstream: its life and its headers */

#include "mock_req.h"

#include <stdlib.h>
#include <string.h>

void mock_req_unref(void *cls)
{
    mock_req_t *self = cls;
    if (!self || atomic_fetch_sub(&self->refs, 1) != 1)
        return;
    free(self->path);
    free(self->method);
    mock_buf_reset(&self->body);
    free(self->reply);
    free(self->tool_name);
    free(self->model);
    for (int index = 0; index < self->n_pieces; index++)
        free(self->pieces[index]);
    free(self->pieces);
    free(self->full_text);
    free(self->events);
    mock_buf_reset(&self->out);
    free(self);
}

const char *mock_req_header(mock_req_t *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}
