/*  proto_sse: Server-Sent Events, read incrementally and written.

    The reader takes a stream in slices of any size (as libcurl delivers it)
    and hands over each complete block: the lines up to and including the
    blank line that ends it. A block is an event when it had at least one
    `data` line; blocks of only comments (`: keep-alive`) or unknown fields
    are handed over too, with has_data false, so that a relay can pass them
    on byte for byte. Lines end in \n, \r\n or a lone \r (the standard's three
    forms); a \r at the very end of a slice is held back until the next byte
    says whether a \n follows, so any split of the same bytes gives the same
    blocks. A block growing past the reader's limit is an error: the reader
    stops and reports it, since an upstream sending one 8 MiB event is broken
    or hostile.

    The writer helpers build `event: NAME\ndata: …\n\n` text, splitting data
    that holds newlines into several data lines as the standard requires.
*/
#ifndef PROTO_SSE_H_INCLUDED
#define PROTO_SSE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define PROTO_SSE_MAX_EVENT (8u * 1024u * 1024u) //  default limit on one block

//  One complete block. Every pointer is borrowed and valid only during the
//  callback.
typedef struct {
    const char *name; //  `event` field, "" when absent
    const char *data; //  data lines joined with \n, NUL-terminated, "" when none
    size_t data_size; //  bytes in data
    const char *id;   //  last `id` seen on this stream, "" when none
    bool has_data;    //  at least one data line: a dispatchable event
    const char *raw;  //  the block's bytes exactly as they arrived
    size_t raw_size;  //  bytes in raw, including the blank line
} proto_sse_event_t;

//  Receives one block. Returns 0 to go on, -1 to stop feeding (feed then
//  returns -1 too, and the reader refuses further input).
typedef int(proto_sse_fn)(const proto_sse_event_t *event, void *arg);

typedef struct _proto_sse_t proto_sse_t;

//  Creates a reader whose blocks may be at most max_event bytes (0 means
//  PROTO_SSE_MAX_EVENT). Caller owns return value.
proto_sse_t *proto_sse_new(size_t max_event);

//  Destroys a reader; nulls the pointer.
void proto_sse_destroy(proto_sse_t **self_p);

//  Feeds bytes; calls fn for each block completed by them. Returns 0, or -1
//  when a block exceeded the limit or fn asked to stop (the reader is then
//  failed and refuses further input).
int proto_sse_feed(proto_sse_t *self, const void *data, size_t size, proto_sse_fn *fn, void *arg);

//  Ends the stream: a held-back \r is taken as a line end. A block left
//  without its blank line is not an event (the standard discards it); its
//  size is what proto_sse_pending reports afterwards. Returns as feed.
int proto_sse_finish(proto_sse_t *self, proto_sse_fn *fn, void *arg);

//  Bytes received that do not yet form a complete block.
size_t proto_sse_pending(proto_sse_t *self);

//  True after the limit was exceeded or a callback stopped the reader.
bool proto_sse_failed(proto_sse_t *self);

//  Formats one event: `event: NAME\n` when name is non-NULL and non-empty,
//  one `data: LINE\n` per line of data, then a blank line. Caller owns
//  return value (free()); its length goes to *size when size is not NULL.
char *proto_sse_format(const char *name, const char *data, size_t data_size, size_t *size);

//  Self test.
void proto_sse_test(bool verbose);

#endif
