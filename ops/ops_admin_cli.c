/*  ops_admin_cli: what the admin CLI's commands share. See ops_admin_cli.h. */
#include "ops_admin_cli.h"
#include "ops_tz.h"
#include "proto_config.h"

#include <assert.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_TIMEOUT_S 30 //  longest an admin call may take

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
char *oa_escape(const char *text)
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

bool oa_is_flag(const char *name)
{
    return strcmp(name, "json") == 0 || strcmp(name, "help") == 0 || strcmp(name, "errors") == 0 ||
           strcmp(name, "all") == 0;
}

//  Splits argv into words and options ("--name value", "--name=value",
//  flags --json and --help; "--" ends options). Returns 0, or -1 with a
//  message on stderr.
int oa_parse(int argc, char **argv, oa_args_t *args)
{
    memset(args, 0, sizeof *args);
    bool options_done = false;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (options_done || strncmp(arg, "--", 2) != 0) {
            if (args->word_count == OA_MAX_WORDS) {
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
        if (args->option_count == OA_MAX_OPTIONS) {
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
        } else if (!oa_is_flag(name)) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tollgate: --%s needs a value\n", name);
                return -1;
            }
            value = argv[++i];
        }
        if (oa_is_flag(name) && value) {
            fprintf(stderr, "tollgate: --%s takes no value\n", name);
            return -1;
        }
        args->names[args->option_count] = name;
        args->values[args->option_count++] = value;
    }
    return 0;
}

//  The last value of an option, or NULL.
const char *oa_option(oa_args_t *args, const char *name)
{
    const char *value = NULL;
    for (int i = 0; i < args->option_count; i++)
        if (strcmp(args->names[i], name) == 0)
            value = args->values[i] ? args->values[i] : "";
    return value;
}

//  True when `name` appears as a whole word in a space-separated list.
bool oa_listed(const char *list, const char *name)
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
void oa_listen_url(const char *listen, bool tls, char *url, size_t url_size)
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
int oa_discover(oa_client_t *client, const char *dir, bool need_token)
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
        client->source = OA_TOKEN_ENV;
    }
    char path[4096];
    if (!*client->token) {
        snprintf(path, sizeof path, "%s/admin_session", dir);
        if (s_read_line(path, client->token, sizeof client->token) == 0)
            client->source = OA_TOKEN_SESSION;
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
        oa_listen_url(proto_config_str(config, "admin.listen"), *cert, client->url,
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
            client->source = OA_TOKEN_BOOTSTRAP;
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
int oa_call(oa_client_t *client, const char *method, const char *path, json_t *body,
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

//  The zone time columns are shown in (--tz, else TZ; "" = UTC). The CLI
//  runs one command per process.
char oa_zone[128];

// ---------------------------------------------------------------------------
//  Printing

//  Renders one cell into out.
void oa_cell(json_t *row, const oa_column_t *column, char *out, size_t size)
{
    json_t *value = json_object_get(row, column->key);
    *out = '\0';
    if (!value || json_is_null(value)) {
        snprintf(out, size, "%s", column->kind == OA_COL_LIST ? "any" : "-");
        return;
    }
    switch (column->kind) {
    case OA_COL_MONEY:
        if (json_is_integer(value)) {
            ops_admin_format_micros(json_integer_value(value), out, size);
            return;
        }
        break;
    case OA_COL_LIST:
    case OA_COL_ROUTES: {
        size_t index;
        json_t *item;
        json_array_foreach(value, index, item)
        {
            size_t used = strlen(out);
            const char *separator = index ? (column->kind == OA_COL_LIST ? "," : ", ") : "";
            if (column->kind == OA_COL_LIST)
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
            snprintf(out, size, "%s", column->kind == OA_COL_LIST ? "none" : "-");
        return;
    }
    case OA_COL_TIME:
        if (json_is_string(value)) {
            ops_tz_format(json_string_value(value), oa_zone, out, size);
            return;
        }
        break;
    case OA_COL_TEXT:
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
int oa_width(const char *text)
{
    int width = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        width += (*c & 0xc0) != 0x80;
    return width;
}

//  Prints rows as an aligned table, or a note when there are none.
void oa_table(json_t *rows, const oa_column_t *columns, int column_count, const char *none)
{
    if (json_array_size(rows) == 0) {
        printf("%s\n", none);
        return;
    }
    assert(column_count <= OA_MAX_COLUMNS);
    int widths[OA_MAX_COLUMNS];
    char cell[OA_CELL];
    for (int c = 0; c < column_count; c++)
        widths[c] = oa_width(columns[c].title);
    size_t index;
    json_t *row;
    json_array_foreach(rows, index, row) for (int c = 0; c < column_count; c++)
    {
        oa_cell(row, &columns[c], cell, sizeof cell);
        if (oa_width(cell) > widths[c])
            widths[c] = oa_width(cell);
    }
    for (int c = 0; c < column_count; c++)
        printf("%s%-*s", c ? "  " : "", c + 1 < column_count ? widths[c] : 0, columns[c].title);
    printf("\n");
    json_array_foreach(rows, index, row)
    {
        for (int c = 0; c < column_count; c++) {
            oa_cell(row, &columns[c], cell, sizeof cell);
            int pad = c + 1 < column_count ? widths[c] - oa_width(cell) : 0;
            printf("%s%s%*s", c ? "  " : "", cell, pad, "");
        }
        printf("\n");
    }
}

//  Prints the named fields of an object, one per line.
static void s_fields(json_t *object, const oa_column_t *columns, int column_count)
{
    char cell[OA_CELL];
    for (int c = 0; c < column_count; c++) {
        oa_cell(object, &columns[c], cell, sizeof cell);
        printf("%-18s %s\n", columns[c].title, cell);
    }
}

//  The server's description of a resource ("provider", "key", ...), from
//  GET /admin/resources: the same tables it validates with, so list and
//  show print what the server has. Borrowed from the client; NULL (with the
//  reason on stderr) when it cannot be had.
static json_t *s_described(oa_client_t *client, const char *name)
{
    if (!client->resources) {
        bool json = client->json;
        client->json = false; //  the description is ours, not the command's output
        int rc = oa_call(client, "GET", "/admin/resources", NULL, &client->resources);
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
static int s_described_columns(json_t *resource, bool all, oa_column_t *columns, int max)
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
        oa_col_kind_t kind = strcmp(type, "micros") == 0  ? OA_COL_MONEY
                             : strcmp(type, "time") == 0  ? OA_COL_TIME
                             : strcmp(type, "list") == 0  ? OA_COL_LIST
                             : strcmp(type, "child") == 0 ? OA_COL_ROUTES
                                                          : OA_COL_TEXT;
        const char *name = json_string_value(json_object_get(column, "name"));
        columns[count++] = (oa_column_t){all ? name : label, name, kind};
    }
    return count;
}

//  Prints rows of a resource as the server describes its lists.
void oa_resource_table(oa_client_t *client, const char *name, json_t *rows, const char *none)
{
    oa_column_t columns[OA_MAX_COLUMNS];
    json_t *resource = s_described(client, name);
    if (resource)
        oa_table(rows, columns, s_described_columns(resource, false, columns, OA_MAX_COLUMNS),
                 none);
}

//  Prints every column of one object of a resource.
void oa_resource_fields(oa_client_t *client, const char *name, json_t *object)
{
    oa_column_t columns[64];
    json_t *resource = s_described(client, name);
    if (resource)
        s_fields(object, columns, s_described_columns(resource, true, columns, 64));
}

const char *oa_str(json_t *object, const char *key)
{
    const char *value = json_string_value(json_object_get(object, key));
    return value ? value : "";
}

json_int_t oa_int(json_t *object, const char *key)
{
    return json_integer_value(json_object_get(object, key));
}

// ---------------------------------------------------------------------------
//  Building bodies from options

//  Sets body[key] to an integer option's value. Returns 0, or -1 (usage).
int oa_put_int(json_t *body, oa_args_t *args, const char *option, const char *key)
{
    const char *value = oa_option(args, option);
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

void oa_put_str(json_t *body, oa_args_t *args, const char *option, const char *key)
{
    const char *value = oa_option(args, option);
    if (value)
        json_object_set_new(body, key, json_string(value));
}

//  "a,b,c" as a JSON array of non-empty names.
json_t *oa_split_list(const char *text)
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
char *oa_secret_value(const char *value)
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
int oa_put_settables(json_t *body, oa_args_t *args, const oa_settable_t *table)
{
    for (const oa_settable_t *set = table; set->option; set++) {
        const char *value = oa_option(args, set->option);
        if (!value)
            continue;
        bool none = strcmp(value, "none") == 0;
        json_t *json = NULL;
        switch (set->kind) {
        case OA_SET_TEXT:
            json = json_string(value);
            break;
        case OA_SET_INT: {
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
        case OA_SET_MONEY:
        case OA_SET_TIME:
            json = none ? json_null() : json_string(value);
            break;
        case OA_SET_TAGS:
            json = none ? json_array() : oa_split_list(value);
            break;
        case OA_SET_MODELS:
            json = strcmp(value, "any") == 0 ? json_null() : oa_split_list(value);
            break;
        case OA_SET_MULTIPLIER: {
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

//  Appends `?name=value&…` to path for every option in `options` that was
//  given (option names map one to one onto query names in `names`).
void oa_add_query(char *path, size_t size, oa_args_t *args, const char *const *options,
                  const char *const *names, int count)
{
    bool first = strchr(path, '?') == NULL;
    for (int i = 0; i < count; i++) {
        const char *value = oa_option(args, options[i]);
        if (!value)
            continue;
        char *escaped = oa_escape(*value ? value : "1");
        snprintf(path + strlen(path), size - strlen(path), "%s%s=%s", first ? "?" : "&", names[i],
                 escaped);
        first = false;
        free(escaped);
    }
}

//  Builds "/admin/PREFIX/ESCAPED(name)SUFFIX" into path.
void oa_path_of(char *path, size_t size, const char *prefix, const char *name, const char *suffix)
{
    char *escaped = oa_escape(name);
    snprintf(path, size, "%s/%s%s", prefix, escaped, suffix);
    free(escaped);
}
