/*  admin_resource: one declarative table per resource, one generic path.

    A resource (providers, provider keys, models, routes, rules, accounts,
    client keys, admin users, sessions, API tokens) is described once: the
    JSON columns it answers with (name, SQL expression, type, whether lists
    show it), the fields a create or a PATCH accepts (admin_field_t: type,
    bounds, choices, whether required), the roles that may read and change
    it, what DELETE does (disable, revoke, or delete the row) and the audit
    actions that follow from its name. One generic list / get / create /
    change / delete reads that description; hooks cover what is really
    particular (sealing a provider secret, hashing a password, showing a
    new key once, an account's opening balance), and a route may keep a
    handler of its own where the rules are its own (an owner cannot
    demote the last owner).

    GET /admin/resources serves the descriptions; `tollgate ... list|show`
    and the console draw their tables and forms from them.
*/
#ifndef ADMIN_RESOURCE_H_INCLUDED
#define ADMIN_RESOURCE_H_INCLUDED

#include "admin_call.h"

//  The type of an answer's column, for people: how to show it.
typedef enum {
    ADMIN_COL_ID,     //  an id
    ADMIN_COL_TEXT,   //  text
    ADMIN_COL_INT,    //  a count or a number
    ADMIN_COL_MICROS, //  money in micro-units
    ADMIN_COL_BOOL,   //  true or false
    ADMIN_COL_TIME,   //  a timestamp
    ADMIN_COL_LIST,   //  an array of names (null: any)
    ADMIN_COL_JSON,   //  anything else
    ADMIN_COL_CHILD,  //  the rows of a child resource (a model's routes)
} admin_col_t;

typedef struct {
    const char *name;              //  JSON field
    const char *sql;               //  SQL expression over the resource's FROM
    admin_col_t type;              //  how to show it
    const char *label;             //  column heading in lists; NULL: not in lists
    const admin_resource_t *child; //  for ADMIN_COL_CHILD
} admin_column_t;

//  What DELETE does.
typedef enum {
    ADMIN_REMOVE_NONE, //  no DELETE
    ADMIN_REMOVE_SET,  //  an UPDATE (remove_set): disable, revoke; the row stays
    ADMIN_REMOVE_ROW,  //  the row goes (routes, rules: nothing refers to them)
} admin_remove_t;

//  Hooks, each optional. They return 0, or -1 after setting the answer.
//  prepare: after the body is read, before any change (validate across
//  fields, compute ADMIN_F_SET values). created: inside the transaction,
//  after the INSERT. reveal: adds what is shown once (a new key) to the
//  answer of a create. check: a PATCH's last word, inside the transaction.
typedef int(admin_prepare_fn)(admin_call_t *call, const char *parent, admin_value_t *values);
typedef int(admin_created_fn)(admin_call_t *call, const char *id, const char *parent,
                              admin_value_t *values);
typedef void(admin_reveal_fn)(admin_call_t *call, json_t *answer);
typedef int(admin_check_fn)(admin_call_t *call, const char *id, admin_value_t *values);

struct admin_resource {
    const char *name;                   //  "provider_key": audit actions, the schema's key
    const char *title;                  //  "provider key": messages
    const char *collection;             //  "/admin/providers/{provider}/keys"; NULL: no list
    const char *item;                   //  "/admin/provider-keys/{id}"
    const char *table;                  //  "provider_keys"
    const char *from;                   //  "provider_keys k JOIN providers p ON ..."
    const char *alias;                  //  "k": the table's alias in `from`
    const char *name_column;            //  items are found by this column too; NULL: ids only
    const char *order;                  //  ORDER BY of lists
    const admin_column_t *columns;      //  the answer's columns; NULL-terminated
    const admin_field_t *fields;        //  what create and PATCH accept; NULL-terminated
    const admin_resource_t *parent;     //  the collection's {param} resolves to this
    const char *parent_column;          //  and is this column ("provider_id")
    const char *filter;                 //  a list's optional ?filter= ("account")
    const char *filter_column;          //  the column it narrows ("k.account_id")
    const admin_resource_t *filter_ref; //  what its name or id resolves to
    admin_access_t read;                //  least role that reads
    admin_access_t change;              //  least role that changes
    unsigned ops;                       //  bits of the admin_op_t this resource serves
    admin_remove_t remove;              //  what DELETE does
    const char *remove_set;             //  ADMIN_REMOVE_SET: "status = 'disabled'"
    const char *remove_verb;            //  "disable", "revoke", "delete", for people
    const char *actions[3];             //  audit actions of create, PATCH and DELETE
    bool updated_at;                    //  the table has updated_at
    admin_prepare_fn *prepare;          //  create: before the change
    admin_created_fn *created;          //  create: after the INSERT
    admin_reveal_fn *reveal;            //  create: shown once
    admin_check_fn *check;              //  PATCH: before the UPDATE
    admin_handler_fn *own[6];           //  a handler of its own per admin_op_t, else generic
};
#define ADMIN_BIT(op) (1u << (op))
#define ADMIN_CRUD                                                                                 \
    (ADMIN_BIT(ADMIN_OP_LIST) | ADMIN_BIT(ADMIN_OP_CREATE) | ADMIN_BIT(ADMIN_OP_GET) |             \
     ADMIN_BIT(ADMIN_OP_PATCH) | ADMIN_BIT(ADMIN_OP_DELETE))

//  The resources, in the order GET /admin/resources lists them.
extern const admin_resource_t admin_providers, admin_provider_keys, admin_models, admin_routes,
    admin_rules, admin_accounts, admin_keys, admin_users, admin_sessions, admin_tokens,
    admin_grants, admin_model_settings;
extern const admin_resource_t *const admin_resources[];

//  Serves the route's operation on its resource (the generic path).
void admin_resource_serve(admin_call_t *call);

//  Writes the SQL of one object as JSON (json_build_object over columns)
//  into out. Returns the length, or -1 when out is too small.
int admin_resource_object(const admin_resource_t *resource, char *out, size_t size);

//  Writes "SELECT <object> FROM <from> WHERE <alias>.id = $1::bigint".
int admin_resource_by_id(const admin_resource_t *resource, char *out, size_t size);

//  Adds one object described by `body` under `parent` (or NULL) inside the
//  caller's open transaction, as a create would (fields, references,
//  prepare, INSERT, created). `where` prefixes error messages
//  ("routes[2]: "). Returns 0 with the new id in *id (caller frees), or -1
//  after setting the answer.
int admin_resource_add(admin_call_t *call, const admin_resource_t *resource, const char *parent,
                       json_t *body, const char *where, char **id);

//  The route a resource serves for (method, collection or item): fills
//  route and returns true when it serves it.
bool admin_resource_route(const admin_resource_t *resource, admin_op_t op, admin_route_t *route);

//  GET /admin/resources: every description. Caller owns return value.
json_t *admin_resource_schema(void);

//  Self test: every description is consistent and its SQL well formed.
void admin_resource_test(bool verbose);

#endif
