/*  ops_admin: admin CLI commands over the admin API. See ops_admin.h.

    One table of commands; each names its words, how many positional
    arguments it takes, which --options it accepts, and a function that
    builds the request and prints the answer. Parsing is strict: an unknown
    option or a missing argument is a usage error (exit 2) before anything
    is sent.
*/
#include "ops_admin.h"
#include "ops_tz.h"
#include "proto_config.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define S_DEFAULT_DIR "./var"
#define S_MAX_WORDS 8    //  positional words in one command line
#define S_MAX_OPTIONS 32 //  --options in one command line
#define S_TIMEOUT_S 30   //  longest an admin call may take
#define S_MAX_COLUMNS 10 //  columns in a table
#define S_CELL 256       //  longest cell shown

//  A parsed command line.
typedef struct {
    const char *words[S_MAX_WORDS];    //  positional words, command words first
    int word_count;                    //  how many
    const char *names[S_MAX_OPTIONS];  //  option names without "--"
    const char *values[S_MAX_OPTIONS]; //  their values; NULL for flags
    int option_count;                  //  how many
} s_args_t;

//  Where the token came from: a session replaces only what it may.
typedef enum {
    S_TOKEN_NONE,      //  no token found
    S_TOKEN_ENV,       //  TOLLGATE_ADMIN_TOKEN
    S_TOKEN_SESSION,   //  DIR/admin_session, written by `tollgate login`
    S_TOKEN_BOOTSTRAP, //  DIR/admin_token or admin.token
} s_token_source_t;

//  Where and how to reach the admin API.
typedef struct {
    char url[512];           //  base URL without a trailing slash
    char ca[4096];           //  CA file for an https URL (TOLLGATE_ADMIN_CA, admin.tls_cert)
    char token[512];         //  admin bearer token
    bool json;               //  print the API's JSON instead of text
    char dir[4096];          //  state folder (`tollgate up --dir`)
    s_token_source_t source; //  where token came from
    json_t *resources;       //  GET /admin/resources, fetched when first needed
} s_client_t;

typedef int(s_run_fn)(s_client_t *client, s_args_t *args, int first);

typedef struct {
    const char *words;   //  "provider key add": what selects it
    int positionals;     //  words after the command words
    const char *options; //  value options accepted, space-separated
    s_run_fn *run;       //  sends the request, prints the answer
    const char *usage;   //  for --help and usage errors
} s_command_t;

// ---------------------------------------------------------------------------
//  Pure helpers

void ops_admin_format_micros(int64_t micros, char *out, size_t out_size)
{
    //  Through uint64 so INT64_MIN has a magnitude too.
    uint64_t magnitude = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros;
    char fraction[8];
    snprintf(fraction, sizeof fraction, "%06" PRIu64, magnitude % 1000000);
    size_t length = 6;
    while (length > 2 && fraction[length - 1] == '0')
        fraction[--length] = '\0';
    snprintf(out, out_size, "%s%" PRIu64 ".%s", micros < 0 ? "-" : "", magnitude / 1000000,
             fraction);
}

//  Percent-encodes text for one URL path segment or query value (RFC 3986
//  unreserved characters stay). Caller owns return value.
static char *s_escape(const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = malloc(strlen(text) * 3 + 1);
    assert(out);
    char *cursor = out;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (isalnum(*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~')
            *cursor++ = (char)*c;
        else {
            *cursor++ = '%';
            *cursor++ = hex[*c >> 4];
            *cursor++ = hex[*c & 15];
        }
    }
    *cursor = '\0';
    return out;
}

static bool s_is_flag(const char *name)
{
    return strcmp(name, "json") == 0 || strcmp(name, "help") == 0 || strcmp(name, "errors") == 0 ||
           strcmp(name, "all") == 0;
}

//  Splits argv into words and options ("--name value", "--name=value",
//  flags --json and --help; "--" ends options). Returns 0, or -1 with a
//  message on stderr.
static int s_parse(int argc, char **argv, s_args_t *args)
{
    memset(args, 0, sizeof *args);
    bool options_done = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || strncmp(arg, "--", 2) != 0) {
            if (args->word_count == S_MAX_WORDS) {
                fprintf(stderr, "tollgate: too many arguments\n");
                return -1;
            }
            args->words[args->word_count++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = true;
            continue;
        }
        if (args->option_count == S_MAX_OPTIONS) {
            fprintf(stderr, "tollgate: too many options\n");
            return -1;
        }
        const char *name = arg + 2;
        const char *equals = strchr(name, '=');
        const char *value = NULL;
        if (equals) {
            //  Keep the name NUL-terminated: point into argv after cutting it.
            argv[i][equals - arg] = '\0';
            value = equals + 1;
        } else if (!s_is_flag(name)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tollgate: --%s needs a value\n", name);
                return -1;
            }
            value = argv[++i];
        }
        if (s_is_flag(name) && value) {
            fprintf(stderr, "tollgate: --%s takes no value\n", name);
            return -1;
        }
        args->names[args->option_count] = name;
        args->values[args->option_count++] = value;
    }
    return 0;
}

//  The last value of an option, or NULL.
static const char *s_option(s_args_t *args, const char *name)
{
    const char *value = NULL;
    for (int i = 0; i < args->option_count; i++)
        if (strcmp(args->names[i], name) == 0)
            value = args->values[i] ? args->values[i] : "";
    return value;
}

//  True when `name` appears as a whole word in a space-separated list.
static bool s_listed(const char *list, const char *name)
{
    size_t length = strlen(name);
    for (const char *c = list; (c = strstr(c, name)); c += length)
        if ((c == list || c[-1] == ' ') && (c[length] == ' ' || c[length] == '\0'))
            return true;
    return false;
}

//  Derives the admin base URL from an `admin.listen` address: a
//  wildcard host is reached on loopback; https when the listener has a
//  certificate.
static void s_listen_url(const char *listen, bool tls, char *url, size_t url_size)
{
    const char *colon = strrchr(listen, ':');
    const char *port = colon ? colon + 1 : "8081";
    size_t host_length = colon ? (size_t)(colon - listen) : strlen(listen);
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)host_length, listen);
    if (!*host || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0)
        snprintf(host, sizeof host, "[::1]");
    snprintf(url, url_size, "%s://%s:%s", tls ? "https" : "http", host, port);
}

//  Reads the first line of a file into out. Returns 0, or -1 when there is
//  no file or no line.
static int s_read_line(const char *path, char *out, size_t size)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return -1;
    *out = '\0';
    if (fgets(out, (int)size, file))
        out[strcspn(out, "\r\n")] = '\0';
    fclose(file);
    return *out ? 0 : -1;
}

//  Finds the admin URL and token: environment first, then the state folder
//  (a session from `tollgate login` before the bootstrap token). Without
//  need_token only the URL must be found. Returns 0, or -1 with a message
//  on stderr.
static int s_discover(s_client_t *client, const char *dir, bool need_token)
{
    const char *url = getenv("TOLLGATE_ADMIN_URL");
    const char *token = getenv("TOLLGATE_ADMIN_TOKEN");
    const char *ca = getenv("TOLLGATE_ADMIN_CA");
    snprintf(client->dir, sizeof client->dir, "%s", dir);
    if (ca && *ca)
        snprintf(client->ca, sizeof client->ca, "%s", ca);
    if (url && *url)
        snprintf(client->url, sizeof client->url, "%s", url);
    if (token && *token) {
        snprintf(client->token, sizeof client->token, "%s", token);
        client->source = S_TOKEN_ENV;
    }
    char path[4096];
    if (!*client->token) {
        snprintf(path, sizeof path, "%s/admin_session", dir);
        if (s_read_line(path, client->token, sizeof client->token) == 0)
            client->source = S_TOKEN_SESSION;
    }
    if (*client->url && *client->token)
        goto done;

    proto_config_t *config = NULL;
    snprintf(path, sizeof path, "%s/tollgate.conf", dir);
    FILE *probe = fopen(path, "r");
    if (probe) {
        fclose(probe);
        config = proto_config_new();
        char error[512];
        if (proto_config_load_file(config, path, error, sizeof error) != 0) {
            fprintf(stderr, "tollgate: %s\n", error);
            proto_config_destroy(&config);
            return -1;
        }
    }
    if (!*client->url && config) {
        //  Our own cluster's certificate is the one to trust (curl takes
        //  a leaf in the CA file as an anchor).
        const char *cert = proto_config_str(config, "admin.tls_cert");
        s_listen_url(proto_config_str(config, "admin.listen"), *cert, client->url,
                     sizeof client->url);
        if (*cert && !*client->ca)
            snprintf(client->ca, sizeof client->ca, "%s", cert);
    }
    if (!*client->token) {
        snprintf(path, sizeof path, "%s/admin_token", dir);
        s_read_line(path, client->token, sizeof client->token);
        if (!*client->token && config)
            snprintf(client->token, sizeof client->token, "%s",
                     proto_config_str(config, "admin.token"));
        if (*client->token)
            client->source = S_TOKEN_BOOTSTRAP;
    }
    proto_config_destroy(&config);
    if (!*client->url || (need_token && !*client->token)) {
        fprintf(stderr,
                "tollgate: no admin %s: set TOLLGATE_ADMIN_URL and TOLLGATE_ADMIN_TOKEN, or "
                "point --dir at the folder `tollgate up` made (tried %s)\n",
                !*client->url ? "URL" : "token", dir);
        return -1;
    }
done : {
    size_t length = strlen(client->url);
    while (length && client->url[length - 1] == '/')
        client->url[--length] = '\0';
}
    return 0;
}

// ---------------------------------------------------------------------------
//  HTTP

typedef struct {
    char *data;  //  bytes received
    size_t size; //  how many
} s_buffer_t;

static size_t s_collect(char *data, size_t size, size_t count, void *arg)
{
    s_buffer_t *buffer = arg;
    size_t bytes = size * count;
    char *grown = realloc(buffer->data, buffer->size + bytes + 1);
    if (!grown)
        return 0;
    buffer->data = grown;
    memcpy(buffer->data + buffer->size, data, bytes);
    buffer->size += bytes;
    buffer->data[buffer->size] = '\0';
    return bytes;
}

//  Sends one request (body stolen; may be NULL). On a 2xx answer prints it
//  raw with --json, sets *answer (caller decrefs) and returns 0; otherwise
//  prints the server's message on stderr and returns 1.
static int s_call(s_client_t *client, const char *method, const char *path, json_t *body,
                  json_t **answer)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    char url[4096];
    snprintf(url, sizeof url, "%s%s", client->url, path);
    char authorization[600];
    snprintf(authorization, sizeof authorization, "Authorization: Bearer %s", client->token);

    CURL *curl = curl_easy_init();
    assert(curl);
    struct curl_slist *headers = curl_slist_append(NULL, authorization);
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: application/json");
    s_buffer_t received = {NULL, 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (*client->ca)
        curl_easy_setopt(curl, CURLOPT_CAINFO, client->ca);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &received);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)S_TIMEOUT_S);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (text)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, text);
    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    free(text);

    int rc = 1;
    json_t *parsed = received.data ? json_loads(received.data, 0, NULL) : NULL;
    if (code != CURLE_OK)
        fprintf(stderr, "tollgate: cannot reach the admin API at %s: %s\n", client->url,
                curl_easy_strerror(code));
    else if (status < 200 || status > 299) {
        const char *message =
            json_string_value(json_object_get(json_object_get(parsed, "error"), "message"));
        if (message)
            fprintf(stderr, "tollgate: %s (HTTP %ld)\n", message, status);
        else
            fprintf(stderr, "tollgate: the admin API answered HTTP %ld: %.200s\n", status,
                    received.data ? received.data : "");
    } else if (!parsed)
        fprintf(stderr, "tollgate: the admin API answered something that is not JSON\n");
    else {
        if (client->json)
            fputs(received.data, stdout);
        *answer = parsed;
        parsed = NULL;
        rc = 0;
    }
    json_decref(parsed);
    free(received.data);
    return rc;
}

// ---------------------------------------------------------------------------
//  Printing

typedef enum {
    S_COL_TEXT,   //  string or number as is; null as "-"
    S_COL_MONEY,  //  micro-units as a decimal amount
    S_COL_LIST,   //  array joined by ","; null as "any"
    S_COL_ROUTES, //  routes as provider:upstream, ...
    S_COL_TIME,   //  timestamp shortened to seconds
} s_col_kind_t;

typedef struct {
    const char *title; //  column heading
    const char *key;   //  field of each row
    s_col_kind_t kind; //  how to show it
} s_column_t;

//  The zone time columns are shown in (--tz, else TZ; "" = UTC). The CLI
//  runs one command per process.
static char s_zone[128];

//  Renders one cell into out.
static void s_cell(json_t *row, const s_column_t *column, char *out, size_t size)
{
    json_t *value = json_object_get(row, column->key);
    *out = '\0';
    if (!value || json_is_null(value)) {
        snprintf(out, size, "%s", column->kind == S_COL_LIST ? "any" : "-");
        return;
    }
    switch (column->kind) {
    case S_COL_MONEY:
        if (json_is_integer(value)) {
            ops_admin_format_micros(json_integer_value(value), out, size);
            return;
        }
        break;
    case S_COL_LIST:
    case S_COL_ROUTES: {
        size_t index;
        json_t *item;
        json_array_foreach(value, index, item)
        {
            size_t used = strlen(out);
            const char *separator = index ? (column->kind == S_COL_LIST ? "," : ", ") : "";
            if (column->kind == S_COL_LIST)
                snprintf(out + used, size - used, "%s%s", separator,
                         json_string_value(item) ? json_string_value(item) : "?");
            else
                snprintf(out + used, size - used, "%s%s:%s%s", separator,
                         json_string_value(json_object_get(item, "provider")),
                         json_string_value(json_object_get(item, "upstream_model")),
                         strcmp(json_string_value(json_object_get(item, "status")), "active")
                             ? " (disabled)"
                             : "");
        }
        if (json_array_size(value) == 0)
            snprintf(out, size, "%s", column->kind == S_COL_LIST ? "none" : "-");
        return;
    }
    case S_COL_TIME:
        if (json_is_string(value)) {
            ops_tz_format(json_string_value(value), s_zone, out, size);
            return;
        }
        break;
    case S_COL_TEXT:
        break;
    }
    if (json_is_string(value))
        snprintf(out, size, "%s", json_string_value(value));
    else if (json_is_integer(value))
        snprintf(out, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
    else if (json_is_boolean(value))
        snprintf(out, size, "%s", json_is_true(value) ? "yes" : "no");
    else
        snprintf(out, size, "?");
}

//  Width on a terminal: UTF-8 continuation bytes take no column.
static int s_width(const char *text)
{
    int width = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        width += (*c & 0xc0) != 0x80;
    return width;
}

//  Prints rows as an aligned table, or a note when there are none.
static void s_table(json_t *rows, const s_column_t *columns, int column_count, const char *none)
{
    if (json_array_size(rows) == 0) {
        printf("%s\n", none);
        return;
    }
    assert(column_count <= S_MAX_COLUMNS);
    int widths[S_MAX_COLUMNS];
    char cell[S_CELL];
    for (int c = 0; c < column_count; c++)
        widths[c] = s_width(columns[c].title);
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row) for (int c = 0; c < column_count; c++)
    {
        s_cell(row, &columns[c], cell, sizeof cell);
        if (s_width(cell) > widths[c])
            widths[c] = s_width(cell);
    }
    for (int c = 0; c < column_count; c++)
        printf("%s%-*s", c ? "  " : "", c + 1 < column_count ? widths[c] : 0, columns[c].title);
    printf("\n");
    json_array_foreach(rows, index, row)
    {
        for (int c = 0; c < column_count; c++) {
            s_cell(row, &columns[c], cell, sizeof cell);
            int pad = c + 1 < column_count ? widths[c] - s_width(cell) : 0;
            printf("%s%s%*s", c ? "  " : "", cell, pad, "");
        }
        printf("\n");
    }
}

//  Prints the named fields of an object, one per line.
static void s_fields(json_t *object, const s_column_t *columns, int column_count)
{
    char cell[S_CELL];
    for (int c = 0; c < column_count; c++) {
        s_cell(object, &columns[c], cell, sizeof cell);
        printf("%-18s %s\n", columns[c].title, cell);
    }
}

#define S_COUNT(array) ((int)(sizeof array / sizeof array[0]))

static int s_call(s_client_t *client, const char *method, const char *path, json_t *body,
                  json_t **answer);

//  The server's description of a resource ("provider", "key", ...), from
//  GET /admin/resources: the same tables it validates with, so list and
//  show print what the server has. Borrowed from the client; NULL (with the
//  reason on stderr) when it cannot be had.
static json_t *s_described(s_client_t *client, const char *name)
{
    if (!client->resources) {
        bool json = client->json;
        client->json = false; //  the description is ours, not the command's output
        int rc = s_call(client, "GET", "/admin/resources", NULL, &client->resources);
        client->json = json;
        if (rc != 0)
            return NULL;
    }
    size_t index;
    json_t *resource;
    json_array_foreach(json_object_get(client->resources, "data"), index, resource)
    {
        if (strcmp(json_string_value(json_object_get(resource, "name")), name) == 0)
            return resource;
    }
    fprintf(stderr, "tollgate: the admin API does not describe '%s'\n", name);
    return NULL;
}

//  Columns from a description: those with a list label (or, for `all`,
//  every column, titled by its name). Returns how many (at most max).
static int s_described_columns(json_t *resource, bool all, s_column_t *columns, int max)
{
    int count = 0;
    size_t index;
    json_t *column;
    json_array_foreach(json_object_get(resource, "columns"), index, column)
    {
        const char *label = json_string_value(json_object_get(column, "label"));
        const char *type = json_string_value(json_object_get(column, "type"));
        if ((!label && !all) || count == max)
            continue;
        s_col_kind_t kind = strcmp(type, "micros") == 0  ? S_COL_MONEY
                            : strcmp(type, "time") == 0  ? S_COL_TIME
                            : strcmp(type, "list") == 0  ? S_COL_LIST
                            : strcmp(type, "child") == 0 ? S_COL_ROUTES
                                                         : S_COL_TEXT;
        const char *name = json_string_value(json_object_get(column, "name"));
        columns[count++] = (s_column_t){all ? name : label, name, kind};
    }
    return count;
}

//  Prints rows of a resource as the server describes its lists.
static void s_resource_table(s_client_t *client, const char *name, json_t *rows, const char *none)
{
    s_column_t columns[S_MAX_COLUMNS];
    json_t *resource = s_described(client, name);
    if (resource)
        s_table(rows, columns, s_described_columns(resource, false, columns, S_MAX_COLUMNS), none);
}

//  Prints every column of one object of a resource.
static void s_resource_fields(s_client_t *client, const char *name, json_t *object)
{
    s_column_t columns[64];
    json_t *resource = s_described(client, name);
    if (resource)
        s_fields(object, columns, s_described_columns(resource, true, columns, 64));
}

static const char *s_str(json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value ? value : "";
}

static json_int_t s_int(json_t *object, const char *key)
{
    return json_integer_value(json_object_get(object, key));
}

// ---------------------------------------------------------------------------
//  Building bodies from options

//  Sets body[key] to an integer option's value. Returns 0, or -1 (usage).
static int s_put_int(json_t *body, s_args_t *args, const char *option, const char *key)
{
    const char *value = s_option(args, option);
    if (!value)
        return 0;
    char *end;
    errno = 0;
    long long number = strtoll(value, &end, 10);
    if (!*value || *end || errno) {
        fprintf(stderr, "tollgate: --%s must be an integer\n", option);
        return -1;
    }
    json_object_set_new(body, key, json_integer(number));
    return 0;
}

static void s_put_str(json_t *body, s_args_t *args, const char *option, const char *key)
{
    const char *value = s_option(args, option);
    if (value)
        json_object_set_new(body, key, json_string(value));
}

//  "a,b,c" as a JSON array of non-empty names.
static json_t *s_split_list(const char *text)
{
    json_t *list = json_array();
    char *copy = strdup(text);
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ')
            item++;
        if (*item)
            json_array_append_new(list, json_string(item));
    }
    free(copy);
    return list;
}

//  Reads a secret given as "-" from the first line of stdin, so it stays out
//  of the process list and shell history. Returns the secret (caller frees).
static char *s_secret_value(const char *value)
{
    if (strcmp(value, "-") != 0)
        return strdup(value);
    char *line = NULL;
    size_t size = 0;
    ssize_t length = getline(&line, &size, stdin);
    if (length < 0) {
        free(line);
        return strdup("");
    }
    line[strcspn(line, "\r\n")] = '\0';
    return line;
}

//  How a settable option becomes a field of the admin API's body. The
//  server checks values and names the field in its error; the CLI only
//  turns words into JSON ("none" lifts a limit, "any" lifts a model list).
typedef enum {
    S_SET_TEXT,       //  as given
    S_SET_INT,        //  a whole number, or none (null)
    S_SET_MONEY,      //  a decimal string such as 2.50, or none (null)
    S_SET_TAGS,       //  "a,b" as ["a","b"]; none: []
    S_SET_MODELS,     //  "a,b" as ["a","b"]; any: null
    S_SET_MULTIPLIER, //  a decimal (0.5) as parts per million (500000)
    S_SET_TIME,       //  a timestamp, or none (null)
} s_set_kind_t;

typedef struct {
    const char *option; //  without "--"
    const char *field;  //  the API's field
    s_set_kind_t kind;  //  how the value is written
} s_settable_t;

//  "0.5" as 500000: at most 6 decimal places, no sign. Returns 0, or -1.
static int s_parse_ppm(const char *text, int64_t *ppm)
{
    int64_t whole = 0, fraction = 0;
    int places = -1;
    if (!*text)
        return -1;
    for (const char *c = text; *c; c++) {
        if (*c == '.' && places < 0) {
            places = 0;
            continue;
        }
        if (!isdigit((unsigned char)*c) || (places >= 0 && places == 6) ||
            (places < 0 && whole > INT64_C(1000000000)))
            return -1;
        if (places < 0)
            whole = whole * 10 + (*c - '0');
        else {
            fraction = fraction * 10 + (*c - '0');
            places++;
        }
    }
    if (places == 0)
        return -1;
    for (int i = places < 0 ? 0 : places; i < 6; i++)
        fraction *= 10;
    *ppm = whole * 1000000 + fraction;
    return 0;
}

//  Puts every option of `table` that was given into body. Returns 0, or -1
//  after a usage message naming the option.
static int s_put_settables(json_t *body, s_args_t *args, const s_settable_t *table)
{
    for (const s_settable_t *set = table; set->option; set++) {
        const char *value = s_option(args, set->option);
        if (!value)
            continue;
        bool none = strcmp(value, "none") == 0;
        json_t *json = NULL;
        switch (set->kind) {
        case S_SET_TEXT:
            json = json_string(value);
            break;
        case S_SET_INT: {
            char *end;
            errno = 0;
            long long number = strtoll(value, &end, 10);
            if (!none && (!*value || *end || errno)) {
                fprintf(stderr, "tollgate: --%s takes a whole number, or none\n", set->option);
                return -1;
            }
            json = none ? json_null() : json_integer(number);
            break;
        }
        case S_SET_MONEY:
        case S_SET_TIME:
            json = none ? json_null() : json_string(value);
            break;
        case S_SET_TAGS:
            json = none ? json_array() : s_split_list(value);
            break;
        case S_SET_MODELS:
            json = strcmp(value, "any") == 0 ? json_null() : s_split_list(value);
            break;
        case S_SET_MULTIPLIER: {
            int64_t ppm = 0;
            if (s_parse_ppm(value, &ppm) != 0) {
                fprintf(stderr,
                        "tollgate: --%s takes a decimal multiplier of list price such as 0.5 "
                        "(1 = list price, 0 = free)\n",
                        set->option);
                return -1;
            }
            json = json_integer(ppm);
            break;
        }
        }
        json_object_set_new(body, set->field, json);
    }
    return 0;
}

//  What a model's prices and policies are set with, on add and set.
static const s_settable_t s_model_settables[] = {
    {"price-in", "price_in", S_SET_MONEY},
    {"price-out", "price_out", S_SET_MONEY},
    {"price-cache-read", "price_cache_read", S_SET_MONEY},
    {"price-cache-write", "price_cache_write", S_SET_MONEY},
    {"price-cache-write-1h", "price_cache_write_1h", S_SET_MONEY},
    {"price-request", "price_request", S_SET_MONEY},
    {"long-context-threshold", "long_context_threshold", S_SET_INT},
    {"long-price-in", "long_price_in", S_SET_MONEY},
    {"long-price-out", "long_price_out", S_SET_MONEY},
    {"force-capabilities", "force_capabilities", S_SET_TAGS},
    {NULL, NULL, S_SET_TEXT}};
#define S_MODEL_OPTIONS                                                                            \
    "price-in price-out price-cache-read price-cache-write price-cache-write-1h price-request "    \
    "long-context-threshold long-price-in long-price-out force-capabilities"
#define S_MODEL_USAGE                                                                              \
    "[--price-in P] [--price-out P] [--price-cache-read P] [--price-cache-write P] "               \
    "[--price-cache-write-1h P|none] [--price-request P] [--long-context-threshold TOKENS|none] "  \
    "[--long-price-in P|none] [--long-price-out P|none] [--force-capabilities TAG,TAG|none]"

//  Limits shared by accounts and keys (docs/billing.md, "The limits").
#define S_LIMIT_SETTABLES                                                                          \
    {"rpm-limit", "rpm_limit", S_SET_INT}, {"tpm-limit", "tpm_limit", S_SET_INT},                  \
        {"concurrency-limit", "concurrency_limit", S_SET_INT},                                     \
        {"daily-spend", "daily_spend", S_SET_MONEY},                                               \
        {"monthly-spend", "monthly_spend", S_SET_MONEY},                                           \
    {                                                                                              \
        "force-capabilities", "force_capabilities", S_SET_TAGS                                     \
    }
#define S_LIMIT_OPTIONS                                                                            \
    "rpm-limit tpm-limit concurrency-limit daily-spend monthly-spend force-capabilities"
#define S_LIMIT_USAGE                                                                              \
    "[--rpm-limit N|none] [--tpm-limit N|none] [--concurrency-limit N|none] "                      \
    "[--daily-spend AMOUNT|none] [--monthly-spend AMOUNT|none] [--force-capabilities "             \
    "TAG,TAG|none]"

static const s_settable_t s_account_settables[] = {
    S_LIMIT_SETTABLES,
    {"status", "status", S_SET_TEXT},
    {"models", "allowed_models", S_SET_MODELS},
    {"multiplier", "multiplier_ppm", S_SET_MULTIPLIER},
    {NULL, NULL, S_SET_TEXT}};

static const s_settable_t s_key_settables[] = {S_LIMIT_SETTABLES,
                                               {"name", "name", S_SET_TEXT},
                                               {"status", "status", S_SET_TEXT},
                                               {"models", "models", S_SET_MODELS},
                                               {"expires-at", "expires_at", S_SET_TIME},
                                               {NULL, NULL, S_SET_TEXT}};

static const s_settable_t s_provider_key_settables[] = {
    {"multiplier", "multiplier_ppm", S_SET_MULTIPLIER}, {NULL, NULL, S_SET_TEXT}};

//  A limit for people: "none" for null.
static void s_limit_text(json_t *object, const char *key, bool money, char *out, size_t size)
{
    json_t *value = json_object_get(object, key);
    if (!json_is_integer(value))
        snprintf(out, size, "none");
    else if (money)
        ops_admin_format_micros(json_integer_value(value), out, size);
    else
        snprintf(out, size, "%" JSON_INTEGER_FORMAT, json_integer_value(value));
}

//  "rpm 10, tpm none, ..." of an account or a key.
static void s_limits_line(json_t *object, char *out, size_t size)
{
    char rpm[32], tpm[32], concurrency[32], daily[32], monthly[32];
    s_limit_text(object, "rpm_limit", false, rpm, sizeof rpm);
    s_limit_text(object, "tpm_limit", false, tpm, sizeof tpm);
    s_limit_text(object, "concurrency_limit", false, concurrency, sizeof concurrency);
    s_limit_text(object, "daily_spend_micros", true, daily, sizeof daily);
    s_limit_text(object, "monthly_spend_micros", true, monthly, sizeof monthly);
    snprintf(out, size, "rpm %s, tpm %s, concurrency %s, daily spend %s, monthly spend %s", rpm,
             tpm, concurrency, daily, monthly);
}

//  "a,b,c" as a JSON array of integers into body[key]; "none" is [].
//  Returns 0, or -1 (usage).
static int s_put_ints(json_t *body, s_args_t *args, const char *option, const char *key)
{
    const char *value = s_option(args, option);
    if (!value)
        return 0;
    json_t *list = json_array();
    if (strcmp(value, "none") != 0) {
        json_t *items = s_split_list(value);
        size_t index;
        json_t *item;
        json_array_foreach(items, index, item)
        {
            char *end;
            errno = 0;
            long long number = strtoll(json_string_value(item), &end, 10);
            if (*end || errno) {
                fprintf(stderr, "tollgate: --%s takes statuses such as 429,503 (or none)\n",
                        option);
                json_decref(items);
                json_decref(list);
                return -1;
            }
            json_array_append_new(list, json_integer(number));
        }
        json_decref(items);
    }
    json_object_set_new(body, key, list);
    return 0;
}

//  How a provider is reached (docs/routing.md "Reaching providers as they
//  are"): --header 'Name: value' and --proxy URL repeat (each set replaces
//  the provider's whole list; "none" empties it; --proxy - reads proxies
//  from stdin, one a line, so a password stays out of the process list),
//  --path P|default, --blocked-models a,b|none, --failover-statuses and
//  --return-statuses 429,503|none. Returns 0, or -1 (usage).
static int s_put_reach(json_t *body, s_args_t *args)
{
    json_t *headers = NULL, *proxies = NULL;
    for (int i = 0; i < args->option_count; i++) {
        const char *value = args->values[i] ? args->values[i] : "";
        if (strcmp(args->names[i], "header") == 0) {
            if (!headers)
                headers = json_object();
            if (strcmp(value, "none") == 0)
                continue;
            const char *colon = strchr(value, ':');
            if (!colon || colon == value) {
                fprintf(stderr, "tollgate: --header takes 'Name: value' (or none)\n");
                json_decref(headers);
                json_decref(proxies);
                return -1;
            }
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(colon - value), value);
            const char *text = colon + 1;
            while (*text == ' ')
                text++;
            json_object_set_new(headers, name, json_string(text));
        } else if (strcmp(args->names[i], "proxy") == 0) {
            if (!proxies)
                proxies = json_array();
            if (strcmp(value, "none") == 0)
                continue;
            if (strcmp(value, "-") == 0) {
                char *line = NULL;
                size_t size = 0;
                while (getline(&line, &size, stdin) >= 0) {
                    line[strcspn(line, "\r\n")] = '\0';
                    if (*line)
                        json_array_append_new(proxies, json_string(line));
                }
                if (line)
                    memset(line, 0, size);
                free(line);
            } else
                json_array_append_new(proxies, json_string(value));
        }
    }
    if (headers)
        json_object_set_new(body, "headers", headers);
    if (proxies)
        json_object_set_new(body, "proxies", proxies);
    const char *path = s_option(args, "path");
    if (path)
        json_object_set_new(body, "path",
                            strcmp(path, "default") == 0 ? json_null() : json_string(path));
    const char *blocked = s_option(args, "blocked-models");
    if (blocked)
        json_object_set_new(body, "blocked_models",
                            strcmp(blocked, "none") == 0 ? json_array() : s_split_list(blocked));
    if (s_put_ints(body, args, "failover-statuses", "failover_statuses") ||
        s_put_ints(body, args, "return-statuses", "return_statuses"))
        return -1;
    return 0;
}

// ---------------------------------------------------------------------------
//  Commands. `first` indexes the first positional after the command words.

static int s_provider_add(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    s_put_str(body, args, "protocol", "protocol");
    s_put_str(body, args, "base-url", "base_url");
    if (!s_option(args, "protocol") || !s_option(args, "base-url")) {
        fprintf(stderr, "tollgate: provider add needs --protocol and --base-url\n");
        json_decref(body);
        return 2;
    }
    if (s_put_int(body, args, "priority", "priority") ||
        s_put_int(body, args, "weight", "weight") || s_put_reach(body, args)) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/providers", body, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s added (id %" JSON_INTEGER_FORMAT "): %s at %s\n", s_str(answer, "name"),
               s_int(answer, "id"), s_str(answer, "protocol"), s_str(answer, "base_url"));
    json_decref(answer);
    return rc;
}

static int s_provider_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/providers", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "provider", json_object_get(answer, "data"), "no providers");
    json_decref(answer);
    return rc;
}

static int s_provider_show(s_client_t *client, s_args_t *args, int first)
{
    char *name = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s", name);
    free(name);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_fields(client, "provider", answer);
    json_decref(answer);
    return rc;
}

static int s_provider_key_add(s_client_t *client, s_args_t *args, int first)
{
    const char *secret_option = s_option(args, "secret");
    if (!secret_option) {
        fprintf(stderr, "tollgate: provider key add needs --secret SECRET (or --secret - to "
                        "read it from stdin)\n");
        return 2;
    }
    char *secret = s_secret_value(secret_option);
    json_t *body = json_pack("{s:s}", "secret", secret);
    memset(secret, 0, strlen(secret));
    free(secret);
    s_put_str(body, args, "name", "name");
    if (s_put_int(body, args, "priority", "priority") ||
        s_put_int(body, args, "weight", "weight") ||
        s_put_settables(body, args, s_provider_key_settables)) {
        json_decref(body);
        return 2;
    }
    char *provider = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s/keys", provider);
    free(provider);
    json_t *answer = NULL;
    int rc = s_call(client, "POST", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("key %" JSON_INTEGER_FORMAT " added to provider %s (secret %s)\n",
               s_int(answer, "id"), s_str(answer, "provider"), s_str(answer, "secret_hint"));
    json_decref(answer);
    return rc;
}

static int s_provider_key_list(s_client_t *client, s_args_t *args, int first)
{
    char *provider = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/providers/%s/keys", provider);
    free(provider);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "provider_key", json_object_get(answer, "data"), "no keys");
    json_decref(answer);
    return rc;
}

static int s_model_add(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    json_t *routes = json_array();
    for (int i = 0; i < args->option_count; i++) {
        if (strcmp(args->names[i], "route") != 0)
            continue;
        //  Provider names cannot hold ':', so the first one ends the
        //  provider and the upstream model may contain more ("llama3:8b").
        const char *value = args->values[i];
        const char *colon = strchr(value, ':');
        json_t *route = json_object();
        json_object_set_new(route, "provider",
                            colon ? json_stringn(value, (size_t)(colon - value))
                                  : json_string(value));
        if (colon && colon[1])
            json_object_set_new(route, "upstream_model", json_string(colon + 1));
        json_array_append_new(routes, route);
    }
    json_object_set_new(body, "routes", routes);
    if (s_put_settables(body, args, s_model_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/models", body, &answer);
    if (rc == 0 && !client->json) {
        char in[32], out[32];
        ops_admin_format_micros(s_int(answer, "price_in_micros"), in, sizeof in);
        ops_admin_format_micros(s_int(answer, "price_out_micros"), out, sizeof out);
        printf("model %s added (id %" JSON_INTEGER_FORMAT "), %zu route(s), price %s in / %s "
               "out per million tokens\n",
               s_str(answer, "name"), s_int(answer, "id"),
               json_array_size(json_object_get(answer, "routes")), in, out);
    }
    json_decref(answer);
    return rc;
}

static int s_model_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/models", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "model", json_object_get(answer, "data"), "no models");
    json_decref(answer);
    return rc;
}

static int s_model_show(s_client_t *client, s_args_t *args, int first)
{
    char *name = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/models/%s", name);
    free(name);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_fields(client, "model", answer);
    json_decref(answer);
    return rc;
}

//  GET /admin/accounts/NAME, or POST to one of its sub-paths.
static int s_account_call(s_client_t *client, const char *method, const char *account,
                          const char *suffix, json_t *body, json_t **answer)
{
    char *name = s_escape(account);
    char path[2048];
    snprintf(path, sizeof path, "/admin/accounts/%s%s", name, suffix);
    free(name);
    return s_call(client, method, path, body, answer);
}

static int s_account_add(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "name", args->words[first]);
    s_put_str(body, args, "balance", "balance");
    s_put_str(body, args, "currency", "currency");
    if (s_put_settables(body, args, s_account_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/accounts", body, &answer);
    if (rc == 0 && !client->json) {
        char balance[32];
        ops_admin_format_micros(s_int(answer, "balance_micros"), balance, sizeof balance);
        printf("account %s added (id %" JSON_INTEGER_FORMAT "), balance %s %s\n",
               s_str(answer, "name"), s_int(answer, "id"), balance, s_str(answer, "currency"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/accounts", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "account", json_object_get(answer, "data"), "no accounts");
    json_decref(answer);
    return rc;
}

static int s_account_show(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_account_call(client, "GET", args->words[first], "", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_fields(client, "account", answer);
    json_decref(answer);
    return rc;
}

static int s_account_topup(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "amount", args->words[first + 1]);
    s_put_str(body, args, "reason", "reason");
    json_t *answer = NULL;
    int rc = s_account_call(client, "POST", args->words[first], "/topup", body, &answer);
    if (rc == 0 && !client->json) {
        json_t *entry = json_object_get(answer, "journal_entry");
        char amount[32], balance[32];
        ops_admin_format_micros(s_int(entry, "amount_micros"), amount, sizeof amount);
        ops_admin_format_micros(s_int(answer, "balance_micros"), balance, sizeof balance);
        printf("account %s: %s of %s, balance now %s %s (journal entry %" JSON_INTEGER_FORMAT ")\n",
               s_str(answer, "name"), s_str(entry, "kind"), amount, balance,
               s_str(answer, "currency"), s_int(entry, "id"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    if (s_put_settables(body, args, s_account_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_account_call(client, "PATCH", args->words[first], "", body, &answer);
    if (rc == 0 && !client->json) {
        char limits[256], multiplier[32];
        s_limits_line(answer, limits, sizeof limits);
        ops_admin_format_micros(s_int(answer, "multiplier_ppm"), multiplier, sizeof multiplier);
        printf("account %s: %s, multiplier %s, %s\n", s_str(answer, "name"),
               s_str(answer, "status"), multiplier, limits);
    }
    json_decref(answer);
    return rc;
}

static const s_settable_t s_grant_settables[] = {{"amount", "amount", S_SET_MONEY},
                                                 {"every", "every", S_SET_TEXT},
                                                 {"starts-at", "starts_at", S_SET_TIME},
                                                 {"reason", "reason", S_SET_TEXT},
                                                 {NULL, NULL, S_SET_TEXT}};

//  A recurring credit: the ledger grants it once per period (docs/billing.md).
static int s_account_grant(s_client_t *client, s_args_t *args, int first)
{
    if (!s_option(args, "amount") || !s_option(args, "every")) {
        fprintf(stderr, "tollgate: account grant needs --amount AMOUNT and --every "
                        "day|week|month\n");
        return 2;
    }
    json_t *body = json_object();
    if (s_put_settables(body, args, s_grant_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_account_call(client, "POST", args->words[first], "/grants", body, &answer);
    if (rc == 0 && !client->json) {
        char amount[32];
        ops_admin_format_micros(s_int(answer, "amount_micros"), amount, sizeof amount);
        printf("grant %" JSON_INTEGER_FORMAT ": account %s gets %s every %s from the %s of %.10s "
               "(the ledger grants each %s once)\n",
               s_int(answer, "id"), s_str(answer, "account"), amount, s_str(answer, "every"),
               s_str(answer, "every"), s_str(answer, "starts_at"), s_str(answer, "every"));
    }
    json_decref(answer);
    return rc;
}

static int s_account_grant_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_account_call(client, "GET", args->words[first], "/grants", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "grant", json_object_get(answer, "data"), "no grants");
    json_decref(answer);
    return rc;
}

static int s_account_grant_rm(s_client_t *client, s_args_t *args, int first)
{
    char *id = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/grants/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("grant %" JSON_INTEGER_FORMAT " of account %s removed; %" JSON_INTEGER_FORMAT
               " period(s) were granted\n",
               s_int(answer, "id"), s_str(answer, "account"), s_int(answer, "granted_periods"));
    json_decref(answer);
    return rc;
}

static int s_key_create(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "account", args->words[first]);
    if (s_put_settables(body, args, s_key_settables) != 0) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/keys", body, &answer);
    if (rc == 0 && !client->json)
        //  The key is the last line, alone, so scripts can take it with tail -1.
        printf("key %" JSON_INTEGER_FORMAT " created for account %s; it is shown only now:\n%s\n",
               s_int(answer, "id"), s_str(answer, "account"), s_str(answer, "key"));
    json_decref(answer);
    return rc;
}

static int s_key_revoke(s_client_t *client, s_args_t *args, int first)
{
    const char *ident = args->words[first];
    json_t *answer = NULL;
    int rc;
    //  A full key travels in the body, never in the URL, which servers log.
    //  Anything but an id is a key, whatever its prefix (settings
    //  'client_keys').
    if (strspn(ident, "0123456789") != strlen(ident) || !*ident)
        rc =
            s_call(client, "POST", "/admin/keys/revoke", json_pack("{s:s}", "key", ident), &answer);
    else {
        char *id = s_escape(ident);
        char path[2048];
        snprintf(path, sizeof path, "/admin/keys/%s/revoke", id);
        free(id);
        rc = s_call(client, "POST", path, NULL, &answer);
    }
    if (rc == 0 && !client->json)
        printf("key %" JSON_INTEGER_FORMAT " (%s) of account %s revoked\n", s_int(answer, "id"),
               s_str(answer, "prefix"), s_str(answer, "account"));
    json_decref(answer);
    return rc;
}

//  A key is named by its id here: its secret never travels in a URL.
static int s_key_set(s_client_t *client, s_args_t *args, int first)
{
    const char *word = args->words[first];
    if (!*word || strspn(word, "0123456789") != strlen(word)) {
        fprintf(stderr, "tollgate: key set takes the key's id (tollgate key list), not the key\n");
        return 2;
    }
    json_t *body = json_object();
    if (s_put_settables(body, args, s_key_settables) != 0) {
        json_decref(body);
        return 2;
    }
    char *id = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/keys/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char limits[256];
        s_limits_line(answer, limits, sizeof limits);
        const char *expires = json_string_value(json_object_get(answer, "expires_at"));
        printf("key %" JSON_INTEGER_FORMAT " (%s) of account %s: %s, expires %s, %s\n",
               s_int(answer, "id"), s_str(answer, "prefix"), s_str(answer, "account"),
               s_str(answer, "status"), expires ? expires : "never", limits);
    }
    json_decref(answer);
    return rc;
}

static int s_key_list(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/keys";
    const char *account = s_option(args, "account");
    if (account) {
        char *escaped = s_escape(account);
        snprintf(path, sizeof path, "/admin/keys?account=%s", escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "key", json_object_get(answer, "data"), "no keys");
    json_decref(answer);
    return rc;
}

static const s_column_t s_usage_columns[] = {
    {"STARTED", "started_at", S_COL_TIME}, {"REQUEST", "request_id", S_COL_TEXT},
    {"ACCOUNT", "account_id", S_COL_TEXT}, {"MODEL", "model", S_COL_TEXT},
    {"STATUS", "status", S_COL_TEXT},      {"IN", "tokens_in", S_COL_TEXT},
    {"OUT", "tokens_out", S_COL_TEXT},     {"COST", "cost_micros", S_COL_MONEY},
    {"MS", "latency_ms", S_COL_TEXT}};

static int s_usage(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/usage?";
    const char *names[] = {"account", "limit", "before"};
    for (int i = 0; i < 3; i++) {
        const char *value = s_option(args, names[i]);
        if (!value)
            continue;
        char *escaped = s_escape(value);
        snprintf(path + strlen(path), sizeof path - strlen(path), "%s=%s&", names[i], escaped);
        free(escaped);
    }
    path[strlen(path) - 1] = '\0'; //  the last '&' or the '?'
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        s_table(json_object_get(answer, "data"), s_usage_columns, S_COUNT(s_usage_columns),
                "no usage");
        const char *next = json_string_value(json_object_get(answer, "next_before"));
        if (next)
            printf("older: --before %s\n", next);
    }
    json_decref(answer);
    return rc;
}

// ---------------------------------------------------------------------------
//  Admin access: login, users, sessions, tokens, audit, request logs

//  Appends `?name=value&…` to path for every option in `options` that was
//  given (option names map one to one onto query names in `names`).
static void s_add_query(char *path, size_t size, s_args_t *args, const char *const *options,
                        const char *const *names, int count)
{
    bool first = strchr(path, '?') == NULL;
    for (int i = 0; i < count; i++) {
        const char *value = s_option(args, options[i]);
        if (!value)
            continue;
        char *escaped = s_escape(*value ? value : "1");
        snprintf(path + strlen(path), size - strlen(path), "%s%s=%s", first ? "?" : "&", names[i],
                 escaped);
        first = false;
        free(escaped);
    }
}

//  Reads a password: from the option's value, the first line of stdin for
//  "-", or (no option) a prompt on the terminal without echo, else stdin.
//  Returns it (caller frees and clears), or NULL with a message.
static char *s_password(s_args_t *args, const char *prompt)
{
    const char *value = s_option(args, "password");
    if (value)
        return s_secret_value(value);
    if (!isatty(STDIN_FILENO))
        return s_secret_value("-");
    struct termios saved, quiet;
    bool echo_off = tcgetattr(STDIN_FILENO, &saved) == 0;
    if (echo_off) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fprintf(stderr, "%s", prompt);
    char *password = s_secret_value("-");
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    fprintf(stderr, "\n");
    return password;
}

static void s_free_secret(char *secret)
{
    if (secret) {
        memset(secret, 0, strlen(secret));
        free(secret);
    }
}

//  Writes text to DIR/name with mode 0600 (via a temporary file and a
//  rename, so a reader never sees half of it). Returns 0, or -1 with a
//  message.
static int s_write_private(s_client_t *client, const char *name, const char *text)
{
    char path[4200], temporary[4300];
    if (mkdir(client->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "tollgate: cannot create %s: %s\n", client->dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", client->dir, name);
    snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "tollgate: cannot write %s: %s\n", temporary, strerror(errno));
        return -1;
    }
    size_t length = strlen(text);
    bool ok = fchmod(fd, 0600) == 0 && write(fd, text, length) == (ssize_t)length &&
              write(fd, "\n", 1) == 1;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(temporary, path) != 0) {
        fprintf(stderr, "tollgate: cannot write %s: %s\n", path, strerror(errno));
        unlink(temporary);
        return -1;
    }
    return 0;
}

static int s_login(s_client_t *client, s_args_t *args, int first)
{
    const char *username = args->words[first];
    json_t *body = json_pack("{s:s}", "username", username);
    if (s_put_int(body, args, "ttl", "expires_in_s")) {
        json_decref(body);
        return 2;
    }
    char prompt[256];
    snprintf(prompt, sizeof prompt, "password for %s: ", username);
    char *password = s_password(args, prompt);
    json_object_set_new(body, "password", json_string(password));
    s_free_secret(password);
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/login", body, &answer);
    if (rc == 0) {
        const char *token = s_str(answer, "token");
        rc = s_write_private(client, "admin_session", token) == 0 ? 0 : 1;
        json_t *user = json_object_get(answer, "user");
        if (rc == 0 && !client->json)
            printf("logged in as %s (%s) until %s; the session is in %s/admin_session\n",
                   s_str(user, "username"), s_str(user, "role"), s_str(answer, "expires_at"),
                   client->dir);
    }
    json_decref(answer);
    return rc;
}

//  Ends the session on the server (if it is still alive) and forgets it.
static int s_logout(s_client_t *client, s_args_t *args, int first)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/admin_session", client->dir);
    if (client->source != S_TOKEN_SESSION) {
        fprintf(stderr, "tollgate: not logged in (no %s)\n", path);
        return 1;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/logout", NULL, &answer);
    json_decref(answer);
    //  A session the server no longer knows is over anyway: forget it too.
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "tollgate: cannot remove %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (!client->json)
        printf("logged out%s\n", rc == 0 ? "" : " (the session had already ended)");
    else if (rc != 0)
        printf("{\"logged_out\":true}\n");
    return 0;
}

static int s_whoami(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/me", NULL, &answer);
    if (rc == 0 && !client->json) {
        const char *expires = json_string_value(json_object_get(answer, "expires_at"));
        printf("%s (%s, %s)%s%s\n", s_str(answer, "name"), s_str(answer, "kind"),
               s_str(answer, "role"), expires ? " until " : "", expires ? expires : "");
    }
    json_decref(answer);
    return rc;
}

static int s_user_add(s_client_t *client, s_args_t *args, int first)
{
    const char *role = s_option(args, "role");
    if (!role) {
        fprintf(stderr, "tollgate: admin user add needs --role owner|operator|viewer\n");
        return 2;
    }
    char prompt[256];
    snprintf(prompt, sizeof prompt, "new password for %s: ", args->words[first]);
    char *password = s_password(args, prompt);
    json_t *body = json_pack("{s:s,s:s,s:s}", "username", args->words[first], "password", password,
                             "role", role);
    s_free_secret(password);
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/users", body, &answer);
    if (rc == 0 && !client->json)
        printf("admin user %s added (id %" JSON_INTEGER_FORMAT ", %s)\n", s_str(answer, "username"),
               s_int(answer, "id"), s_str(answer, "role"));
    json_decref(answer);
    return rc;
}

static int s_user_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/users", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "user", json_object_get(answer, "data"), "no admin users");
    json_decref(answer);
    return rc;
}

//  PATCH /admin/users/NAME with body (stolen); prints what it became.
static int s_user_patch(s_client_t *client, const char *name, json_t *body)
{
    char *escaped = s_escape(name);
    char path[2048];
    snprintf(path, sizeof path, "/admin/users/%s", escaped);
    free(escaped);
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("admin user %s: %s, %s\n", s_str(answer, "username"), s_str(answer, "role"),
               s_str(answer, "status"));
    json_decref(answer);
    return rc;
}

static int s_user_disable(s_client_t *client, s_args_t *args, int first)
{
    return s_user_patch(client, args->words[first], json_pack("{s:s}", "status", "disabled"));
}

static int s_user_enable(s_client_t *client, s_args_t *args, int first)
{
    return s_user_patch(client, args->words[first], json_pack("{s:s}", "status", "active"));
}

static int s_user_role(s_client_t *client, s_args_t *args, int first)
{
    return s_user_patch(client, args->words[first],
                        json_pack("{s:s}", "role", args->words[first + 1]));
}

static int s_user_password(s_client_t *client, s_args_t *args, int first)
{
    char prompt[256];
    snprintf(prompt, sizeof prompt, "new password for %s: ", args->words[first]);
    char *password = s_password(args, prompt);
    json_t *body = json_pack("{s:s}", "password", password);
    s_free_secret(password);
    return s_user_patch(client, args->words[first], body);
}

static int s_session_list(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/sessions";
    static const char *const options[] = {"user", "all"};
    s_add_query(path, sizeof path, args, options, options, 2);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "session", json_object_get(answer, "data"), "no sessions");
    json_decref(answer);
    return rc;
}

static int s_session_revoke(s_client_t *client, s_args_t *args, int first)
{
    char *id = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/sessions/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("session %" JSON_INTEGER_FORMAT " of %s revoked\n", s_int(answer, "id"),
               s_str(answer, "username"));
    json_decref(answer);
    return rc;
}

//  A new bootstrap token. When the old one came from DIR/admin_token, the
//  new one replaces it there, so the folder keeps working.
static int s_bootstrap_rotate(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/bootstrap/rotate", NULL, &answer);
    if (rc == 0) {
        const char *token = s_str(answer, "token");
        bool saved = false;
        char path[4200];
        snprintf(path, sizeof path, "%s/admin_token", client->dir);
        if (access(path, F_OK) == 0) {
            if (s_write_private(client, "admin_token", token) != 0)
                rc = 1;
            saved = rc == 0;
        }
        if (!client->json) {
            if (saved)
                printf("bootstrap token rotated; the new one is in %s\n", path);
            else
                printf("bootstrap token rotated; it is shown only now:\n%s\n", token);
        }
    }
    json_decref(answer);
    return rc;
}

static int s_token_create(s_client_t *client, s_args_t *args, int first)
{
    const char *role = s_option(args, "role");
    if (!role) {
        fprintf(stderr, "tollgate: token create needs --role owner|operator|viewer\n");
        return 2;
    }
    json_t *body = json_pack("{s:s,s:s}", "name", args->words[first], "role", role);
    s_put_str(body, args, "expires-at", "expires_at");
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/tokens", body, &answer);
    if (rc == 0 && !client->json)
        //  The token is the last line, alone, so scripts can take it with tail -1.
        printf("token %" JSON_INTEGER_FORMAT " (%s, %s) created; it is shown only now:\n%s\n",
               s_int(answer, "id"), s_str(answer, "name"), s_str(answer, "role"),
               s_str(answer, "token"));
    json_decref(answer);
    return rc;
}

static int s_token_list(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/tokens", NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "token", json_object_get(answer, "data"), "no tokens");
    json_decref(answer);
    return rc;
}

static int s_token_revoke(s_client_t *client, s_args_t *args, int first)
{
    char *id = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/tokens/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("token %" JSON_INTEGER_FORMAT " (%s) revoked\n", s_int(answer, "id"),
               s_str(answer, "name"));
    json_decref(answer);
    return rc;
}

static const s_column_t s_audit_columns[] = {
    {"ID", "id", S_COL_TEXT},         {"AT", "at", S_COL_TIME},
    {"ACTOR", "actor", S_COL_TEXT},   {"FROM", "client_ip", S_COL_TEXT},
    {"ACTION", "action", S_COL_TEXT}, {"TARGET", "target", S_COL_TEXT}};

static int s_audit(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/audit";
    static const char *const options[] = {"actor", "action", "limit", "before"};
    s_add_query(path, sizeof path, args, options, options, 4);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        s_table(json_object_get(answer, "data"), s_audit_columns, S_COUNT(s_audit_columns),
                "no audit entries");
        json_t *next = json_object_get(answer, "next_before");
        if (json_is_integer(next))
            printf("older: --before %" JSON_INTEGER_FORMAT "\n", json_integer_value(next));
    }
    json_decref(answer);
    return rc;
}

static const s_column_t s_request_columns[] = {
    {"STARTED", "started_at", S_COL_TIME}, {"REQUEST", "request_id", S_COL_TEXT},
    {"ACCOUNT", "account", S_COL_TEXT},    {"MODEL", "model", S_COL_TEXT},
    {"PROVIDER", "provider", S_COL_TEXT},  {"STATUS", "status", S_COL_TEXT},
    {"TRIES", "attempts", S_COL_TEXT},     {"MS", "latency_ms", S_COL_TEXT},
    {"TTFB", "ttfb_ms", S_COL_TEXT},       {"COST", "cost_micros", S_COL_MONEY}};

static const s_column_t s_request_detail[] = {{"request", "request_id", S_COL_TEXT},
                                              {"started", "started_at", S_COL_TIME},
                                              {"account", "account", S_COL_TEXT},
                                              {"key", "key_prefix", S_COL_TEXT},
                                              {"model", "model", S_COL_TEXT},
                                              {"provider", "provider", S_COL_TEXT},
                                              {"upstream model", "upstream_model", S_COL_TEXT},
                                              {"status", "status", S_COL_TEXT},
                                              {"attempts", "attempts", S_COL_TEXT},
                                              {"latency ms", "latency_ms", S_COL_TEXT},
                                              {"ttfb ms", "ttfb_ms", S_COL_TEXT},
                                              {"tokens in", "tokens_in", S_COL_TEXT},
                                              {"tokens out", "tokens_out", S_COL_TEXT},
                                              {"cost", "cost_micros", S_COL_MONEY}};

static int s_requests(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/requests";
    static const char *const options[] = {"account", "key",   "model",  "provider", "status",
                                          "errors",  "since", "before", "limit"};
    s_add_query(path, sizeof path, args, options, options, 9);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        s_table(json_object_get(answer, "data"), s_request_columns, S_COUNT(s_request_columns),
                "no requests");
        const char *next = json_string_value(json_object_get(answer, "next_before"));
        if (next)
            printf("older: --before %s\n", next);
    }
    json_decref(answer);
    return rc;
}

//  The request's spans, one line each: time of day, duration, what, where,
//  and the outcome (docs/observability.md).
static void s_request_timeline(json_t *spans)
{
    if (!json_array_size(spans))
        return;
    printf("timeline\n");
    size_t index;
    json_t *span;
    json_array_foreach(spans, index, span)
    {
        const char *at = s_str(span, "started_at");
        char line[512];
        int n = snprintf(line, sizeof line, "  %.12s %9.3f ms  %-20s %-9s",
                         strlen(at) > 11 ? at + 11 : at,
                         json_number_value(json_object_get(span, "duration_ms")),
                         s_str(span, "name"), s_str(span, "program"));
        static const char *fields[] = {"status",         "attempt",    "provider",
                                       "upstream_model", "error_code", NULL};
        for (int i = 0; fields[i] && n > 0 && (size_t)n < sizeof line; i++) {
            json_t *value = json_object_get(span, fields[i]);
            if (json_is_integer(value))
                n += snprintf(line + n, sizeof line - (size_t)n, " %s=%" JSON_INTEGER_FORMAT,
                              fields[i], json_integer_value(value));
            else if (json_is_string(value))
                n += snprintf(line + n, sizeof line - (size_t)n, " %s=%s", fields[i],
                              json_string_value(value));
        }
        printf("%s\n", line);
    }
}

static int s_request_show(s_client_t *client, s_args_t *args, int first)
{
    char *id = s_escape(args->words[first]);
    char path[2048];
    snprintf(path, sizeof path, "/admin/requests/%s", id);
    free(id);
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        int rows = S_COUNT(s_request_detail);
        for (int i = 0; i < rows; i++) {
            char cell[S_CELL];
            s_cell(answer, &s_request_detail[i], cell, sizeof cell);
            printf("%-16s %s\n", s_request_detail[i].title, cell);
        }
        json_t *details = json_object_get(answer, "details");
        printf("%-16s %s\n", "details",
               json_is_object(details) ? s_str(details, "level") : "none (level base)");
        s_request_timeline(json_object_get(answer, "spans"));
    }
    json_decref(answer);
    return rc;
}

static int s_request_log(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/settings/request-log", NULL, &answer);
    if (rc == 0 && !client->json)
        printf("level %s, bodies up to %" JSON_INTEGER_FORMAT " bytes, kept %" JSON_INTEGER_FORMAT
               " days\n",
               s_str(answer, "level"), s_int(answer, "max_body_bytes"),
               s_int(answer, "retention_days"));
    json_decref(answer);
    return rc;
}

static int s_request_log_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    s_put_str(body, args, "level", "level");
    if (s_put_int(body, args, "max-body-bytes", "max_body_bytes") ||
        s_put_int(body, args, "retention-days", "retention_days")) {
        json_decref(body);
        return 2;
    }
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", "/admin/settings/request-log", body, &answer);
    if (rc == 0 && !client->json)
        printf("request log: level %s, bodies up to %" JSON_INTEGER_FORMAT
               " bytes, kept %" JSON_INTEGER_FORMAT " days\n",
               s_str(answer, "level"), s_int(answer, "max_body_bytes"),
               s_int(answer, "retention_days"));
    json_decref(answer);
    return rc;
}

//  The log level in force: for every program, then each program's own.
static void s_log_level_print(json_t *answer)
{
    json_t *level = json_object_get(answer, "level");
    printf("every program: %s\n",
           json_is_string(level) ? json_string_value(level) : "configured log_level");
    const char *program;
    json_t *value;
    json_object_foreach(json_object_get(answer, "programs"), program, value)
        printf("%s: %s\n", program, json_string_value(value));
}

static int s_log_level(s_client_t *client, s_args_t *args, int first)
{
    json_t *answer = NULL;
    int rc = s_call(client, "GET", "/admin/settings/log-level", NULL, &answer);
    if (rc == 0 && !client->json)
        s_log_level_print(answer);
    json_decref(answer);
    return rc;
}

static int s_log_level_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "level", args->words[first]);
    s_put_str(body, args, "program", "program");
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", "/admin/settings/log-level", body, &answer);
    if (rc == 0 && !client->json)
        s_log_level_print(answer);
    json_decref(answer);
    return rc;
}

//  settings 'client_keys': the prefix new client keys get.
static int s_key_prefix(s_client_t *client, s_args_t *args, int first)
{
    bool set = args->word_count > first;
    json_t *answer = NULL;
    int rc = set ? s_call(client, "PATCH", "/admin/settings/client-keys",
                          json_pack("{s:s}", "prefix", args->words[first]), &answer)
                 : s_call(client, "GET", "/admin/settings/client-keys", NULL, &answer);
    if (rc == 0 && !client->json)
        printf("client keys are made with the prefix %s%s\n", s_str(answer, "prefix"),
               set ? " from now on (keys made before keep working)" : "");
    json_decref(answer);
    return rc;
}

// ---------------------------------------------------------------------------
//  Routing: decisions explained, breakers, bindings, health, rules

//  Builds "/admin/PREFIX/ESCAPED(name)SUFFIX" into path.
static void s_path_of(char *path, size_t size, const char *prefix, const char *name,
                      const char *suffix)
{
    char *escaped = s_escape(name);
    snprintf(path, size, "%s/%s%s", prefix, escaped, suffix);
    free(escaped);
}

//  An object's fields as "a=1 b=2", for a table cell.
static void s_pairs_text(json_t *object, char *out, size_t size)
{
    const char *name;
    json_t *value;
    *out = '\0';
    json_object_foreach(object, name, value)
    {
        size_t used = strlen(out);
        if (json_is_integer(value))
            snprintf(out + used, size - used, "%s%s=%" JSON_INTEGER_FORMAT, used ? " " : "", name,
                     json_integer_value(value));
        else if (json_is_boolean(value))
            snprintf(out + used, size - used, "%s%s=%s", used ? " " : "", name,
                     json_is_true(value) ? "yes" : "no");
        else if (json_is_string(value))
            snprintf(out + used, size - used, "%s%s=%s", used ? " " : "", name,
                     json_string_value(value));
    }
}

//  Adds the text columns routing tables show: "key_text" (id and name),
//  "score_text" and "routers_text" (indexes of the routers that hold it).
static void s_routing_cells(json_t *rows)
{
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row)
    {
        char text[S_CELL];
        json_t *key = json_object_get(row, "provider_key_id");
        if (json_is_integer(key)) {
            const char *name = s_str(row, "key");
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT "%s%s%s", json_integer_value(key),
                     *name ? " (" : "", name, *name ? ")" : "");
            json_object_set_new(row, "key_text", json_string(text));
        }
        if (json_is_object(json_object_get(row, "score"))) {
            s_pairs_text(json_object_get(row, "score"), text, sizeof text);
            json_object_set_new(row, "score_text", json_string(text));
        }
        json_t *routers = json_object_get(row, "routers");
        if (json_is_array(routers)) {
            *text = '\0';
            size_t at;
            json_t *item;
            json_array_foreach(routers, at, item)
            {
                size_t used = strlen(text);
                snprintf(text + used, sizeof text - used, "%s%" JSON_INTEGER_FORMAT, at ? "," : "",
                         json_integer_value(item));
            }
            json_object_set_new(row, "routers_text", json_string(text));
        }
    }
}

static const s_column_t s_candidate_columns[] = {
    {"RANK", "rank", S_COL_TEXT},     {"PROVIDER", "provider", S_COL_TEXT},
    {"KEY", "key_text", S_COL_TEXT},  {"UPSTREAM MODEL", "upstream_model", S_COL_TEXT},
    {"SOURCE", "source", S_COL_TEXT}, {"BREAKER", "breaker", S_COL_TEXT},
    {"STICKY", "sticky", S_COL_TEXT}, {"SCORE", "score_text", S_COL_TEXT}};

static const s_column_t s_excluded_columns[] = {{"PROVIDER", "provider", S_COL_TEXT},
                                                {"KEY", "key_text", S_COL_TEXT},
                                                {"UPSTREAM MODEL", "upstream_model", S_COL_TEXT},
                                                {"WHY", "why", S_COL_TEXT},
                                                {"DETAIL", "detail", S_COL_TEXT}};

static int s_routing_decide(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_pack("{s:s}", "model", args->words[first]);
    s_put_str(body, args, "key", "key");
    s_put_str(body, args, "session", "session");
    if (s_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", s_split_list(s_option(args, "capabilities")));
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/routing/decide", body, &answer);
    if (rc == 0 && !client->json) {
        printf("model %s, mode %s: %" JSON_INTEGER_FORMAT "%s%s%s (router %" JSON_INTEGER_FORMAT
               ")\n",
               s_str(answer, "model"), s_str(answer, "mode"), s_int(answer, "status"),
               *s_str(answer, "error_code") ? " " : "", s_str(answer, "error_code"),
               json_is_true(json_object_get(answer, "last_resort")) ? ", last resort" : "",
               s_int(answer, "router"));
        json_t *candidates = json_object_get(answer, "candidates");
        json_t *excluded = json_object_get(answer, "excluded");
        s_routing_cells(candidates);
        s_routing_cells(excluded);
        s_table(candidates, s_candidate_columns, S_COUNT(s_candidate_columns), "no candidates");
        if (json_array_size(excluded)) {
            printf("excluded:\n");
            s_table(excluded, s_excluded_columns, S_COUNT(s_excluded_columns), "");
        }
    }
    json_decref(answer);
    return rc;
}

static const s_column_t s_breaker_columns[] = {
    {"LAYER", "layer", S_COL_TEXT},        {"PROVIDER", "provider", S_COL_TEXT},
    {"KEY", "key_text", S_COL_TEXT},       {"UPSTREAM MODEL", "upstream_model", S_COL_TEXT},
    {"STATE", "state", S_COL_TEXT},        {"REASON", "reason", S_COL_TEXT},
    {"REOPENS", "reopens_at", S_COL_TIME}, {"ROUTERS", "routers_text", S_COL_TEXT}};

//  Prints which routers did not answer a list question.
static void s_routers_note(json_t *answer)
{
    size_t index;
    json_t *router;
    json_array_foreach(json_object_get(answer, "routers"), index, router)
    {
        if (!json_is_true(json_object_get(router, "answered")))
            printf("router %" JSON_INTEGER_FORMAT " (%s) did not answer\n", s_int(router, "router"),
                   s_str(router, "endpoint"));
        else if (json_object_get(router, "error"))
            printf("router %" JSON_INTEGER_FORMAT " answered %s\n", s_int(router, "router"),
                   s_str(router, "error"));
    }
}

//  GET BASE[?PARAM=value of --PARAM] answered by every router: a table of
//  its `data` with the router cells, or the JSON with --json.
static int s_routing_list(s_client_t *client, s_args_t *args, const char *base, const char *param,
                          const s_column_t *columns, int column_count, const char *empty)
{
    char path[2048];
    snprintf(path, sizeof path, "%s", base);
    const char *value = s_option(args, param);
    if (value) {
        char *escaped = s_escape(value);
        snprintf(path, sizeof path, "%s?%s=%s", base, param, escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        s_routing_cells(json_object_get(answer, "data"));
        s_table(json_object_get(answer, "data"), columns, column_count, empty);
        s_routers_note(answer);
    }
    json_decref(answer);
    return rc;
}

static int s_breakers_list(s_client_t *client, s_args_t *args, int first)
{
    return s_routing_list(client, args, "/admin/breakers", "router", s_breaker_columns,
                          S_COUNT(s_breaker_columns), "every breaker is closed");
}

static int s_breakers_reset(s_client_t *client, s_args_t *args, int first)
{
    const char *key = s_option(args, "key");
    const char *provider = s_option(args, "provider");
    const char *model = s_option(args, "model");
    if (!key == !(provider && model) || (key && (provider || model))) {
        fprintf(stderr, "tollgate: breakers reset needs --key ID, or --provider P and --model M\n");
        return 2;
    }
    json_t *body = json_object();
    if (key && s_put_int(body, args, "key", "provider_key_id") != 0) {
        json_decref(body);
        return 2;
    }
    if (!key) {
        json_object_set_new(body, "provider", json_string(provider));
        json_object_set_new(body, "upstream_model", json_string(model));
    }
    json_t *answer = NULL;
    int rc = s_call(client, "POST", "/admin/breakers/reset", body, &answer);
    if (rc == 0 && !client->json)
        printf("%" JSON_INTEGER_FORMAT " breaker(s) closed by %" JSON_INTEGER_FORMAT
               " router(s)%s%s\n",
               s_int(answer, "reset"), s_int(answer, "routers"),
               json_is_true(json_object_get(answer, "broadcast")) ? ", told to every router" : "",
               json_is_true(json_object_get(answer, "reenabled")) ? "; the key is active again"
                                                                  : "");
    json_decref(answer);
    return rc;
}

static const s_column_t s_binding_columns[] = {
    {"SESSION", "session", S_COL_TEXT},    {"PROVIDER", "provider", S_COL_TEXT},
    {"KEY", "key_text", S_COL_TEXT},       {"UPSTREAM MODEL", "upstream_model", S_COL_TEXT},
    {"EXPIRES", "expires_at", S_COL_TIME}, {"ROUTERS", "routers_text", S_COL_TEXT}};

static int s_sticky_list(s_client_t *client, s_args_t *args, int first)
{
    return s_routing_list(client, args, "/admin/sticky", "session", s_binding_columns,
                          S_COUNT(s_binding_columns), "no bindings");
}

static int s_sticky_rm(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/sticky", args->words[first], "");
    json_t *answer = NULL;
    int rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("session %s: %" JSON_INTEGER_FORMAT " binding(s) dropped\n", args->words[first],
               s_int(answer, "deleted"));
    json_decref(answer);
    return rc;
}

static const s_column_t s_health_columns[] = {
    {"PROVIDER", "provider", S_COL_TEXT},    {"KEY", "key_text", S_COL_TEXT},
    {"MODEL", "model_text", S_COL_TEXT},     {"STATE", "state", S_COL_TEXT},
    {"SUCCESS", "success_text", S_COL_TEXT}, {"LATENCY MS", "latency_ms", S_COL_TEXT},
    {"TTFB MS", "ttfb_ms", S_COL_TEXT},      {"ATTEMPTS", "attempts", S_COL_TEXT},
    {"LAST", "last_text", S_COL_TEXT},       {"UPDATED", "updated_at", S_COL_TIME}};

static const s_column_t s_fetch_columns[] = {{"PROVIDER", "provider", S_COL_TEXT},
                                             {"FETCHED", "fetched_at", S_COL_TIME},
                                             {"OK", "ok", S_COL_TEXT},
                                             {"MODELS", "model_count", S_COL_TEXT},
                                             {"ERROR", "error", S_COL_TEXT}};

static int s_health(s_client_t *client, s_args_t *args, int first)
{
    char path[2048] = "/admin/health";
    const char *provider = s_option(args, "provider");
    if (provider) {
        char *escaped = s_escape(provider);
        snprintf(path, sizeof path, "/admin/health?provider=%s", escaped);
        free(escaped);
    }
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        json_t *rows = json_object_get(answer, "data");
        s_routing_cells(rows);
        size_t index;
        json_t *row;
        json_array_foreach(rows, index, row)
        {
            char text[S_CELL];
            const char *model = s_str(row, "upstream_model");
            json_object_set_new(row, "model_text", json_string(*model ? model : "(probe)"));
            snprintf(text, sizeof text, "%.1f%%", (double)s_int(row, "success_ppm") / 10000.0);
            json_object_set_new(row, "success_text", json_string(text));
            json_object_set_new(row, "latency_ms", json_integer(s_int(row, "latency_us") / 1000));
            json_object_set_new(row, "ttfb_ms", json_integer(s_int(row, "ttfb_us") / 1000));
            snprintf(text, sizeof text, "%" JSON_INTEGER_FORMAT "%s%s", s_int(row, "last_status"),
                     *s_str(row, "last_error") ? " " : "", s_str(row, "last_error"));
            json_object_set_new(row, "last_text", json_string(text));
        }
        s_table(rows, s_health_columns, S_COUNT(s_health_columns), "no health reported yet");
        if (json_array_size(json_object_get(answer, "fetches"))) {
            printf("model lists:\n");
            s_table(json_object_get(answer, "fetches"), s_fetch_columns, S_COUNT(s_fetch_columns),
                    "");
        }
    }
    json_decref(answer);
    return rc;
}

static int s_rule_add(s_client_t *client, s_args_t *args, int first)
{
    if (!s_option(args, "kind")) {
        fprintf(stderr, "tollgate: model rule add needs --kind exact|prefix|keyword|regex|"
                        "exclude_keyword|include|exclude_provider\n");
        return 2;
    }
    json_t *body = json_object();
    s_put_str(body, args, "kind", "kind");
    s_put_str(body, args, "pattern", "pattern");
    s_put_str(body, args, "provider", "provider");
    if (s_put_int(body, args, "priority", "priority") ||
        s_put_int(body, args, "weight", "weight")) {
        json_decref(body);
        return 2;
    }
    char path[2048];
    s_path_of(path, sizeof path, "/admin/models", args->words[first], "/rules");
    json_t *answer = NULL;
    int rc = s_call(client, "POST", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("rule %" JSON_INTEGER_FORMAT " added to model %s: %s '%s'%s%s\n",
               s_int(answer, "id"), s_str(answer, "model"), s_str(answer, "kind"),
               s_str(answer, "pattern"), *s_str(answer, "provider") ? " at " : "",
               s_str(answer, "provider"));
    json_decref(answer);
    return rc;
}

static int s_rule_list(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/models", args->words[first], "/rules");
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "rule", json_object_get(answer, "data"), "no rules");
    json_decref(answer);
    return rc;
}

static int s_rule_rm(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/rules", args->words[first], "");
    json_t *answer = NULL;
    int rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("rule %" JSON_INTEGER_FORMAT " (%s '%s') of model %s deleted\n", s_int(answer, "id"),
               s_str(answer, "kind"), s_str(answer, "pattern"), s_str(answer, "model"));
    json_decref(answer);
    return rc;
}

static const s_column_t s_mapping_columns[] = {
    {"PROVIDER", "provider", S_COL_TEXT},   {"UPSTREAM MODEL", "upstream_model", S_COL_TEXT},
    {"SOURCE", "source", S_COL_TEXT},       {"RULE", "rule_id", S_COL_TEXT},
    {"PRIORITY", "priority", S_COL_TEXT},   {"WEIGHT", "weight", S_COL_TEXT},
    {"RESOLVED", "resolved_at", S_COL_TIME}};

static int s_model_mappings(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/models", args->words[first], "/mappings");
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_table(json_object_get(answer, "data"), s_mapping_columns, S_COUNT(s_mapping_columns),
                "no mappings (yet: tollgate-health writes them after a model-list fetch)");
    json_decref(answer);
    return rc;
}

//  --strict-conversion on|off: refuse what conversion would drop (docs/conversion.md).
static int s_put_strict(json_t *body, s_args_t *args)
{
    const char *value = s_option(args, "strict-conversion");
    if (!value)
        return 0;
    if (strcmp(value, "on") && strcmp(value, "off")) {
        fprintf(stderr, "tollgate: --strict-conversion takes on or off\n");
        return -1;
    }
    json_object_set_new(body, "strict_conversion", json_boolean(strcmp(value, "on") == 0));
    return 0;
}

static int s_provider_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    s_put_str(body, args, "status", "status");
    s_put_str(body, args, "base-url", "base_url");
    if (s_put_strict(body, args) || s_put_int(body, args, "priority", "priority") ||
        s_put_int(body, args, "weight", "weight") || s_put_reach(body, args)) {
        json_decref(body);
        return 2;
    }
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "");
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s: %s, %s, strict conversion %s\n", s_str(answer, "name"),
               s_str(answer, "protocol"), s_str(answer, "status"),
               json_is_true(json_object_get(answer, "strict_conversion")) ? "on" : "off");
    json_decref(answer);
    return rc;
}

static int s_model_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    s_put_str(body, args, "scheduling", "scheduling");
    s_put_str(body, args, "status", "status");
    if (s_put_strict(body, args) || s_put_settables(body, args, s_model_settables)) {
        json_decref(body);
        return 2;
    }
    if (s_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", s_split_list(s_option(args, "capabilities")));
    char path[2048];
    s_path_of(path, sizeof path, "/admin/models", args->words[first], "");
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char tags[S_CELL];
        s_column_t column = {"", "capabilities", S_COL_LIST};
        s_cell(answer, &column, tags, sizeof tags);
        printf("model %s: scheduling %s, capabilities %s, %s\n", s_str(answer, "name"),
               s_str(answer, "scheduling"), tags, s_str(answer, "status"));
    }
    json_decref(answer);
    return rc;
}

static int s_provider_key_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    //  "none" lifts a limit.
    const char *limits[][2] = {{"max-rps", "max_rps"}, {"max-concurrent", "max_concurrent"}};
    for (int i = 0; i < 2; i++) {
        const char *value = s_option(args, limits[i][0]);
        if (value && strcmp(value, "none") == 0)
            json_object_set_new(body, limits[i][1], json_null());
        else if (s_put_int(body, args, limits[i][0], limits[i][1]) != 0) {
            json_decref(body);
            return 2;
        }
    }
    if (s_put_int(body, args, "priority", "priority") ||
        s_put_int(body, args, "weight", "weight") ||
        s_put_settables(body, args, s_provider_key_settables)) {
        json_decref(body);
        return 2;
    }
    s_put_str(body, args, "status", "status");
    if (s_option(args, "capabilities"))
        json_object_set_new(body, "capabilities", s_split_list(s_option(args, "capabilities")));
    char path[2048];
    s_path_of(path, sizeof path, "/admin/provider-keys", args->words[first], "");
    json_t *answer = NULL;
    int rc = s_call(client, "PATCH", path, body, &answer);
    if (rc == 0 && !client->json) {
        char tags[S_CELL], rps[32], concurrent[32];
        s_column_t column = {"", "capabilities", S_COL_LIST};
        s_cell(answer, &column, tags, sizeof tags);
        s_column_t rps_column = {"", "max_rps", S_COL_TEXT};
        s_column_t concurrent_column = {"", "max_concurrent", S_COL_TEXT};
        s_cell(answer, &rps_column, rps, sizeof rps);
        s_cell(answer, &concurrent_column, concurrent, sizeof concurrent);
        printf("provider key %" JSON_INTEGER_FORMAT " (%s): %s, capabilities %s, max rps %s, max "
               "concurrent %s\n",
               s_int(answer, "id"), s_str(answer, "provider"), s_str(answer, "status"), tags, rps,
               concurrent);
    }
    json_decref(answer);
    return rc;
}

//  provider model set PROVIDER MODEL: creates the (provider, model)
//  setting or changes the one there is.
static int s_provider_model_set(s_client_t *client, s_args_t *args, int first)
{
    json_t *body = json_object();
    const char *values[][2] = {{"protocol", "protocol"}, {"path", "path"}};
    for (int i = 0; i < 2; i++) {
        const char *value = s_option(args, values[i][0]);
        if (value)
            json_object_set_new(body, values[i][1],
                                strcmp(value, "default") == 0 ? json_null() : json_string(value));
    }
    if (!json_object_size(body)) {
        fprintf(stderr, "tollgate: provider model set needs --protocol or --path\n");
        json_decref(body);
        return 2;
    }
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *list = NULL;
    bool json = client->json;
    client->json = false; //  the lookup is ours, not the command's output
    int rc = s_call(client, "GET", path, NULL, &list);
    client->json = json;
    json_int_t existing = 0;
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "data"), index,
                       item) if (strcmp(s_str(item, "model"), args->words[first + 1]) == 0)
        existing = s_int(item, "id");
    json_decref(list);
    if (rc != 0) {
        json_decref(body);
        return rc;
    }
    json_t *answer = NULL;
    if (existing) {
        snprintf(path, sizeof path, "/admin/provider-model-settings/%" JSON_INTEGER_FORMAT,
                 existing);
        rc = s_call(client, "PATCH", path, body, &answer);
    } else {
        json_object_set_new(body, "model", json_string(args->words[first + 1]));
        rc = s_call(client, "POST", path, body, &answer);
    }
    if (rc == 0 && !client->json)
        printf("provider %s model %s: protocol %s, path %s\n", s_str(answer, "provider"),
               s_str(answer, "model"),
               *s_str(answer, "protocol") ? s_str(answer, "protocol") : "the provider's",
               *s_str(answer, "path") ? s_str(answer, "path") : "the provider's");
    json_decref(answer);
    return rc;
}

static int s_provider_model_list(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json)
        s_resource_table(client, "provider_model", json_object_get(answer, "data"),
                         "no model settings");
    json_decref(answer);
    return rc;
}

static int s_provider_model_unset(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "/model-settings");
    json_t *list = NULL;
    bool json = client->json;
    client->json = false; //  the lookup is ours, not the command's output
    int rc = s_call(client, "GET", path, NULL, &list);
    client->json = json;
    json_int_t existing = 0;
    size_t index;
    json_t *item;
    json_array_foreach(json_object_get(list, "data"), index,
                       item) if (strcmp(s_str(item, "model"), args->words[first + 1]) == 0)
        existing = s_int(item, "id");
    json_decref(list);
    if (rc != 0)
        return rc;
    if (!existing) {
        fprintf(stderr, "tollgate: provider %s has no settings for model %s\n", args->words[first],
                args->words[first + 1]);
        return 1;
    }
    snprintf(path, sizeof path, "/admin/provider-model-settings/%" JSON_INTEGER_FORMAT, existing);
    json_t *answer = NULL;
    rc = s_call(client, "DELETE", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("provider %s model %s: the provider's protocol and path again\n", args->words[first],
               args->words[first + 1]);
    json_decref(answer);
    return rc;
}

static int s_provider_models(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "/models");
    json_t *answer = NULL;
    int rc = s_call(client, "GET", path, NULL, &answer);
    if (rc == 0 && !client->json) {
        json_t *fetch = json_object_get(answer, "fetch");
        size_t index;
        json_t *model;
        json_array_foreach(json_object_get(answer, "data"), index, model)
            printf("%s\n", s_str(model, "model"));
        if (json_is_object(fetch))
            printf("(%s fetch at %.19s: %" JSON_INTEGER_FORMAT " models%s%s)\n",
                   json_is_true(json_object_get(fetch, "ok")) ? "last" : "failed",
                   s_str(fetch, "fetched_at"), s_int(fetch, "model_count"),
                   *s_str(fetch, "error") ? ", " : "", s_str(fetch, "error"));
        else
            printf("(never fetched)\n");
    }
    json_decref(answer);
    return rc;
}

static int s_provider_models_refresh(s_client_t *client, s_args_t *args, int first)
{
    char path[2048];
    s_path_of(path, sizeof path, "/admin/providers", args->words[first], "/models/refresh");
    json_t *answer = NULL;
    int rc = s_call(client, "POST", path, NULL, &answer);
    if (rc == 0 && !client->json)
        printf("model list of provider %s requested; `tollgate provider models %s` shows it\n",
               args->words[first], args->words[first]);
    json_decref(answer);
    return rc;
}

static const s_command_t s_commands[] = {
    {"provider add", 1,
     "protocol base-url priority weight header proxy path blocked-models failover-statuses "
     "return-statuses",
     s_provider_add,
     "provider add NAME --protocol openai|openai-responses|anthropic|gemini --base-url URL "
     "[--priority N] [--weight N] "
     "[--header 'Name: value']... [--proxy URL|-]... [--path PATH|default] "
     "[--blocked-models PATTERN,...|none] [--failover-statuses S,...|none] "
     "[--return-statuses S,...|none]"},
    {"provider key add", 1, "secret name priority weight multiplier", s_provider_key_add,
     "provider key add PROVIDER --secret SECRET|- [--name LABEL] [--priority N] [--weight N] "
     "[--multiplier M]   (M: 1 = list price, 0.5 = half, 0 = free)"},
    {"provider key list", 1, "", s_provider_key_list, "provider key list PROVIDER [--json]"},
    {"provider list", 0, "", s_provider_list, "provider list [--json]"},
    {"provider show", 1, "", s_provider_show, "provider show NAME [--json]"},
    {"model add", 1, "route " S_MODEL_OPTIONS, s_model_add,
     "model add NAME --route PROVIDER[:UPSTREAM_MODEL] [--route ...] " S_MODEL_USAGE},
    {"model list", 0, "", s_model_list, "model list [--json]"},
    {"model show", 1, "", s_model_show, "model show NAME [--json]"},
    {"model set", 1, "scheduling capabilities status strict-conversion " S_MODEL_OPTIONS,
     s_model_set,
     "model set NAME [--scheduling priority|key_priority|weighted|latency|cost|reliability] "
     "[--capabilities TAG,TAG] [--status active|disabled] [--strict-conversion "
     "on|off] " S_MODEL_USAGE},
    {"provider set", 1,
     "status base-url strict-conversion priority weight header proxy path blocked-models "
     "failover-statuses return-statuses",
     s_provider_set,
     "provider set NAME [--status active|disabled] [--base-url URL] [--strict-conversion on|off] "
     "[--priority N] [--weight N] "
     "[--header 'Name: value']... [--proxy URL|-]... [--path PATH|default] "
     "[--blocked-models PATTERN,...|none] [--failover-statuses S,...|none] "
     "[--return-statuses S,...|none]"},
    {"provider model set", 2, "protocol path", s_provider_model_set,
     "provider model set PROVIDER MODEL [--protocol openai|openai-responses|anthropic|gemini|"
     "default] [--path PATH|default]"},
    {"provider model list", 1, "", s_provider_model_list, "provider model list PROVIDER [--json]"},
    {"provider model unset", 2, "", s_provider_model_unset, "provider model unset PROVIDER MODEL"},
    {"model rule add", 1, "kind pattern provider priority weight", s_rule_add,
     "model rule add MODEL --kind exact|prefix|keyword|regex|exclude_keyword|include|"
     "exclude_provider [--pattern P] [--provider P] [--priority N] [--weight N]"},
    {"model rule list", 1, "", s_rule_list, "model rule list MODEL [--json]"},
    {"model rule rm", 1, "", s_rule_rm, "model rule rm ID"},
    {"model mappings", 1, "", s_model_mappings, "model mappings MODEL [--json]"},
    {"provider key set", 1, "capabilities max-rps max-concurrent priority weight status multiplier",
     s_provider_key_set,
     "provider key set ID [--capabilities TAG,TAG] [--max-rps N|none] [--max-concurrent N|none] "
     "[--priority N] [--weight N] [--status active|disabled] [--multiplier M]"},
    {"provider models", 1, "", s_provider_models, "provider models PROVIDER [--json]"},
    {"provider models refresh", 1, "", s_provider_models_refresh,
     "provider models refresh PROVIDER"},
    {"routing decide", 1, "key session capabilities", s_routing_decide,
     "routing decide MODEL [--key ID_OR_KEY] [--session S] [--capabilities TAG,TAG] [--json]"},
    {"breakers", 0, "router", s_breakers_list, "breakers [--router N] [--json]"},
    {"breakers list", 0, "router", s_breakers_list, "breakers list [--router N] [--json]"},
    {"breakers reset", 0, "key provider model", s_breakers_reset,
     "breakers reset --key PROVIDER_KEY_ID | --provider P --model UPSTREAM_MODEL"},
    {"sticky", 0, "session", s_sticky_list, "sticky [--session S] [--json]"},
    {"sticky rm", 1, "", s_sticky_rm, "sticky rm SESSION"},
    {"health", 0, "provider", s_health, "health [--provider P] [--json]"},
    {"account add", 1, "balance currency models multiplier " S_LIMIT_OPTIONS, s_account_add,
     "account add NAME [--balance AMOUNT] [--currency C] [--models M1,M2] [--multiplier "
     "M] " S_LIMIT_USAGE},
    {"account set", 1, "status models multiplier " S_LIMIT_OPTIONS, s_account_set,
     "account set NAME [--status active|disabled] [--models M1,M2|any] [--multiplier "
     "M] " S_LIMIT_USAGE "   (M: 1 = list price, 0 = free tier)"},
    {"account list", 0, "", s_account_list, "account list [--json]"},
    {"account show", 1, "", s_account_show, "account show NAME [--json]"},
    {"account topup", 2, "reason", s_account_topup,
     "account topup NAME AMOUNT [--reason TEXT]   (a negative AMOUNT is an adjustment)"},
    {"account grant", 1, "amount every starts-at reason", s_account_grant,
     "account grant ACCOUNT --amount AMOUNT --every day|week|month [--starts-at TIME] "
     "[--reason TEXT]   (granted by the ledger once per UTC period)"},
    {"account grant list", 1, "", s_account_grant_list, "account grant list ACCOUNT [--json]"},
    {"account grant rm", 1, "", s_account_grant_rm, "account grant rm ID"},
    {"key create", 1, "name models expires-at " S_LIMIT_OPTIONS, s_key_create,
     "key create ACCOUNT [--name LABEL] [--models M1,M2] [--expires-at TIME] " S_LIMIT_USAGE},
    {"key set", 1, "name status models expires-at " S_LIMIT_OPTIONS, s_key_set,
     "key set ID [--name LABEL] [--status active|disabled|revoked] [--models M1,M2|any] "
     "[--expires-at TIME|none] " S_LIMIT_USAGE},
    {"key revoke", 1, "", s_key_revoke, "key revoke KEY_OR_ID"},
    {"key list", 0, "account", s_key_list, "key list [--account NAME] [--json]"},
    {"usage", 0, "account limit before", s_usage,
     "usage [--account NAME] [--limit N] [--before TIME] [--json]"},
    {"login", 1, "password ttl", s_login,
     "login USERNAME [--password PASSWORD|-] [--ttl SECONDS]   (session kept in "
     "DIR/admin_session)"},
    {"logout", 0, "", s_logout, "logout"},
    {"whoami", 0, "", s_whoami, "whoami [--json]"},
    {"admin user add", 1, "role password", s_user_add,
     "admin user add USERNAME --role owner|operator|viewer [--password PASSWORD|-]"},
    {"admin user list", 0, "", s_user_list, "admin user list [--json]"},
    {"admin user disable", 1, "", s_user_disable, "admin user disable USERNAME"},
    {"admin user enable", 1, "", s_user_enable, "admin user enable USERNAME"},
    {"admin user role", 2, "", s_user_role, "admin user role USERNAME owner|operator|viewer"},
    {"admin user password", 1, "password", s_user_password,
     "admin user password USERNAME [--password PASSWORD|-]"},
    {"admin session list", 0, "user", s_session_list,
     "admin session list [--user USERNAME] [--all] [--json]"},
    {"admin session revoke", 1, "", s_session_revoke, "admin session revoke ID"},
    {"admin bootstrap rotate", 0, "", s_bootstrap_rotate, "admin bootstrap rotate"},
    {"token create", 1, "role expires-at", s_token_create,
     "token create NAME --role owner|operator|viewer [--expires-at TIME]   (last line: the token)"},
    {"token list", 0, "", s_token_list, "token list [--json]"},
    {"token revoke", 1, "", s_token_revoke, "token revoke ID"},
    {"audit", 0, "actor action limit before", s_audit,
     "audit [--actor NAME] [--action ACTION] [--limit N] [--before ID] [--json]"},
    {"requests", 0, "account key model provider status since before limit", s_requests,
     "requests [--account NAME] [--key ID] [--model M] [--provider NAME] [--status N] [--errors] "
     "[--since TIME] [--before TIME] [--limit N] [--json]"},
    {"requests show", 1, "", s_request_show, "requests show REQUEST_ID [--json]"},
    {"request-log", 0, "", s_request_log, "request-log [--json]"},
    {"request-log set", 0, "level max-body-bytes retention-days", s_request_log_set,
     "request-log set [--level base|headers|full] [--max-body-bytes N] [--retention-days N]"},
    {"log-level", 0, "", s_log_level, "log-level [--json]"},
    {"key-prefix", 0, "", s_key_prefix, "key-prefix [--json]"},
    {"key-prefix set", 1, "", s_key_prefix, "key-prefix set PREFIX [--json]"},
    {"log-level set", 1, "program", s_log_level_set,
     "log-level set debug|info|warn|error|default [--program NAME]"},
};
#define S_COMMAND_COUNT (sizeof s_commands / sizeof s_commands[0])

//  How many words of `words` the command line starts with, or 0.
static int s_command_words(const char *words, s_args_t *args)
{
    int used = 0;
    for (const char *cursor = words; *cursor;) {
        size_t length = strcspn(cursor, " ");
        if (used >= args->word_count || strlen(args->words[used]) != length ||
            strncmp(args->words[used], cursor, length) != 0)
            return 0;
        used++;
        cursor += length;
        while (*cursor == ' ')
            cursor++;
    }
    return used;
}

//  True when a command's first word is `word`.
static bool s_command_words_match(const char *words, const char *word)
{
    size_t length = strlen(word);
    return strncmp(words, word, length) == 0 && (words[length] == ' ' || !words[length]);
}

//  Prints the usage of every command whose first word is `word`, or of all
//  commands when there is none (or word is NULL).
static void s_usage_lines(FILE *out, const char *word)
{
    bool any = false;
    for (size_t i = 0; word && i < S_COMMAND_COUNT; i++)
        any = any || s_command_words_match(s_commands[i].words, word);
    fprintf(out, "usage:\n");
    for (size_t i = 0; i < S_COMMAND_COUNT; i++)
        if (!any || s_command_words_match(s_commands[i].words, word))
            fprintf(out, "  tollgate %s\n", s_commands[i].usage);
    fprintf(out,
            "options for all: --json (print the API's JSON), --dir DIR (state folder of "
            "`tollgate up`; default $TOLLGATE_DIR or " S_DEFAULT_DIR "), --tz ZONE (times in "
            "tables in ZONE, e.g. Europe/Paris; default $TZ, else UTC; --json stays UTC)\n"
            "the admin URL and token come from TOLLGATE_ADMIN_URL and "
            "TOLLGATE_ADMIN_TOKEN when set (TOLLGATE_ADMIN_CA: the CA file for an https URL)\n");
}

//  Finds the command a parsed line names. Returns it, or NULL after
//  printing a usage error.
static const s_command_t *s_find(s_args_t *args, int *first)
{
    const s_command_t *best = NULL;
    int best_words = 0;
    for (size_t i = 0; i < S_COMMAND_COUNT; i++) {
        int words = s_command_words(s_commands[i].words, args);
        if (words > best_words) {
            best = &s_commands[i];
            best_words = words;
        }
    }
    if (!best) {
        fprintf(stderr, "tollgate: unknown command '%s%s%s'\n", args->words[0],
                args->word_count > 1 ? " " : "", args->word_count > 1 ? args->words[1] : "");
        s_usage_lines(stderr, args->words[0]);
        return NULL;
    }
    *first = best_words;
    if (args->word_count - best_words != best->positionals) {
        fprintf(stderr, "tollgate: %s arguments\nusage: tollgate %s\n",
                args->word_count - best_words < best->positionals ? "missing" : "too many",
                best->usage);
        return NULL;
    }
    for (int i = 0; i < args->option_count; i++) {
        const char *name = args->names[i];
        if (!s_is_flag(name) && strcmp(name, "dir") != 0 && strcmp(name, "tz") != 0 &&
            !s_listed(best->options, name)) {
            fprintf(stderr, "tollgate: unknown option --%s\nusage: tollgate %s\n", name,
                    best->usage);
            return NULL;
        }
    }
    return best;
}

int ops_admin_main(int argc, char **argv)
{
    s_args_t args;
    if (argc < 1 || s_parse(argc, argv, &args) != 0)
        return 2;
    if (s_option(&args, "help") || args.word_count == 0) {
        s_usage_lines(stdout, args.word_count ? args.words[0] : NULL);
        return args.word_count ? 0 : 2;
    }
    int first = 0;
    const s_command_t *command = s_find(&args, &first);
    if (!command)
        return 2;
    char problem[256];
    if (ops_tz_choose(s_option(&args, "tz"), s_zone, sizeof s_zone, problem, sizeof problem) != 0) {
        fprintf(stderr, "tollgate: %s\n", problem);
        return 2;
    }
    s_client_t client = {.json = s_option(&args, "json") != NULL};
    const char *dir = s_option(&args, "dir");
    if (!dir)
        dir = getenv("TOLLGATE_DIR");
    if (!dir || !*dir)
        dir = S_DEFAULT_DIR;
    if (s_discover(&client, dir, command->run != s_login) != 0)
        return 1;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = command->run(&client, &args, first);
    json_decref(client.resources);
    curl_global_cleanup();
    memset(client.token, 0, sizeof client.token);
    return rc;
}

// ---------------------------------------------------------------------------
//  Self test

void ops_admin_test(bool verbose)
{
    if (verbose)
        printf(" * ops_admin: ");
    char text[64];
    struct {
        int64_t micros;      //  input
        const char *decimal; //  expected
    } money[] = {{10500000, "10.50"}, {1, "0.000001"},
                 {0, "0.00"},         {-1000000, "-1.00"},
                 {2500000, "2.50"},   {1234567, "1.234567"},
                 {-5, "-0.000005"},   {INT64_MIN, "-9223372036854.775808"}};
    for (size_t i = 0; i < sizeof money / sizeof money[0]; i++) {
        ops_admin_format_micros(money[i].micros, text, sizeof text);
        assert(strcmp(text, money[i].decimal) == 0);
    }

    char *escaped = s_escape("openai/gpt-4o mini:8b");
    assert(strcmp(escaped, "openai%2Fgpt-4o%20mini%3A8b") == 0);
    free(escaped);

    char a0[] = "model", a1[] = "add", a2[] = "gpt-4o", a3[] = "--route", a4[] = "openai:gpt-4o",
         a5[] = "--route=local:llama3:8b", a6[] = "--json", a7[] = "--price-in", a8[] = "2.50";
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
    s_args_t args;
    assert(s_parse(9, argv, &args) == 0);
    assert(args.word_count == 3 && args.option_count == 4);
    assert(strcmp(s_option(&args, "route"), "local:llama3:8b") == 0);
    assert(strcmp(s_option(&args, "price-in"), "2.50") == 0);
    assert(s_option(&args, "json") && !s_option(&args, "nope"));
    int first = 0;
    const s_command_t *command = s_find(&args, &first);
    assert(command && command->run == s_model_add && first == 2);

    char b0[] = "provider", b1[] = "key", b2[] = "add", b3[] = "openai", b4[] = "--secret",
         b5[] = "sk-1";
    char *argv2[] = {b0, b1, b2, b3, b4, b5};
    assert(s_parse(6, argv2, &args) == 0);
    command = s_find(&args, &first);
    assert(command && command->run == s_provider_key_add && first == 3);
    assert(strcmp(args.words[first], "openai") == 0);

    //  Negative amounts are words, not options.
    char c0[] = "account", c1[] = "topup", c2[] = "team", c3[] = "-2.5";
    char *argv3[] = {c0, c1, c2, c3};
    assert(s_parse(4, argv3, &args) == 0);
    command = s_find(&args, &first);
    assert(command && command->run == s_account_topup);
    assert(strcmp(args.words[first + 1], "-2.5") == 0);

    char d0[] = "provider", d1[] = "add", d2[] = "x", d3[] = "--weight";
    char *argv4[] = {d0, d1, d2, d3};
    assert(s_parse(4, argv4, &args) == -1);

    assert(s_listed("protocol base-url priority", "base-url"));
    assert(!s_listed("protocol base-url priority", "base"));
    assert(!s_listed("", "x"));

    s_listen_url("127.0.0.1:8081", false, text, sizeof text);
    assert(strcmp(text, "http://127.0.0.1:8081") == 0);
    s_listen_url("0.0.0.0:9", true, text, sizeof text);
    assert(strcmp(text, "https://127.0.0.1:9") == 0);

    json_t *list = s_split_list("a, b,,c");
    assert(json_array_size(list) == 3);
    assert(strcmp(json_string_value(json_array_get(list, 1)), "b") == 0);
    json_decref(list);
    assert(s_width("\u2026abcd") == 5);
    if (verbose)
        printf("OK\n");
}
