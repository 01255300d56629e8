/*  ops_admin_cli: what the admin CLI's commands share (ops_admin*.c): the parsed command
    line, the client of the admin API, tables and fields on the terminal, bodies built from
    options. Internal to ops_admin*.c; the short prefix oa_ as proto_convert_ir.h's pc_.

    The commands live in one file per group, each with its table of commands (words,
    positionals, options, the function that runs it, usage); ops_admin.c joins the tables
    in this order, finds the command a line names and runs it:
        ops_admin_catalog.c    provider, provider key, provider model, model, model rule,
                               model mappings
        ops_admin_routing.c    routing decide, breakers, sticky, health
        ops_admin_accounts.c   account (and its grants), key, usage
        ops_admin_access.c     login, logout, whoami, admin user|session|bootstrap, token, audit
        ops_admin_requests.c   requests, request-log, log-level, key-prefix
*/
#ifndef OPS_ADMIN_CLI_H_INCLUDED
#define OPS_ADMIN_CLI_H_INCLUDED

#include "ops_admin.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OA_MAX_WORDS 8    //  positional words in one command line
#define OA_MAX_OPTIONS 32 //  --options in one command line
#define OA_MAX_COLUMNS 10 //  columns in a table
#define OA_CELL 256       //  longest cell shown
#define OA_COUNT(array) ((int)(sizeof array / sizeof array[0]))

//  A parsed command line.
typedef struct {
    const char *words[OA_MAX_WORDS];    //  positional words, command words first
    int word_count;                     //  how many
    const char *names[OA_MAX_OPTIONS];  //  option names without "--"
    const char *values[OA_MAX_OPTIONS]; //  their values; NULL for flags
    int option_count;                   //  how many
} oa_args_t;

//  Where the token came from: a session replaces only what it may.
typedef enum {
    OA_TOKEN_NONE,      //  no token found
    OA_TOKEN_ENV,       //  TOLLGATE_ADMIN_TOKEN
    OA_TOKEN_SESSION,   //  DIR/admin_session, written by `tollgate login`
    OA_TOKEN_BOOTSTRAP, //  DIR/admin_token or admin.token
} oa_token_source_t;

//  Where and how to reach the admin API.
typedef struct {
    char url[512];            //  base URL without a trailing slash
    char ca[4096];            //  CA file for an https URL (TOLLGATE_ADMIN_CA, admin.tls_cert)
    char token[512];          //  admin bearer token
    bool json;                //  print the API's JSON instead of text
    char dir[4096];           //  state folder (`tollgate up --dir`)
    oa_token_source_t source; //  where token came from
    json_t *resources;        //  GET /admin/resources, fetched when first needed
} oa_client_t;

typedef int(oa_run_fn)(oa_client_t *client, oa_args_t *args, int first);

typedef struct {
    const char *words;   //  "provider key add": what selects it
    int positionals;     //  words after the command words
    const char *options; //  value options accepted, space-separated
    oa_run_fn *run;      //  sends the request, prints the answer
    const char *usage;   //  for --help and usage errors
} oa_command_t;

//  The end of a group's table of commands.
#define OA_COMMANDS_END                                                                            \
    {                                                                                              \
        NULL, 0, NULL, NULL, NULL                                                                  \
    }

//  Each group's commands, in usage order, ended by OA_COMMANDS_END.
extern const oa_command_t oa_catalog_commands[];
extern const oa_command_t oa_routing_commands[];
extern const oa_command_t oa_account_commands[];
extern const oa_command_t oa_access_commands[];
extern const oa_command_t oa_request_commands[];

typedef enum {
    OA_COL_TEXT,   //  string or number as is; null as "-"
    OA_COL_MONEY,  //  micro-units as a decimal amount
    OA_COL_LIST,   //  array joined by ","; null as "any"
    OA_COL_ROUTES, //  routes as provider:upstream, ...
    OA_COL_TIME,   //  timestamp shortened to seconds
} oa_col_kind_t;

typedef struct {
    const char *title;  //  column heading
    const char *key;    //  field of each row
    oa_col_kind_t kind; //  how to show it
} oa_column_t;

//  How a settable option becomes a field of the admin API's body. The
//  server checks values and names the field in its error; the CLI only
//  turns words into JSON ("none" lifts a limit, "any" lifts a model list).
typedef enum {
    OA_SET_TEXT,       //  as given
    OA_SET_INT,        //  a whole number, or none (null)
    OA_SET_MONEY,      //  a decimal string such as 2.50, or none (null)
    OA_SET_TAGS,       //  "a,b" as ["a","b"]; none: []
    OA_SET_MODELS,     //  "a,b" as ["a","b"]; any: null
    OA_SET_MULTIPLIER, //  a decimal (0.5) as parts per million (500000)
    OA_SET_TIME,       //  a timestamp, or none (null)
} oa_set_kind_t;

typedef struct {
    const char *option; //  without "--"
    const char *field;  //  the API's field
    oa_set_kind_t kind; //  how the value is written
} oa_settable_t;

//  The zone time columns are shown in (--tz, else TZ; "" = UTC), set by ops_admin_main.
extern char oa_zone[128];

// ---------------------------------------------------------------------------
//  The command line

//  Splits argv into words and options ("--name value", "--name=value",
//  flags --json and --help; "--" ends options). Returns 0, or -1 with a
//  message on stderr.
int oa_parse(int argc, char **argv, oa_args_t *args);

//  True for the options that take no value (--json, --help, --errors, --all, ...).
bool oa_is_flag(const char *name);

//  The last value of an option, or NULL.
const char *oa_option(oa_args_t *args, const char *name);

//  True when `name` appears as a whole word in a space-separated list.
bool oa_listed(const char *list, const char *name);

// ---------------------------------------------------------------------------
//  The admin API

//  Derives the admin base URL from an `admin.listen` address: a wildcard host is reached
//  on loopback, over https when the admin listener has TLS.
void oa_listen_url(const char *listen, bool tls, char *url, size_t url_size);

//  Finds the admin URL and token: environment first, then the state folder
//  (a session from `tollgate login` before the bootstrap token). Without
//  need_token only the URL must be found. Returns 0, or -1 with a message
//  on stderr.
int oa_discover(oa_client_t *client, const char *dir, bool need_token);

//  Sends one request (body stolen; may be NULL). On a 2xx answer prints it
//  raw with --json, sets *answer (caller decrefs) and returns 0; otherwise
//  prints the server's message on stderr and returns 1.
int oa_call(oa_client_t *client, const char *method, const char *path, json_t *body,
            json_t **answer);

//  Percent-encodes text for one URL path segment or query value (RFC 3986
//  unreserved characters stay). Caller owns return value.
char *oa_escape(const char *text);

//  Builds "/admin/PREFIX/ESCAPED(name)SUFFIX" into path.
void oa_path_of(char *path, size_t size, const char *prefix, const char *name, const char *suffix);

//  Appends `?name=value&…` to path for every option in `options` that was
//  given (option names map one to one onto query names in `names`).
void oa_add_query(char *path, size_t size, oa_args_t *args, const char *const *options,
                  const char *const *names, int count);

// ---------------------------------------------------------------------------
//  Printing

//  Renders one cell into out.
void oa_cell(json_t *row, const oa_column_t *column, char *out, size_t size);

//  Width on a terminal: UTF-8 continuation bytes take no column.
int oa_width(const char *text);

//  Prints rows as an aligned table, or a note when there are none.
void oa_table(json_t *rows, const oa_column_t *columns, int column_count, const char *none);

//  Prints rows of a resource as the server describes its lists.
void oa_resource_table(oa_client_t *client, const char *name, json_t *rows, const char *none);

//  Prints every column of one object of a resource.
void oa_resource_fields(oa_client_t *client, const char *name, json_t *object);

//  object[key] as a string ("" when missing), borrowed; as an integer (0 when missing).
const char *oa_str(json_t *object, const char *key);
json_int_t oa_int(json_t *object, const char *key);

// ---------------------------------------------------------------------------
//  Building bodies from options

//  Sets body[key] to an integer option's value. Returns 0, or -1 (usage).
int oa_put_int(json_t *body, oa_args_t *args, const char *option, const char *key);

//  Sets body[key] to a string option's value, when given.
void oa_put_str(json_t *body, oa_args_t *args, const char *option, const char *key);

//  Puts every option of `table` (ended by a NULL option) that was given into body.
//  Returns 0, or -1 (usage, said on stderr).
int oa_put_settables(json_t *body, oa_args_t *args, const oa_settable_t *table);

//  "a,b,c" as a JSON array of non-empty names.
json_t *oa_split_list(const char *text);

//  Reads a secret given as "-" from the first line of stdin, so it stays out
//  of the process list and shell history. Returns the secret (caller frees).
char *oa_secret_value(const char *value);

#endif
