/*  admin_reach: the checks of how a provider is reached (migration 0012):
    extra headers, proxies (sealed like provider secrets, shown as hints
    with any user:password replaced by "***"), the path template, and the
    statuses that fail over or are returned as they are. Used by the
    providers resource's hooks (admin_tables.c); every refusal names the
    field and changes nothing.
*/
#ifndef ADMIN_REACH_H_INCLUDED
#define ADMIN_REACH_H_INCLUDED

#include "admin_call.h"

//  Checks the reach fields present in values (fields of the providers
//  resource) and fills what they store: headers as jsonb text, proxies
//  sealed with their hints, statuses as integer[] text. `id` is the
//  provider's on a PATCH (inside its transaction: statuses are checked
//  against the stored ones), NULL on a create. Returns 0, or -1 after
//  setting the answer.
int admin_reach_check(admin_call_t *call, const char *id, const admin_field_t *fields,
                      admin_value_t *values);

//  Checks a path template ("/api/chat/completions", "/x/{model}:{action}")
//  of field `name`. Returns 0, or -1 after setting the answer.
int admin_reach_path(admin_call_t *call, const char *name, const char *path);

#endif
