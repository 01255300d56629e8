#include "dispatch_policy.h"
#include "proto_check.h"
#include "proto_msg.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static bool s_status_fails_over(int status)
{
    //  401/403: our provider key; 404: our model name at that provider;
    //  408/429/5xx: the provider's trouble, not the request's.
    return status == 401 || status == 403 || status == 404 || status == 408 || status == 429 ||
           status >= 500 || status < 200 || (status >= 300 && status < 400);
}

dispatch_next_t dispatch_policy_next(dispatch_fail_t fail, int status, bool relayed)
{
    bool ok = fail == DISPATCH_FAIL_NONE && status >= 200 && status < 300;
    if (ok)
        return DISPATCH_NEXT_SUCCESS;
    if (relayed)
        return DISPATCH_NEXT_BROKEN;
    if (fail != DISPATCH_FAIL_NONE || s_status_fails_over(status))
        return DISPATCH_NEXT_FAILOVER;
    return DISPATCH_NEXT_RELAY;
}

dispatch_next_t dispatch_policy_provider(dispatch_next_t next, const proto_provider_t *provider,
                                         dispatch_fail_t fail, int status)
{
    if (!provider || fail != DISPATCH_FAIL_NONE ||
        (next != DISPATCH_NEXT_FAILOVER && next != DISPATCH_NEXT_RELAY))
        return next;
    int word = proto_provider_status_policy(provider, status);
    return word < 0 ? next : word ? DISPATCH_NEXT_FAILOVER : DISPATCH_NEXT_RELAY;
}

int dispatch_policy_key_status(int upstream_protocol, int status, const char *body, size_t size)
{
    if (upstream_protocol != PROTO_PROTOCOL_GEMINI || status != 400 || !body)
        return status;
    static const char *const markers[] = {"API_KEY_INVALID", "API key not valid",
                                          "API key expired"};
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (memmem(body, size, markers[i], strlen(markers[i])))
            return 401;
    return status;
}

void dispatch_policy_record(dispatch_failures_t *failures, dispatch_fail_t fail, int status,
                            uint64_t retry_after_ms)
{
    failures->failed++;
    failures->last = fail;
    failures->last_status = status;
    if (fail == DISPATCH_FAIL_NONE && status == 429) {
        failures->rate_limited++;
        if (retry_after_ms &&
            (!failures->retry_after_ms || retry_after_ms < failures->retry_after_ms))
            failures->retry_after_ms = retry_after_ms;
    }
}

int dispatch_policy_final(const dispatch_failures_t *failures, const char **code,
                          const char **message)
{
    if (failures->failed && failures->last == DISPATCH_FAIL_TIMEOUT) {
        *code = "upstream_timeout";
        *message = "The upstream provider did not answer in time.";
        return 504;
    }
    if (failures->failed && failures->rate_limited == failures->failed) {
        *code = "rate_limited";
        *message = "Every upstream provider for this model is rate limited; retry later.";
        return 429;
    }
    *code = "upstream_error";
    *message = failures->failed ? "The upstream provider failed to answer."
                                : "No usable upstream provider for this model.";
    return 502;
}

int dispatch_policy_outcome_status(dispatch_fail_t fail, int status)
{
    if (fail == DISPATCH_FAIL_TIMEOUT)
        return 504;
    if (fail != DISPATCH_FAIL_NONE)
        return 502;
    return status;
}

const char *dispatch_policy_fail_name(dispatch_fail_t fail)
{
    switch (fail) {
    case DISPATCH_FAIL_NONE:
        return "none";
    case DISPATCH_FAIL_CONNECT:
        return "connect_error";
    case DISPATCH_FAIL_TIMEOUT:
        return "timeout";
    case DISPATCH_FAIL_TRANSPORT:
        return "transport_error";
    case DISPATCH_FAIL_PROTOCOL:
        return "protocol_error";
    case DISPATCH_FAIL_TOO_LARGE:
        return "too_large";
    }
    return "?";
}

void dispatch_policy_test(bool verbose)
{
    if (verbose)
        printf(" * dispatch_policy: ");
    PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, 200, false) == DISPATCH_NEXT_SUCCESS);
    PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, 200, true) == DISPATCH_NEXT_SUCCESS);
    //  A provider's own word: 400 fails over, 429 is returned; others default.
    char error[128];
    proto_catalog_t *catalog = proto_catalog_from_json(
        "{\"providers\":[{\"id\":1,\"name\":\"p\",\"failover_statuses\":[400],"
        "\"return_statuses\":[429]}]}",
        error, sizeof error);
    PROTO_CHECK(catalog);
    const proto_provider_t *provider = proto_catalog_provider(catalog, 1);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_RELAY, provider, DISPATCH_FAIL_NONE, 400) ==
                DISPATCH_NEXT_FAILOVER);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_FAILOVER, provider, DISPATCH_FAIL_NONE,
                                         429) == DISPATCH_NEXT_RELAY);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_FAILOVER, provider, DISPATCH_FAIL_NONE,
                                         503) == DISPATCH_NEXT_FAILOVER);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_RELAY, provider, DISPATCH_FAIL_NONE, 422) ==
                DISPATCH_NEXT_RELAY);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_BROKEN, provider, DISPATCH_FAIL_NONE, 400) ==
                DISPATCH_NEXT_BROKEN);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_FAILOVER, provider, DISPATCH_FAIL_TIMEOUT,
                                         429) == DISPATCH_NEXT_FAILOVER);
    PROTO_CHECK(dispatch_policy_provider(DISPATCH_NEXT_RELAY, NULL, DISPATCH_FAIL_NONE, 400) ==
                DISPATCH_NEXT_RELAY);
    proto_catalog_destroy(&catalog);
    //  Gemini's bad key is a 400 that is ours to fail over, not the client's.
    const char *bad_key = "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass "
                          "a valid API key.\",\"status\":\"INVALID_ARGUMENT\",\"details\":[{"
                          "\"reason\":\"API_KEY_INVALID\"}]}}";
    PROTO_CHECK(dispatch_policy_key_status(PROTO_PROTOCOL_GEMINI, 400, bad_key, strlen(bad_key)) ==
                401);
    PROTO_CHECK(dispatch_policy_key_status(PROTO_PROTOCOL_OPENAI, 400, bad_key, strlen(bad_key)) ==
                400);
    const char *bad_request = "{\"error\":{\"code\":400,\"message\":\"contents is empty\"}}";
    PROTO_CHECK(dispatch_policy_key_status(PROTO_PROTOCOL_GEMINI, 400, bad_request,
                                           strlen(bad_request)) == 400);
    PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, 401, false) == DISPATCH_NEXT_FAILOVER);
    int over[] = {401, 403, 404, 408, 429, 500, 502, 503, 529, 301};
    for (size_t i = 0; i < sizeof over / sizeof over[0]; i++) {
        PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, over[i], false) ==
                    DISPATCH_NEXT_FAILOVER);
        PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, over[i], true) ==
                    DISPATCH_NEXT_BROKEN);
    }
    int relay[] = {400, 402, 409, 413, 422};
    for (size_t i = 0; i < sizeof relay / sizeof relay[0]; i++)
        PROTO_CHECK(dispatch_policy_next(DISPATCH_FAIL_NONE, relay[i], false) ==
                    DISPATCH_NEXT_RELAY);
    for (int fail = DISPATCH_FAIL_CONNECT; fail <= DISPATCH_FAIL_TOO_LARGE; fail++) {
        //  Even a 200 whose stream then broke fails over while nothing went out.
        PROTO_CHECK(dispatch_policy_next(fail, 200, false) == DISPATCH_NEXT_FAILOVER);
        PROTO_CHECK(dispatch_policy_next(fail, 200, true) == DISPATCH_NEXT_BROKEN);
        PROTO_CHECK(dispatch_policy_next(fail, 0, false) == DISPATCH_NEXT_FAILOVER);
    }

    const char *code, *message;
    dispatch_failures_t failures = {0};
    PROTO_CHECK(dispatch_policy_final(&failures, &code, &message) == 502);
    PROTO_CHECK(strstr(message, "No usable"));
    dispatch_policy_record(&failures, DISPATCH_FAIL_NONE, 429, 3000);
    dispatch_policy_record(&failures, DISPATCH_FAIL_NONE, 429, 1000);
    PROTO_CHECK(dispatch_policy_final(&failures, &code, &message) == 429);
    PROTO_CHECK(strcmp(code, "rate_limited") == 0 && failures.retry_after_ms == 1000);
    dispatch_policy_record(&failures, DISPATCH_FAIL_NONE, 500, 0);
    PROTO_CHECK(dispatch_policy_final(&failures, &code, &message) == 502);
    PROTO_CHECK(strcmp(code, "upstream_error") == 0);
    dispatch_policy_record(&failures, DISPATCH_FAIL_TIMEOUT, 0, 0);
    PROTO_CHECK(dispatch_policy_final(&failures, &code, &message) == 504);
    PROTO_CHECK(strcmp(code, "upstream_timeout") == 0);

    PROTO_CHECK(dispatch_policy_outcome_status(DISPATCH_FAIL_NONE, 429) == 429);
    PROTO_CHECK(dispatch_policy_outcome_status(DISPATCH_FAIL_TIMEOUT, 200) == 504);
    PROTO_CHECK(dispatch_policy_outcome_status(DISPATCH_FAIL_CONNECT, 0) == 502);
    PROTO_CHECK(strcmp(dispatch_policy_fail_name(DISPATCH_FAIL_TIMEOUT), "timeout") == 0);
    if (verbose)
        printf("OK\n");
}
