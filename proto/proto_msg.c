#include "proto_msg.h"
#include "proto_loop.h"
#include "proto_check.h"
#include "proto_text.h"

#include <assert.h>
#include <errno.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_U64, K_I64, K_BOOL, K_STR, K_CANDIDATES } s_kind_t;
#define S_KIND_U64 K_U64
#define S_KIND_I64 K_I64
#define S_KIND_BOOL K_BOOL
#define S_KIND_STR K_STR
#define S_KIND_CANDIDATES K_CANDIDATES

#define S_STORAGE_U64 uint64_t
#define S_STORAGE_I64 int64_t
#define S_STORAGE_BOOL bool
#define S_STORAGE_STR char *
#define S_STORAGE_CANDIDATES proto_candidate_t *

struct _proto_msg_t {
    proto_msg_type_t type;                       //  what the message is
    char request_id[PROTO_MSG_RID_MAX + 1];      //  request it belongs to, "" for control
    char trace[PROTO_MSG_TRACE_MAX + 1];         //  W3C traceparent, "" when none
    uint64_t deadline;                           //  ms since epoch, 0 = none
    uint64_t present;                            //  bit per field id that is set
    size_t candidate_count;                      //  entries in candidates
    zframe_t *body;                              //  optional body frame, owned
    zframe_t *routing_id;                        //  ROUTER peer, owned
    char peer[PROTO_MSG_PEER_MAX + 1];           //  sender's program (CURVE User-Id), "" if none
#define X(name, id, kind) S_STORAGE_##kind name; //  field values, see proto_msg.h
    PROTO_MSG_FIELDS(X)
#undef X
};

#define S_BIT(field) ((uint64_t)1 << (field))

//  A message type's name and the fields it requires, from proto_msg.h's
//  PROTO_MSG_TYPES. Any type may carry any other field: the decoder refuses
//  unknown field ids and values of the wrong kind, not fields a type does
//  not use.
typedef struct {
    int type;          //  proto_msg_type_t
    const char *name;  //  for logs
    uint64_t required; //  field bits that must be present
} s_type_t;

#define R(field) S_BIT(PROTO_FIELD_##field)
#define X(name, id, required) {PROTO_MSG_##name, #name, required},
static const s_type_t s_types[] = {PROTO_MSG_TYPES(X, R)};
#undef X
#undef R
#define S_TYPE_COUNT (sizeof s_types / sizeof s_types[0])

static const s_type_t *s_type_find(int type)
{
    for (size_t i = 0; i < S_TYPE_COUNT; i++)
        if (s_types[i].type == type)
            return &s_types[i];
    return NULL;
}

const char *proto_msg_type_name(int type)
{
    const s_type_t *entry = s_type_find(type);
    return entry ? entry->name : "?";
}

static int s_field_kind(uint64_t id)
{
    switch (id) {
#define X(name, fid, kind)                                                                         \
    case fid:                                                                                      \
        return S_KIND_##kind;
        PROTO_MSG_FIELDS(X)
#undef X
    default:
        return -1;
    }
}

proto_msg_t *proto_msg_new(proto_msg_type_t type)
{
    proto_msg_t *self = calloc(1, sizeof *self);
    assert(self);
    self->type = type;
    return self;
}

void proto_msg_destroy(proto_msg_t **self_p)
{
    assert(self_p);
    proto_msg_t *self = *self_p;
    if (!self)
        return;
//  Only what is there: most of a message's optional strings are NULL, and
//  a free(NULL) still costs a call into the allocator (~100 a request in
//  dispatch).
#define S_FREE_U64(name)
#define S_FREE_I64(name)
#define S_FREE_BOOL(name)
#define S_FREE_STR(name)                                                                           \
    if (self->name)                                                                                \
        free(self->name);
#define S_FREE_CANDIDATES(name)                                                                    \
    if (self->name)                                                                                \
        free(self->name);
#define X(name, id, kind) S_FREE_##kind(name)
    PROTO_MSG_FIELDS(X)
#undef X
    zframe_destroy(&self->body);
    zframe_destroy(&self->routing_id);
    free(self);
    *self_p = NULL;
}

//  --------------------------------------------------------------------------
//  Accessors

#define S_DEFINE_U64(name)                                                                         \
    uint64_t proto_msg_##name(const proto_msg_t *self)                                             \
    {                                                                                              \
        return self->name;                                                                         \
    }                                                                                              \
    void proto_msg_set_##name(proto_msg_t *self, uint64_t value)                                   \
    {                                                                                              \
        self->name = value;                                                                        \
        self->present |= S_BIT(PROTO_FIELD_##name);                                                \
    }
#define S_DEFINE_I64(name)                                                                         \
    int64_t proto_msg_##name(const proto_msg_t *self)                                              \
    {                                                                                              \
        return self->name;                                                                         \
    }                                                                                              \
    void proto_msg_set_##name(proto_msg_t *self, int64_t value)                                    \
    {                                                                                              \
        self->name = value;                                                                        \
        self->present |= S_BIT(PROTO_FIELD_##name);                                                \
    }
#define S_DEFINE_BOOL(name)                                                                        \
    bool proto_msg_##name(const proto_msg_t *self)                                                 \
    {                                                                                              \
        return self->name;                                                                         \
    }                                                                                              \
    void proto_msg_set_##name(proto_msg_t *self, bool value)                                       \
    {                                                                                              \
        self->name = value;                                                                        \
        self->present |= S_BIT(PROTO_FIELD_##name);                                                \
    }
#define S_DEFINE_STR(name)                                                                         \
    const char *proto_msg_##name(const proto_msg_t *self)                                          \
    {                                                                                              \
        return self->name ? self->name : "";                                                       \
    }                                                                                              \
    void proto_msg_set_##name(proto_msg_t *self, const char *value)                                \
    {                                                                                              \
        free(self->name);                                                                          \
        self->name = strndup(value ? value : "", PROTO_MSG_STR_MAX);                               \
        self->present |= S_BIT(PROTO_FIELD_##name);                                                \
    }
#define S_DEFINE_CANDIDATES(name)                                                                  \
    const proto_candidate_t *proto_msg_##name(const proto_msg_t *self, size_t *count)              \
    {                                                                                              \
        *count = self->candidate_count;                                                            \
        return self->name;                                                                         \
    }                                                                                              \
    void proto_msg_set_##name(proto_msg_t *self, const proto_candidate_t *items, size_t count)     \
    {                                                                                              \
        assert(count <= PROTO_MSG_CANDIDATES_MAX);                                                 \
        free(self->name);                                                                          \
        self->name = count ? malloc(count * sizeof *items) : NULL;                                 \
        if (count)                                                                                 \
            memcpy(self->name, items, count * sizeof *items);                                      \
        self->candidate_count = count;                                                             \
        self->present |= S_BIT(PROTO_FIELD_##name);                                                \
    }
#define X(name, id, kind) S_DEFINE_##kind(name)
PROTO_MSG_FIELDS(X)
#undef X

proto_msg_type_t proto_msg_type(const proto_msg_t *self)
{
    return self->type;
}

const char *proto_msg_request_id(const proto_msg_t *self)
{
    return self->request_id;
}

void proto_msg_set_request_id(proto_msg_t *self, const char *request_id)
{
    proto_text_copy(self->request_id, sizeof self->request_id, request_id);
}

const char *proto_msg_trace(const proto_msg_t *self)
{
    return self->trace;
}

void proto_msg_set_trace(proto_msg_t *self, const char *traceparent)
{
    proto_text_copy(self->trace, sizeof self->trace, traceparent);
}

uint64_t proto_msg_deadline(const proto_msg_t *self)
{
    return self->deadline;
}

void proto_msg_set_deadline(proto_msg_t *self, uint64_t deadline_ms)
{
    self->deadline = deadline_ms;
}

bool proto_msg_has(const proto_msg_t *self, proto_field_t field)
{
    return (self->present & S_BIT(field)) != 0;
}

zframe_t *proto_msg_body(const proto_msg_t *self)
{
    return self->body;
}

void proto_msg_set_body(proto_msg_t *self, zframe_t **body_p)
{
    zframe_destroy(&self->body);
    self->body = *body_p;
    *body_p = NULL;
}

void proto_msg_set_body_bytes(proto_msg_t *self, const void *data, size_t size)
{
    zframe_destroy(&self->body);
    self->body = zframe_new(data, size);
}

zframe_t *proto_msg_take_body(proto_msg_t *self)
{
    zframe_t *body = self->body;
    self->body = NULL;
    return body;
}

zframe_t *proto_msg_routing_id(const proto_msg_t *self)
{
    return self->routing_id;
}

const char *proto_msg_peer(const proto_msg_t *self)
{
    return self->peer;
}

void proto_msg_set_peer(proto_msg_t *self, const char *peer)
{
    proto_text_copy(self->peer, sizeof self->peer, peer);
}

bool proto_msg_peer_is(const proto_msg_t *self, const char *program)
{
    return !*self->peer || strcmp(self->peer, program) == 0;
}

void proto_msg_set_routing_id(proto_msg_t *self, zframe_t *routing_id)
{
    zframe_destroy(&self->routing_id);
    self->routing_id = routing_id ? zframe_dup(routing_id) : NULL;
}

void proto_msg_set_routing_id_bytes(proto_msg_t *self, const void *data, size_t size)
{
    zframe_destroy(&self->routing_id);
    self->routing_id = data ? zframe_new(data, size) : NULL;
}

proto_msg_t *proto_msg_reply(const proto_msg_t *request, proto_msg_type_t type)
{
    proto_msg_t *reply = proto_msg_new(type);
    memcpy(reply->request_id, request->request_id, sizeof reply->request_id);
    memcpy(reply->trace, request->trace, sizeof reply->trace);
    reply->deadline = request->deadline;
    proto_msg_set_routing_id(reply, request->routing_id);
    return reply;
}

//  --------------------------------------------------------------------------
//  Encoding, with msgpack-c's packer

static void s_pack_str(msgpack_packer *packer, const char *text)
{
    size_t length = strlen(text);
    msgpack_pack_str(packer, length);
    msgpack_pack_str_body(packer, text, length);
}

static void s_pack_candidates(msgpack_packer *packer, const proto_msg_t *self)
{
    msgpack_pack_array(packer, self->candidate_count);
    for (size_t i = 0; i < self->candidate_count; i++) {
        const proto_candidate_t *candidate = &self->candidates[i];
        msgpack_pack_array(packer, 4);
        msgpack_pack_uint64(packer, candidate->provider_id);
        msgpack_pack_uint64(packer, candidate->provider_key_id);
        msgpack_pack_uint32(packer, candidate->upstream_protocol);
        s_pack_str(packer, candidate->upstream_model);
    }
}

#define S_ENCODE_FIRST 512 //  bytes: within glibc's tcache (1,032)

int proto_msg_encode(const proto_msg_t *self, uint8_t **data, size_t *size)
{
    //  msgpack's first buffer is 8 KiB, past glibc's per-thread cache: each
    //  message cost a trip through malloc's bins (the largest malloc site in
    //  dispatch's profile). Envelopes are a few hundred bytes; the buffer
    //  doubles from here when one is not.
    msgpack_sbuffer buffer = {.size = 0, .data = malloc(S_ENCODE_FIRST), .alloc = S_ENCODE_FIRST};
    assert(buffer.data);
    msgpack_packer packer;
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);

    msgpack_pack_array(&packer, 7);
    s_pack_str(&packer, PROTO_MSG_SIGNATURE);
    msgpack_pack_uint8(&packer, PROTO_MSG_VERSION);
    msgpack_pack_uint8(&packer, (uint8_t)self->type);
    s_pack_str(&packer, self->request_id);
    s_pack_str(&packer, self->trace);
    msgpack_pack_uint64(&packer, self->deadline);
    msgpack_pack_map(&packer, (size_t)__builtin_popcountll(self->present));

#define S_PACK_U64(name) msgpack_pack_uint64(&packer, self->name);
#define S_PACK_I64(name) msgpack_pack_int64(&packer, self->name);
#define S_PACK_BOOL(name)                                                                          \
    if (self->name)                                                                                \
        msgpack_pack_true(&packer);                                                                \
    else                                                                                           \
        msgpack_pack_false(&packer);
#define S_PACK_STR(name) s_pack_str(&packer, self->name ? self->name : "");
#define S_PACK_CANDIDATES(name) s_pack_candidates(&packer, self);
#define X(name, id, kind)                                                                          \
    if (self->present & S_BIT(id)) {                                                               \
        msgpack_pack_uint8(&packer, id);                                                           \
        S_PACK_##kind(name)                                                                        \
    }
    PROTO_MSG_FIELDS(X)
#undef X

    //  The sbuffer's memory comes from malloc, so the caller can free() it.
    *data = (uint8_t *)buffer.data;
    *size = buffer.size;
    return 0;
}

//  --------------------------------------------------------------------------
//  Decoding. msgpack-c's unpacker allocates whatever an array header claims
//  before reading its items (4 bytes can ask for gigabytes), so untrusted
//  frames are read with this bounded cursor: every length is checked against
//  the bytes that remain, and nothing is allocated but the strings we keep.

typedef struct {
    const uint8_t *at;  //  next byte
    const uint8_t *end; //  one past the last byte
} s_reader_t;

static int s_read_bytes(s_reader_t *reader, size_t count, const uint8_t **out)
{
    if ((size_t)(reader->end - reader->at) < count)
        return -1;
    *out = reader->at;
    reader->at += count;
    return 0;
}

static int s_read_be(s_reader_t *reader, size_t width, uint64_t *value)
{
    const uint8_t *bytes;
    if (s_read_bytes(reader, width, &bytes))
        return -1;
    *value = 0;
    for (size_t i = 0; i < width; i++)
        *value = (*value << 8) | bytes[i];
    return 0;
}

static int s_read_tag(s_reader_t *reader, uint8_t *tag)
{
    const uint8_t *byte;
    if (s_read_bytes(reader, 1, &byte))
        return -1;
    *tag = *byte;
    return 0;
}

//  Reads an unsigned integer; negative ints are refused.
static int s_read_uint(s_reader_t *reader, uint64_t *value)
{
    uint8_t tag;
    if (s_read_tag(reader, &tag))
        return -1;
    if (tag <= 0x7f)
        return (*value = tag), 0;
    switch (tag) {
    case 0xcc:
        return s_read_be(reader, 1, value);
    case 0xcd:
        return s_read_be(reader, 2, value);
    case 0xce:
        return s_read_be(reader, 4, value);
    case 0xcf:
        return s_read_be(reader, 8, value);
    default:
        return -1;
    }
}

static int s_read_int(s_reader_t *reader, int64_t *value)
{
    uint8_t tag;
    const uint8_t *peek = reader->at;
    if (s_read_tag(reader, &tag))
        return -1;
    uint64_t raw;
    if (tag <= 0x7f)
        return (*value = tag), 0;
    if (tag >= 0xe0)
        return (*value = (int8_t)tag), 0;
    switch (tag) {
    case 0xd0:
        if (s_read_be(reader, 1, &raw))
            return -1;
        return (*value = (int8_t)raw), 0;
    case 0xd1:
        if (s_read_be(reader, 2, &raw))
            return -1;
        return (*value = (int16_t)raw), 0;
    case 0xd2:
        if (s_read_be(reader, 4, &raw))
            return -1;
        return (*value = (int32_t)raw), 0;
    case 0xd3:
        if (s_read_be(reader, 8, &raw))
            return -1;
        return (*value = (int64_t)raw), 0;
    default:
        reader->at = peek;
        if (s_read_uint(reader, &raw) || raw > INT64_MAX)
            return -1;
        return (*value = (int64_t)raw), 0;
    }
}

static int s_read_bool(s_reader_t *reader, bool *value)
{
    uint8_t tag;
    if (s_read_tag(reader, &tag) || (tag != 0xc2 && tag != 0xc3))
        return -1;
    *value = tag == 0xc3;
    return 0;
}

//  Reads a string header and body; *text points into the frame, not terminated.
static int s_read_str(s_reader_t *reader, const char **text, size_t *length, size_t max)
{
    uint8_t tag;
    uint64_t size;
    if (s_read_tag(reader, &tag))
        return -1;
    if ((tag & 0xe0) == 0xa0)
        size = tag & 0x1f;
    else if (tag == 0xd9   ? s_read_be(reader, 1, &size) == 0
             : tag == 0xda ? s_read_be(reader, 2, &size) == 0
             : tag == 0xdb ? s_read_be(reader, 4, &size) == 0
                           : false)
        ;
    else
        return -1;
    if (size > max)
        return -1;
    const uint8_t *bytes;
    if (s_read_bytes(reader, size, &bytes))
        return -1;
    //  Strings become C strings: an embedded NUL would silently truncate them.
    if (memchr(bytes, 0, size))
        return -1;
    *text = (const char *)bytes;
    *length = size;
    return 0;
}

static int s_read_container(s_reader_t *reader, bool map, uint64_t *count)
{
    uint8_t tag;
    if (s_read_tag(reader, &tag))
        return -1;
    uint8_t fix = map ? 0x80 : 0x90;
    uint8_t c16 = map ? 0xde : 0xdc;
    if ((tag & 0xf0) == fix)
        *count = tag & 0x0f;
    else if (tag == c16) {
        if (s_read_be(reader, 2, count))
            return -1;
    } else if (tag == c16 + 1) {
        if (s_read_be(reader, 4, count))
            return -1;
    } else
        return -1;
    //  Each item takes at least one byte (two for a map entry).
    if (*count * (map ? 2 : 1) > (uint64_t)(reader->end - reader->at))
        return -1;
    return 0;
}

static int s_read_copy(s_reader_t *reader, char *out, size_t out_size)
{
    const char *text;
    size_t length;
    if (s_read_str(reader, &text, &length, out_size - 1))
        return -1;
    memcpy(out, text, length);
    out[length] = '\0';
    return 0;
}

static int s_read_candidates(s_reader_t *reader, proto_msg_t *self)
{
    uint64_t count;
    if (s_read_container(reader, false, &count) || count > PROTO_MSG_CANDIDATES_MAX)
        return -1;
    proto_candidate_t items[PROTO_MSG_CANDIDATES_MAX];
    memset(items, 0, sizeof items);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t width, protocol;
        if (s_read_container(reader, false, &width) || width != 4 ||
            s_read_uint(reader, &items[i].provider_id) ||
            s_read_uint(reader, &items[i].provider_key_id) || s_read_uint(reader, &protocol) ||
            protocol > UINT32_MAX ||
            s_read_copy(reader, items[i].upstream_model, sizeof items[i].upstream_model))
            return -1;
        items[i].upstream_protocol = (uint32_t)protocol;
    }
    proto_msg_set_candidates(self, items, count);
    return 0;
}

//  Frame strings are not NUL-terminated, so copy exactly `length` bytes.
static char *s_copy_string(const char *text, size_t length)
{
    char *copy = malloc(length + 1);
    assert(copy);
    memcpy(copy, text, length);
    copy[length] = '\0';
    return copy;
}

static int s_read_field(s_reader_t *reader, proto_msg_t *self, uint64_t id)
{
    const char *text;
    size_t length;
    switch (id) {
#define S_READ_U64(name) return s_read_uint(reader, &self->name);
#define S_READ_I64(name) return s_read_int(reader, &self->name);
#define S_READ_BOOL(name) return s_read_bool(reader, &self->name);
#define S_READ_STR(name)                                                                           \
    if (s_read_str(reader, &text, &length, PROTO_MSG_STR_MAX))                                     \
        return -1;                                                                                 \
    free(self->name);                                                                              \
    self->name = s_copy_string(text, length);                                                      \
    return 0;
#define S_READ_CANDIDATES(name) return s_read_candidates(reader, self);
#define X(name, fid, kind)                                                                         \
    case fid: {                                                                                    \
        S_READ_##kind(name)                                                                        \
    }
        PROTO_MSG_FIELDS(X)
#undef X
    default:
        return -1;
    }
}

static bool s_printable(const char *text)
{
    for (; *text; text++)
        if ((unsigned char)*text < 0x21 || (unsigned char)*text > 0x7e)
            return false;
    return true;
}

static int s_decode(s_reader_t *reader, proto_msg_t *self)
{
    uint64_t count, version, type;
    char signature[3];
    if (s_read_container(reader, false, &count) || count != 7)
        return -1;
    if (s_read_copy(reader, signature, sizeof signature) ||
        strcmp(signature, PROTO_MSG_SIGNATURE) != 0)
        return -1;
    if (s_read_uint(reader, &version) || version != PROTO_MSG_VERSION)
        return -1;
    if (s_read_uint(reader, &type) || !s_type_find((int)type) || type > 255)
        return -1;
    self->type = (proto_msg_type_t)type;
    if (s_read_copy(reader, self->request_id, sizeof self->request_id) ||
        !s_printable(self->request_id))
        return -1;
    if (s_read_copy(reader, self->trace, sizeof self->trace) || !s_printable(self->trace))
        return -1;
    if (s_read_uint(reader, &self->deadline))
        return -1;
    uint64_t fields;
    if (s_read_container(reader, true, &fields))
        return -1;
    for (uint64_t i = 0; i < fields; i++) {
        uint64_t id;
        if (s_read_uint(reader, &id) || id > PROTO_FIELD_MAX_ID || s_field_kind(id) < 0)
            return -1;
        if (self->present & S_BIT(id))
            return -1; //  a field twice is a broken sender, not a value to pick
        if (s_read_field(reader, self, id))
            return -1;
        self->present |= S_BIT(id);
    }
    if (reader->at != reader->end)
        return -1;
    uint64_t required = s_type_find((int)type)->required;
    if ((self->present & required) != required)
        return -1;
    return 0;
}

int proto_msg_decode(const uint8_t *data, size_t size, proto_msg_t **msg_p)
{
    *msg_p = NULL;
    if (!data || size == 0 || size > PROTO_MSG_ENVELOPE_MAX)
        return -2;
    s_reader_t reader = {data, data + size};
    proto_msg_t *self = proto_msg_new(PROTO_MSG_PING);
    if (s_decode(&reader, self) != 0) {
        proto_msg_destroy(&self);
        return -2;
    }
    *msg_p = self;
    return 0;
}

//  --------------------------------------------------------------------------
//  Sockets

//  Messages by type id and what happened to them, for the service's
//  metrics. Type ids are below 64; id 0 counts malformed frames.
enum { S_SENT, S_SEND_FAILED, S_RECEIVED, S_MALFORMED };
struct _proto_msg_counters_t {
    _Atomic uint64_t counts[64][4]; //  by type id, then S_SENT .. S_MALFORMED
};

//  The counters of the service this thread speaks for (borrowed), or NULL:
//  one pointer per thread, the service owns what it points to (proto_msg.h).
static _Thread_local proto_msg_counters_t *s_counters;

proto_msg_counters_t *proto_msg_counters_new(void)
{
    proto_msg_counters_t *self = calloc(1, sizeof *self);
    assert(self);
    for (int type = 0; type < 64; type++)
        for (int kind = 0; kind < 4; kind++)
            atomic_init(&self->counts[type][kind], 0);
    return self;
}

void proto_msg_counters_destroy(proto_msg_counters_t **self_p)
{
    assert(self_p);
    if (!*self_p)
        return;
    if (s_counters == *self_p)
        s_counters = NULL;
    free(*self_p);
    *self_p = NULL;
}

proto_msg_counters_t *proto_msg_counters_use(proto_msg_counters_t *counters)
{
    proto_msg_counters_t *before = s_counters;
    s_counters = counters;
    return before;
}

void proto_msg_counters_get(const proto_msg_counters_t *self, int type, proto_msg_counts_t *counts)
{
    memset(counts, 0, sizeof *counts);
    if (!self || type < 0 || type >= 64)
        return;
    const _Atomic uint64_t *row = self->counts[type];
    counts->sent = atomic_load_explicit(&row[S_SENT], memory_order_relaxed);
    counts->send_failed = atomic_load_explicit(&row[S_SEND_FAILED], memory_order_relaxed);
    counts->received = atomic_load_explicit(&row[S_RECEIVED], memory_order_relaxed);
    counts->malformed = atomic_load_explicit(&row[S_MALFORMED], memory_order_relaxed);
}

//  Relaxed: each counter is a number on its own, read only by scrapes.
static inline void s_count(int type, int kind)
{
    proto_msg_counters_t *counters = s_counters;
    if (counters)
        atomic_fetch_add_explicit(&counters->counts[type & 63][kind], 1, memory_order_relaxed);
}

void proto_msg_count_sent(int type, bool ok)
{
    s_count(type, ok ? S_SENT : S_SEND_FAILED);
}

void proto_msg_count_received(int type)
{
    s_count(type, type ? S_RECEIVED : S_MALFORMED);
}

int proto_msg_send(proto_msg_t **self_p, zsock_t *socket)
{
    assert(self_p && *self_p);
    proto_msg_t *self = *self_p;
    void *handle = zsock_resolve(socket);
    int rc = 0;
    if (zsock_type(socket) == ZMQ_ROUTER) {
        assert(self->routing_id);
        rc = zmq_send(handle, zframe_data(self->routing_id), zframe_size(self->routing_id),
                      ZMQ_SNDMORE);
    }
    uint8_t *data = NULL;
    size_t size = 0;
    proto_msg_encode(self, &data, &size);
    if (rc >= 0)
        rc = zmq_send(handle, data, size, self->body ? ZMQ_SNDMORE : 0);
    free(data);
    if (rc >= 0 && self->body)
        //  zframe_send moves the frame's zmq_msg_t: the body is not copied again.
        rc = zframe_send(&self->body, socket, 0);
    s_count(self->type, rc < 0 ? S_SEND_FAILED : S_SENT);
    proto_msg_destroy(self_p);
    proto_loop_touched(socket);
    return rc < 0 ? -1 : 0;
}

static void s_drain(void *handle)
{
    while (zsock_rcvmore(handle)) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, handle, 0);
        zmq_msg_close(&part);
    }
}

int proto_msg_recv(proto_msg_t **msg_p, zsock_t *socket)
{
    *msg_p = NULL;
    proto_loop_touched(socket);
    void *handle = zsock_resolve(socket);
    zframe_t *routing_id = NULL;
    if (zsock_type(socket) == ZMQ_ROUTER) {
        zmq_msg_t identity;
        zmq_msg_init(&identity);
        if (zmq_msg_recv(&identity, handle, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&identity);
            if (zmq_errno() == EAGAIN)
                proto_loop_received(socket, false);
            return -1;
        }
        routing_id = zframe_new(zmq_msg_data(&identity), zmq_msg_size(&identity));
        bool more = zmq_msg_more(&identity);
        zmq_msg_close(&identity);
        if (!more) {
            zframe_destroy(&routing_id);
            return -2;
        }
    }
    zmq_msg_t envelope;
    zmq_msg_init(&envelope);
    int flags = routing_id ? 0 : ZMQ_DONTWAIT;
    if (zmq_msg_recv(&envelope, handle, flags) < 0) {
        if (!routing_id && zmq_errno() == EAGAIN)
            proto_loop_received(socket, false);
        zmq_msg_close(&envelope);
        zframe_destroy(&routing_id);
        return -1;
    }
    proto_loop_received(socket, true);
    proto_msg_t *self = NULL;
    int rc = proto_msg_decode(zmq_msg_data(&envelope), zmq_msg_size(&envelope), &self);
    if (rc == 0) {
        //  The ZAP handler named the sender's program (proto_socket); a
        //  socket without security has no User-Id.
        const char *peer = zmq_msg_gets(&envelope, "User-Id");
        if (peer)
            proto_text_copy(self->peer, sizeof self->peer, peer);
    }
    bool more = zmq_msg_more(&envelope);
    zmq_msg_close(&envelope);
    if (rc == 0 && more) {
        self->body = zframe_recv(socket);
        if (!self->body)
            rc = -2;
    }
    if (rc == 0 && zsock_rcvmore(socket))
        rc = -2; //  only envelope and body are allowed
    s_drain(handle);
    if (rc != 0) {
        proto_msg_destroy(&self);
        zframe_destroy(&routing_id);
        s_count(0, S_MALFORMED);
        return -2;
    }
    s_count(self->type, S_RECEIVED);
    self->routing_id = routing_id;
    *msg_p = self;
    return 0;
}

//  --------------------------------------------------------------------------
//  Self test

//  Fills every field a type may carry with distinctive values.
static proto_msg_t *s_sample(proto_msg_type_t type)
{
    proto_msg_t *msg = proto_msg_new(type);
    proto_msg_set_request_id(msg, "req-0123456789abcdef");
    proto_msg_set_trace(msg, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    proto_msg_set_deadline(msg, 1790000000123ULL);
    proto_msg_set_instance(msg, "ingress-1");
    proto_msg_set_meta(msg, "{\"uptime\":3}");
    proto_msg_set_key_id(msg, 42);
    proto_msg_set_account_id(msg, UINT64_MAX);
    proto_msg_set_model(msg, "gpt-4o-mini");
    proto_msg_set_stream(msg, true);
    proto_msg_set_status(msg, 200);
    proto_msg_set_error_code(msg, "model_not_found");
    proto_msg_set_error_message(msg, "no such model \"x\"");
    proto_msg_set_retry_after_ms(msg, 1500);
    proto_msg_set_reserve_micros(msg, -123456789);
    proto_msg_set_client_protocol(msg, PROTO_PROTOCOL_ANTHROPIC);
    proto_msg_set_session(msg, "sess");
    proto_candidate_t candidates[2] = {{1, 2, PROTO_PROTOCOL_OPENAI, "gpt-4o"},
                                       {3, 4, PROTO_PROTOCOL_GEMINI, "gemini-2.0-flash"}};
    proto_msg_set_candidates(msg, candidates, 2);
    proto_msg_set_include_usage(msg, false);
    proto_msg_set_sequence(msg, 7);
    proto_msg_set_content_type(msg, "text/event-stream");
    proto_msg_set_dropped(msg, "top_k,context_management");
    proto_msg_set_reason(msg, "client gone");
    proto_msg_set_provider_id(msg, 1);
    proto_msg_set_provider_key_id(msg, 2);
    proto_msg_set_upstream_model(msg, "gpt-4o");
    proto_msg_set_attempt(msg, 2);
    proto_msg_set_latency_us(msg, 12345);
    proto_msg_set_ttfb_us(msg, 678);
    proto_msg_set_state(msg, 1);
    proto_msg_set_success_ppm(msg, 999000);
    proto_msg_set_tokens_in(msg, 1000);
    proto_msg_set_tokens_out(msg, 2000);
    proto_msg_set_tokens_cache_read(msg, 300);
    proto_msg_set_tokens_cache_write(msg, 400);
    proto_msg_set_tokens_cache_write_1h(msg, 150);
    proto_msg_set_started_us(msg, 1790000000123456ULL);
    proto_msg_set_attempts(msg, 3);
    proto_msg_set_estimated(msg, true);
    proto_msg_set_cost_micros(msg, 987654321);
    proto_msg_set_topic(msg, "keys");
    proto_msg_set_link(msg, 3);
    proto_msg_set_link_sequence(msg, 0x1234567890ULL);
    proto_msg_set_capabilities(msg, "vision,context-1m");
    proto_msg_set_lease_id(msg, 0x0123456789abcdefULL);
    proto_msg_set_credit_micros(msg, -5000000);
    proto_msg_set_used_micros(msg, 4999999);
    proto_msg_set_requests(msg, 100);
    proto_msg_set_tokens(msg, 200000);
    proto_msg_set_slots(msg, 16);
    proto_msg_set_ttl_ms(msg, 2000);
    proto_msg_set_version(msg, 42);
    proto_msg_set_loss(msg, true);
    proto_msg_set_txid(msg, 0xfedcba9876543210ULL);
    return msg;
}

static void s_assert_equal(const proto_msg_t *a, const proto_msg_t *b)
{
    assert(a->type == b->type);
    assert(strcmp(a->request_id, b->request_id) == 0);
    assert(strcmp(a->trace, b->trace) == 0);
    assert(a->deadline == b->deadline);
    assert(a->present == b->present);
#define S_EQ_U64(name) assert(a->name == b->name);
#define S_EQ_I64(name) assert(a->name == b->name);
#define S_EQ_BOOL(name) assert(a->name == b->name);
#define S_EQ_STR(name) assert(strcmp(proto_msg_##name(a), proto_msg_##name(b)) == 0);
#define S_EQ_CANDIDATES(name)                                                                      \
    assert(a->candidate_count == b->candidate_count);                                              \
    for (size_t i = 0; i < a->candidate_count; i++) {                                              \
        assert(a->name[i].provider_id == b->name[i].provider_id);                                  \
        assert(a->name[i].provider_key_id == b->name[i].provider_key_id);                          \
        assert(a->name[i].upstream_protocol == b->name[i].upstream_protocol);                      \
        assert(strcmp(a->name[i].upstream_model, b->name[i].upstream_model) == 0);                 \
    }
#define X(name, id, kind) S_EQ_##kind(name)
    PROTO_MSG_FIELDS(X)
#undef X
}

void proto_msg_test(bool verbose)
{
    if (verbose)
        printf(" * proto_msg: ");

    //  Every type round-trips through encode/decode with every field set,
    //  and with only its required fields set.
    uint8_t *data;
    size_t size;
    for (size_t t = 0; t < S_TYPE_COUNT; t++) {
        proto_msg_t *msg = s_sample((proto_msg_type_t)s_types[t].type);
        PROTO_CHECK(proto_msg_encode(msg, &data, &size) == 0);
        proto_msg_t *copy = NULL;
        PROTO_CHECK(proto_msg_decode(data, size, &copy) == 0);
        s_assert_equal(msg, copy);
        PROTO_CHECK(strcmp(proto_msg_type_name(s_types[t].type), s_types[t].name) == 0);

        //  Every strict prefix of a valid frame is malformed.
        for (size_t cut = 0; cut < size; cut++) {
            proto_msg_t *partial = NULL;
            PROTO_CHECK(proto_msg_decode(data, cut, &partial) == -2);
            PROTO_CHECK(partial == NULL);
        }
        free(data);
        proto_msg_destroy(&copy);
        proto_msg_destroy(&msg);

        //  Without a required field the message is refused.
        msg = proto_msg_new((proto_msg_type_t)s_types[t].type);
        PROTO_CHECK(proto_msg_encode(msg, &data, &size) == 0);
        int rc = proto_msg_decode(data, size, &copy);
        PROTO_CHECK(rc == (s_types[t].required ? -2 : 0));
        proto_msg_destroy(&copy);
        free(data);
        proto_msg_destroy(&msg);
    }

    //  Random frames and random mutations of a valid frame never crash,
    //  and what decodes re-encodes to something that decodes again.
    proto_msg_t *sample = s_sample(PROTO_MSG_DISPATCH);
    uint8_t *valid;
    size_t valid_size;
    proto_msg_encode(sample, &valid, &valid_size);
    proto_msg_destroy(&sample);
    uint8_t buffer[1024];
    unsigned seed = 12345;
    int decoded = 0;
    for (int i = 0; i < 200000; i++) {
        size_t length;
        if (i % 2) {
            length = (size_t)rand_r(&seed) % sizeof buffer;
            for (size_t b = 0; b < length; b++)
                buffer[b] = (uint8_t)rand_r(&seed);
        } else {
            length = valid_size;
            memcpy(buffer, valid, valid_size);
            int flips = 1 + rand_r(&seed) % 4;
            for (int f = 0; f < flips; f++)
                buffer[(size_t)rand_r(&seed) % length] = (uint8_t)rand_r(&seed);
        }
        proto_msg_t *msg = NULL;
        if (proto_msg_decode(buffer, length, &msg) == 0) {
            decoded++;
            uint8_t *again;
            size_t again_size;
            proto_msg_encode(msg, &again, &again_size);
            proto_msg_t *twice = NULL;
            PROTO_CHECK(proto_msg_decode(again, again_size, &twice) == 0);
            s_assert_equal(msg, twice);
            proto_msg_destroy(&twice);
            free(again);
        }
        proto_msg_destroy(&msg);
    }
    free(valid);

    //  A tiny header claiming four billion array items is refused without
    //  trying to allocate them.
    const uint8_t huge[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xa2, 'T', 'G'};
    proto_msg_t *none = NULL;
    PROTO_CHECK(proto_msg_decode(huge, sizeof huge, &none) == -2);
    //  Oversized envelope.
    uint8_t *big = calloc(1, PROTO_MSG_ENVELOPE_MAX + 1);
    PROTO_CHECK(proto_msg_decode(big, PROTO_MSG_ENVELOPE_MAX + 1, &none) == -2);
    free(big);

    //  Over sockets: a body frame travels beside the envelope, and a ROUTER
    //  replies to the peer it heard from.
    zsock_t *router = zsock_new_router("inproc://proto_msg_test");
    zsock_t *dealer = zsock_new_dealer("inproc://proto_msg_test");
    PROTO_CHECK(router && dealer);
    proto_msg_t *msg = s_sample(PROTO_MSG_DISPATCH);
    proto_msg_set_body_bytes(msg, "{\"model\":\"x\"}", 13);
    PROTO_CHECK(proto_msg_send(&msg, dealer) == 0);
    PROTO_CHECK(msg == NULL);
    zsock_set_rcvtimeo(router, 2000);
    zsock_set_rcvtimeo(dealer, 2000);
    proto_msg_t *received = NULL;
    zpoller_t *poller = zpoller_new(router, NULL);
    PROTO_CHECK(zpoller_wait(poller, 2000) == router);
    PROTO_CHECK(proto_msg_recv(&received, router) == 0);
    PROTO_CHECK(proto_msg_routing_id(received));
    PROTO_CHECK(zframe_size(proto_msg_body(received)) == 13);
    PROTO_CHECK(memcmp(zframe_data(proto_msg_body(received)), "{\"model\":\"x\"}", 13) == 0);
    proto_msg_t *reply = proto_msg_reply(received, PROTO_MSG_DONE);
    proto_msg_set_status(reply, 200);
    PROTO_CHECK(proto_msg_send(&reply, router) == 0);
    proto_msg_destroy(&received);
    zpoller_destroy(&poller);
    poller = zpoller_new(dealer, NULL);
    PROTO_CHECK(zpoller_wait(poller, 2000) == dealer);
    PROTO_CHECK(proto_msg_recv(&received, dealer) == 0);
    PROTO_CHECK(proto_msg_type(received) == PROTO_MSG_DONE);
    PROTO_CHECK(strcmp(proto_msg_request_id(received), "req-0123456789abcdef") == 0);
    proto_msg_destroy(&received);

    //  Garbage frames are consumed and reported, then the socket works on.
    zstr_sendm(dealer, "garbage");
    zstr_sendm(dealer, "more");
    zstr_send(dealer, "and more");
    zpoller_destroy(&poller);
    poller = zpoller_new(router, NULL);
    PROTO_CHECK(zpoller_wait(poller, 2000) == router);
    PROTO_CHECK(proto_msg_recv(&received, router) == -2);
    PROTO_CHECK(received == NULL);
    PROTO_CHECK(proto_msg_recv(&received, router) == -1); //  nothing left
    msg = proto_msg_new(PROTO_MSG_PING);
    PROTO_CHECK(proto_msg_send(&msg, dealer) == 0);
    PROTO_CHECK(zpoller_wait(poller, 2000) == router);
    PROTO_CHECK(proto_msg_recv(&received, router) == 0);
    PROTO_CHECK(proto_msg_type(received) == PROTO_MSG_PING);
    proto_msg_destroy(&received);
    zpoller_destroy(&poller);
    zsock_destroy(&dealer);
    zsock_destroy(&router);

    if (verbose)
        printf("OK (%d random frames decoded)\n", decoded);
}
