#include "proto_convert_ir.h"
static json_t *s_rr(const json_t *r, bool s, char *e, size_t n)
{
    (void)r;
    (void)s;
    return pc_fail(e, n, "todo");
}
static json_t *s_rw(const json_t *r, const char *m, char *e, size_t n)
{
    (void)r;
    (void)m;
    return pc_fail(e, n, "todo");
}
static json_t *s_pr(const json_t *r, proto_usage_t *u, char *e, size_t n)
{
    (void)r;
    (void)u;
    return pc_fail(e, n, "todo");
}
static json_t *s_pw(const json_t *r, const char *m, const proto_usage_t *u)
{
    (void)r;
    (void)m;
    (void)u;
    return json_object();
}
static int s_sr(proto_convert_stream_t *s, const char *n, json_t *d)
{
    (void)n;
    (void)d;
    return pc_stream_fail(s, "todo");
}
static int s_sw(proto_convert_stream_t *s, const pc_event_t *e)
{
    (void)e;
    pc_append(s->out, "data: {}\n\n");
    return 0;
}
static const char *s_em(const json_t *b)
{
    (void)b;
    return NULL;
}
const pc_codec_t pc_gemini_codec = {
    PROTO_PROTOCOL_GEMINI, "gemini", s_rr, s_rw, s_pr, s_pw, s_sr, s_sw, s_em};
