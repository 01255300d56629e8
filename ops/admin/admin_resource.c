/*  admin_resource: the generic list / get / create / change / delete path.
    See admin_resource.h; the descriptions themselves are in admin_tables.c.

    SQL is assembled here from the descriptions (column expressions, table
    and column names: all ours) into fixed buffers; every value from a
    request is a parameter.
*/
#include "admin_resource.h"
#include "proto_check.h"
#include "proto_log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SQL_MAX 8192 //  the longest statement a description makes

// ---------------------------------------------------------------------------
//  SQL from descriptions

//  Appends formatted text at *used. Returns -1 once out is full.
static int s_append(char *out, size_t size, int *used, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

static int s_append(char *out, size_t size, int *used, const char *format, ...)
{
    if (*used < 0 || (size_t)*used >= size)
        return -1;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(out + *used, size - (size_t)*used, format, args);
    va_end(args);
    if (n < 0 || (size_t)(*used + n) >= size) {
        *used = -1;
        return -1;
    }
    *used += n;
    return 0;
}

int admin_resource_object(const admin_resource_t *resource, char *out, size_t size)
{
    int used = 0;
    s_append(out, size, &used, "json_build_object(");
    for (const admin_column_t *column = resource->columns; column->name; column++) {
        s_append(out, size, &used, "%s'%s', ", column == resource->columns ? "" : ", ",
                 column->name);
        if (column->type != ADMIN_COL_CHILD) {
            s_append(out, size, &used, "%s", column->sql);
            continue;
        }
        const admin_resource_t *child = column->child;
        char object[S_SQL_MAX];
        if (admin_resource_object(child, object, sizeof object) < 0)
            return -1;
        s_append(out, size, &used,
                 "coalesce((SELECT json_agg(%s ORDER BY %s) FROM %s WHERE %s.%s = %s.id), "
                 "'[]'::json)",
                 object, child->order, child->from, child->alias, child->parent_column,
                 resource->alias);
    }
    s_append(out, size, &used, ")");
    return used;
}

int admin_resource_by_id(const admin_resource_t *resource, char *out, size_t size)
{
    if (size < 8)
        return -1;
    memcpy(out, "SELECT ", 8);
    int used = admin_resource_object(resource, out + 7, size - 7);
    if (used < 0)
        return -1;
    used += 7;
    s_append(out, size, &used, " FROM %s WHERE %s.id = $1::bigint", resource->from,
             resource->alias);
    return used;
}

//  The by-id statement of a resource, which always fits (the self test
//  builds every one).
static void s_by_id(const admin_resource_t *resource, char *out, size_t size)
{
    int rc = admin_resource_by_id(resource, out, size);
    assert(rc > 0);
    (void)rc;
}

// ---------------------------------------------------------------------------
//  Routes

bool admin_resource_route(const admin_resource_t *resource, admin_op_t op, admin_route_t *route)
{
    static const char *const methods[] = {[ADMIN_OP_LIST] = "GET",
                                          [ADMIN_OP_CREATE] = "POST",
                                          [ADMIN_OP_GET] = "GET",
                                          [ADMIN_OP_PATCH] = "PATCH",
                                          [ADMIN_OP_DELETE] = "DELETE"};
    //  Audit actions are static strings: one per resource and change.
    static const char *const none = NULL;
    if (op == ADMIN_OP_NONE || !(resource->ops & ADMIN_BIT(op)))
        return false;
    bool collection = op == ADMIN_OP_LIST || op == ADMIN_OP_CREATE;
    *route = (admin_route_t){
        .method = methods[op],
        .pattern = collection ? resource->collection : resource->item,
        .handler = resource->own[op] ? resource->own[op] : admin_resource_serve,
        .access = op == ADMIN_OP_LIST || op == ADMIN_OP_GET ? resource->read : resource->change,
        .action = none,
        .resource = resource,
        .op = op,
    };
    if (op == ADMIN_OP_CREATE)
        route->action = resource->actions[0];
    else if (op == ADMIN_OP_PATCH)
        route->action = resource->actions[1];
    else if (op == ADMIN_OP_DELETE)
        route->action = resource->actions[2];
    return route->pattern != NULL;
}

// ---------------------------------------------------------------------------
//  Items and references

//  The id of the item in the path: by name (when the resource has one) or
//  id. Returns 0, or -1 after answering 404.
static int s_item(admin_call_t *call, const admin_resource_t *resource, char *id)
{
    if (resource->name_column)
        return admin_resolve(call, resource, call->params[0], id);
    if (admin_path_id(call, resource->title) != 0)
        return -1;
    snprintf(id, 24, "%s", call->params[0]);
    return 0;
}

//  Resolves REF fields with a column to the id they name, in place.
static int s_refs(admin_call_t *call, const admin_field_t *fields, admin_value_t *values)
{
    for (size_t i = 0; fields[i].field; i++) {
        if (fields[i].kind != ADMIN_F_REF || !fields[i].ref || !values[i].text)
            continue;
        char id[24];
        if (admin_resolve(call, fields[i].ref, values[i].text, id) != 0)
            return -1;
        snprintf(values[i].buf, sizeof values[i].buf, "%s", id);
        values[i].text = values[i].buf;
    }
    return 0;
}

//  INSERTs the present fields that have a column (and the parent) inside
//  the caller's transaction. Returns 0 with the id, or -1 answered.
static int s_insert(admin_call_t *call, const admin_resource_t *resource, const char *parent,
                    admin_value_t *values, char **id)
{
    char columns[1024], params_sql[2048];
    const char *params[ADMIN_MAX_FIELDS + 1];
    int count = 0, used_columns = 0, used_params = 0;
    if (resource->parent_column) {
        params[count++] = parent;
        s_append(columns, sizeof columns, &used_columns, "%s", resource->parent_column);
        s_append(params_sql, sizeof params_sql, &used_params, "$1::bigint");
    }
    for (size_t i = 0; resource->fields[i].field; i++) {
        const admin_field_t *field = &resource->fields[i];
        if (!values[i].present || !field->column)
            continue;
        params[count++] = values[i].text;
        char param[160];
        admin_field_param(field, count, param, sizeof param);
        s_append(columns, sizeof columns, &used_columns, "%s%s", count > 1 ? ", " : "",
                 field->column);
        s_append(params_sql, sizeof params_sql, &used_params, "%s%s", count > 1 ? ", " : "", param);
    }
    assert(used_columns >= 0 && used_params >= 0);
    char sql[S_SQL_MAX];
    int used = 0;
    if (count == 0)
        s_append(sql, sizeof sql, &used, "INSERT INTO %s DEFAULT VALUES RETURNING id",
                 resource->table);
    else
        s_append(sql, sizeof sql, &used, "INSERT INTO %s (%s) VALUES (%s) RETURNING id",
                 resource->table, columns, params_sql);
    assert(used > 0);
    return admin_sql_one(call, sql, count, params, id) == 1 && *id ? 0 : -1;
}

//  Prefixes the error message the call holds with `where`.
static void s_error_where(admin_call_t *call, const char *where)
{
    if (!where || !*where || !call->response)
        return;
    json_t *answer = json_loads(call->response, 0, NULL);
    json_t *error = json_object_get(answer, "error");
    if (error) {
        char message[700];
        snprintf(message, sizeof message, "%s%s", where,
                 json_string_value(json_object_get(error, "message")));
        json_object_set_new(error, "message", json_string(message));
        admin_respond_json(call, call->status, answer);
    } else
        json_decref(answer);
}

int admin_resource_add(admin_call_t *call, const admin_resource_t *resource, const char *parent,
                       json_t *body, const char *where, char **id)
{
    admin_value_t values[ADMIN_MAX_FIELDS] = {{0}};
    json_t *saved = call->body;
    call->body = body;
    int rc = -1;
    *id = NULL;
    if (!json_is_object(body))
        admin_invalid(call, "%sa %s must be an object", where, resource->title);
    else if (admin_read(call, resource->fields, values, ADMIN_CREATE) != 0 ||
             s_refs(call, resource->fields, values) != 0 ||
             (resource->prepare && resource->prepare(call, parent, values) != 0) ||
             s_insert(call, resource, parent, values, id) != 0 ||
             (resource->created && resource->created(call, *id, parent, values) != 0))
        s_error_where(call, where);
    else
        rc = 0;
    call->body = saved;
    admin_values_free(values, ADMIN_MAX_FIELDS);
    if (rc != 0) {
        free(*id);
        *id = NULL;
    }
    return rc;
}

// ---------------------------------------------------------------------------
//  The operations

static void s_list(admin_call_t *call, const admin_resource_t *resource)
{
    char parent[24] = "", filter[24] = "";
    const char *params[2] = {NULL, NULL};
    if (resource->parent) {
        if (admin_resolve(call, resource->parent, call->params[0], parent) != 0)
            return;
        params[0] = parent;
    }
    if (resource->filter) {
        char ident[256];
        bool present = false;
        if (admin_query_opt(call, resource->filter, ident, sizeof ident, &present) != 0)
            return;
        if (present && admin_resolve(call, resource->filter_ref, ident, filter) != 0)
            return;
        params[1] = present ? filter : NULL;
    }
    char object[S_SQL_MAX], sql[S_SQL_MAX + 1024];
    int rc = admin_resource_object(resource, object, sizeof object);
    assert(rc > 0);
    (void)rc;
    snprintf(sql, sizeof sql,
             "SELECT json_build_object('data', coalesce(json_agg(%s ORDER BY %s), '[]'::json)) "
             "FROM %s WHERE ($1::bigint IS NULL OR %s.%s = $1::bigint) AND ($2::bigint IS NULL "
             "OR %s = $2::bigint)",
             object, resource->order, resource->from, resource->alias,
             resource->parent_column ? resource->parent_column : "id",
             resource->filter_column ? resource->filter_column : "0");
    admin_respond_query(call, 200, sql, 2, params, resource->title);
}

static void s_get(admin_call_t *call, const admin_resource_t *resource)
{
    char id[24], sql[S_SQL_MAX];
    if (s_item(call, resource, id) != 0)
        return;
    s_by_id(resource, sql, sizeof sql);
    admin_respond_query(call, 200, sql, 1, (const char *[]){id}, resource->title);
}

//  The answer of a create: the object, with what is shown once first.
static void s_created(admin_call_t *call, const admin_resource_t *resource, const char *id)
{
    char sql[S_SQL_MAX], *text = NULL;
    s_by_id(resource, sql, sizeof sql);
    if (!resource->reveal) {
        admin_respond_query(call, 201, sql, 1, (const char *[]){id}, resource->title);
        return;
    }
    if (admin_sql_one(call, sql, 1, (const char *[]){id}, &text) == 1 && text) {
        json_t *object = json_loads(text, 0, NULL);
        assert(object);
        json_t *answer = json_pack("{s:O}", "id", json_object_get(object, "id"));
        resource->reveal(call, answer);
        json_object_update_missing(answer, object);
        json_decref(object);
        admin_respond_json(call, 201, answer);
    }
    free(text);
}

static void s_create(admin_call_t *call, const admin_resource_t *resource)
{
    char parent[24] = "", sql[S_SQL_MAX];
    char *id = NULL;
    if (resource->parent && admin_resolve(call, resource->parent, call->params[0], parent) != 0)
        return;
    //  The body is read (and prepared) before the transaction opens, so a
    //  slow hook (a password hash) holds no lock.
    admin_value_t values[ADMIN_MAX_FIELDS] = {{0}};
    if (admin_read(call, resource->fields, values, ADMIN_CREATE) == 0 &&
        s_refs(call, resource->fields, values) == 0 &&
        (!resource->prepare || resource->prepare(call, parent, values) == 0) &&
        admin_begin(call) == 0 && s_insert(call, resource, parent, values, &id) == 0 &&
        (!resource->created || resource->created(call, id, parent, values) == 0)) {
        s_by_id(resource, sql, sizeof sql);
        if (admin_after(call, sql, id) == 0 && admin_commit(call) == 0) {
            log_info(call->request->request_id, "admin: %s %s created by %s", resource->title, id,
                     call->who.actor);
            s_created(call, resource, id);
        }
    }
    admin_values_free(values, ADMIN_MAX_FIELDS);
    free(id);
}

static void s_patch(admin_call_t *call, const admin_resource_t *resource)
{
    char id[24], sql[S_SQL_MAX];
    admin_value_t values[ADMIN_MAX_FIELDS] = {{0}};
    const admin_field_t *fields = resource->fields;
    if (s_item(call, resource, id) != 0 || admin_read(call, fields, values, ADMIN_PATCH) != 0 ||
        s_refs(call, fields, values) != 0)
        goto done;
    if (admin_present(fields, values) == 0) {
        admin_invalid(call, "nothing to change");
        goto done;
    }
    s_by_id(resource, sql, sizeof sql);
    if (admin_begin(call) != 0 || (resource->check && resource->check(call, id, values) != 0) ||
        admin_before(call, sql, id) != 0)
        goto done;
    int rows = admin_patch(call, resource->table, resource->updated_at, fields, values, id);
    if (rows == 0)
        admin_not_found(call, "%s not found", resource->title);
    else if (rows > 0 && admin_after(call, sql, id) == 0 && admin_commit(call) == 0)
        admin_respond_query(call, 200, sql, 1, (const char *[]){id}, resource->title);
done:
    admin_values_free(values, ADMIN_MAX_FIELDS);
}

//  DELETE: an UPDATE that disables or revokes (the row stays, and answers),
//  or the row itself goes (and the answer is what it was).
static void s_delete(admin_call_t *call, const admin_resource_t *resource)
{
    char id[24], sql[S_SQL_MAX], change[512];
    if (s_item(call, resource, id) != 0)
        return;
    s_by_id(resource, sql, sizeof sql);
    if (admin_begin(call) != 0 || admin_before(call, sql, id) != 0)
        return;
    if (resource->remove == ADMIN_REMOVE_ROW)
        snprintf(change, sizeof change, "DELETE FROM %s WHERE id = $1::bigint", resource->table);
    else
        snprintf(change, sizeof change, "UPDATE %s SET %s%s WHERE id = $1::bigint", resource->table,
                 resource->remove_set, resource->updated_at ? ", updated_at = now()" : "");
    PGresult *result = admin_sql(call, change, 1, (const char *[]){id});
    if (!result)
        return;
    int rows = atoi(PQcmdTuples(result));
    PQclear(result);
    if (rows == 0) {
        admin_not_found(call, "%s not found", resource->title);
        return;
    }
    if (resource->remove == ADMIN_REMOVE_ROW) {
        json_t *gone = json_incref(call->audit_before);
        if (admin_commit(call) == 0)
            admin_respond_json(call, 200, gone);
        else
            json_decref(gone);
    } else if (admin_after(call, sql, id) == 0 && admin_commit(call) == 0) {
        log_info(call->request->request_id, "admin: %s %s %s by %s", resource->title, id,
                 resource->remove_verb, call->who.actor);
        admin_respond_query(call, 200, sql, 1, (const char *[]){id}, resource->title);
    }
}

void admin_resource_serve(admin_call_t *call)
{
    const admin_resource_t *resource = call->route->resource;
    assert(resource);
    switch (call->route->op) {
    case ADMIN_OP_LIST:
        s_list(call, resource);
        break;
    case ADMIN_OP_GET:
        s_get(call, resource);
        break;
    case ADMIN_OP_CREATE:
        s_create(call, resource);
        break;
    case ADMIN_OP_PATCH:
        s_patch(call, resource);
        break;
    case ADMIN_OP_DELETE:
        s_delete(call, resource);
        break;
    case ADMIN_OP_NONE:
        assert(false);
    }
}

// ---------------------------------------------------------------------------
//  Descriptions for the CLI and the console

static const char *s_col_name(admin_col_t type)
{
    static const char *const names[] = {
        [ADMIN_COL_ID] = "id",         [ADMIN_COL_TEXT] = "text", [ADMIN_COL_INT] = "int",
        [ADMIN_COL_MICROS] = "micros", [ADMIN_COL_BOOL] = "bool", [ADMIN_COL_TIME] = "time",
        [ADMIN_COL_LIST] = "list",     [ADMIN_COL_JSON] = "json", [ADMIN_COL_CHILD] = "child"};
    return names[type];
}

static const char *s_kind_name(admin_kind_t kind)
{
    static const char *const names[] = {
        [ADMIN_F_TEXT] = "text",   [ADMIN_F_PNAME] = "name", [ADMIN_F_UNAME] = "username",
        [ADMIN_F_ENUM] = "enum",   [ADMIN_F_INT] = "int",    [ADMIN_F_MICROS] = "money",
        [ADMIN_F_NAMES] = "names", [ADMIN_F_TAGS] = "tags",  [ADMIN_F_TIME] = "time",
        [ADMIN_F_URL] = "url",     [ADMIN_F_REF] = "ref",    [ADMIN_F_ANY] = "json",
        [ADMIN_F_SET] = "set",     [ADMIN_F_BOOL] = "bool"};
    return names[kind];
}

static json_t *s_field_schema(const admin_field_t *field)
{
    json_t *item = json_pack("{s:s,s:s,s:b,s:b,s:b,s:b}", "name", field->field, "kind",
                             s_kind_name(field->kind), "create",
                             field->use == 0 || (field->use & ADMIN_CREATE), "patch",
                             field->use == 0 || (field->use & ADMIN_PATCH), "required",
                             field->required, "nullable", field->nullable);
    if (field->kind == ADMIN_F_TEXT || field->kind == ADMIN_F_INT ||
        field->kind == ADMIN_F_MICROS) {
        json_object_set_new(item, "min", json_integer(field->min));
        json_object_set_new(item, "max", json_integer(field->max));
    }
    if (field->micros)
        json_object_set_new(item, "micros", json_string(field->micros));
    if (field->ref)
        json_object_set_new(item, "ref", json_string(field->ref->name));
    if (field->choices) {
        json_t *choices = json_array();
        for (int i = 0; field->choices[i]; i++)
            json_array_append_new(choices, json_string(field->choices[i]));
        json_object_set_new(item, "choices", choices);
    }
    return item;
}

static json_t *s_schema(const admin_resource_t *resource)
{
    json_t *columns = json_array(), *fields = json_array(), *ops = json_array();
    for (const admin_column_t *column = resource->columns; column->name; column++) {
        json_t *item =
            json_pack("{s:s,s:s}", "name", column->name, "type", s_col_name(column->type));
        json_object_set_new(item, "label",
                            column->label ? json_string(column->label) : json_null());
        if (column->child)
            json_object_set_new(item, "child", json_string(column->child->name));
        json_array_append_new(columns, item);
    }
    for (const admin_field_t *field = resource->fields; field && field->field; field++)
        if (field->kind != ADMIN_F_SET)
            json_array_append_new(fields, s_field_schema(field));
    static const char *const op_names[] = {NULL, "list", "create", "get", "patch", "delete"};
    for (int op = ADMIN_OP_LIST; op <= ADMIN_OP_DELETE; op++)
        if (resource->ops & ADMIN_BIT(op))
            json_array_append_new(ops, json_string(op_names[op]));
    json_t *schema = json_pack("{s:s,s:s,s:s?,s:s?,s:s,s:s,s:o,s:o,s:o}", "name", resource->name,
                               "title", resource->title, "collection", resource->collection, "item",
                               resource->item, "read", admin_role_name(resource->read), "change",
                               admin_role_name(resource->change), "ops", ops, "columns", columns,
                               "fields", fields);
    json_object_set_new(schema, "parent",
                        resource->parent ? json_string(resource->parent->name) : json_null());
    json_object_set_new(schema, "remove",
                        resource->remove_verb ? json_string(resource->remove_verb) : json_null());
    json_object_set_new(schema, "find_by",
                        json_string(resource->name_column ? resource->name_column : "id"));
    return schema;
}

json_t *admin_resource_schema(void)
{
    json_t *data = json_array();
    for (int i = 0; admin_resources[i]; i++)
        json_array_append_new(data, s_schema(admin_resources[i]));
    return json_pack("{s:o}", "data", data);
}

// ---------------------------------------------------------------------------
//  Self test

void admin_resource_test(bool verbose)
{
    if (verbose)
        printf(" * admin_resource: ");
    for (int i = 0; admin_resources[i]; i++) {
        const admin_resource_t *resource = admin_resources[i];
        char sql[S_SQL_MAX];
        PROTO_CHECK(admin_resource_by_id(resource, sql, sizeof sql) > 0);
        PROTO_CHECK(strncmp(sql, "SELECT json_build_object(", 25) == 0 &&
                    strstr(sql, resource->from));
        //  Every field that sets a column names its table's column once.
        for (size_t f = 0; resource->fields && resource->fields[f].field; f++) {
            PROTO_CHECK(f < ADMIN_MAX_FIELDS);
            if (resource->fields[f].kind == ADMIN_F_ENUM)
                PROTO_CHECK(resource->fields[f].choices);
            if (resource->fields[f].kind == ADMIN_F_MICROS)
                PROTO_CHECK(resource->fields[f].micros);
        }
        //  A change has an audit action; reads have none.
        for (int op = ADMIN_OP_LIST; op <= ADMIN_OP_DELETE; op++) {
            admin_route_t route;
            if (!admin_resource_route(resource, op, &route))
                continue;
            PROTO_CHECK((strcmp(route.method, "GET") == 0) == (route.action == NULL));
            PROTO_CHECK(route.pattern[0] == '/');
        }
        if (resource->ops & ADMIN_BIT(ADMIN_OP_DELETE))
            PROTO_CHECK(resource->remove != ADMIN_REMOVE_NONE && resource->remove_verb);
        if (resource->remove == ADMIN_REMOVE_SET)
            PROTO_CHECK(resource->remove_set);
        PROTO_CHECK(!resource->parent == !resource->parent_column);
        PROTO_CHECK(!resource->filter == !resource->filter_ref);
    }
    json_t *schema = admin_resource_schema();
    PROTO_CHECK(json_array_size(json_object_get(schema, "data")) >= 10);
    json_decref(schema);
    if (verbose)
        printf("OK\n");
}
