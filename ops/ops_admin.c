/*  ops_admin: admin CLI commands over the admin API. See ops_admin.h.

    One table of commands per group (ops_admin_cli.h lists them); each names its words, how
    many positional arguments it takes, which --options it accepts, and a function that
    builds the request and prints the answer. Parsing is strict: an unknown option or a
    missing argument is a usage error (exit 2) before anything is sent.
*/
#include "ops_admin.h"
#include "ops_admin_cli.h"
#include "ops_tz.h"
#include "proto_check.h"

#include <assert.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OA_DEFAULT_DIR "./var"

//  The groups' tables, in the order usage lists them.
static const oa_command_t *const s_groups[] = {oa_catalog_commands, oa_routing_commands,
                                               oa_account_commands, oa_access_commands,
                                               oa_request_commands};

//  Command number index across the groups, or NULL past the last.
static const oa_command_t *s_command_at(size_t index)
{
    for (size_t group = 0; group < sizeof s_groups / sizeof s_groups[0]; group++)
        for (const oa_command_t *command = s_groups[group]; command->words; command++)
            if (index-- == 0)
                return command;
    return NULL;
}

//  How many words of `words` the command line starts with, or 0.
static int s_command_words(const char *words, oa_args_t *args)
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
    const oa_command_t *command;
    for (size_t i = 0; word && (command = s_command_at(i)); i++)
        any = any || s_command_words_match(command->words, word);
    fprintf(out, "usage:\n");
    for (size_t i = 0; (command = s_command_at(i)); i++)
        if (!any || s_command_words_match(command->words, word))
            fprintf(out, "  tollgate %s\n", command->usage);
    //  Not over the admin API (ops_reset): listed here so it is found.
    if (!any || strcmp(word, "admin") == 0)
        fprintf(out, "  tollgate admin reset-password USERNAME [--password PASSWORD|-] "
                     "[--database-url URL]   (database access only, no admin server)\n");
    fprintf(out,
            "options for all: --json (print the API's JSON), --dir DIR (state folder of "
            "`tollgate up`; default $TOLLGATE_DIR or " OA_DEFAULT_DIR "), --tz ZONE (times in "
            "tables in ZONE, e.g. Europe/Paris; default $TZ, else UTC; --json stays UTC)\n"
            "the admin URL and token come from TOLLGATE_ADMIN_URL and "
            "TOLLGATE_ADMIN_TOKEN when set (TOLLGATE_ADMIN_CA: the CA file for an https URL)\n");
}

//  Finds the command a parsed line names. Returns it, or NULL after
//  printing a usage error.
static const oa_command_t *s_find(oa_args_t *args, int *first)
{
    const oa_command_t *best = NULL;
    int best_words = 0;
    const oa_command_t *command;
    for (size_t i = 0; (command = s_command_at(i)); i++) {
        int words = s_command_words(command->words, args);
        if (words > best_words) {
            best = command;
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
        if (!oa_is_flag(name) && strcmp(name, "dir") != 0 && strcmp(name, "tz") != 0 &&
            !oa_listed(best->options, name)) {
            fprintf(stderr, "tollgate: unknown option --%s\nusage: tollgate %s\n", name,
                    best->usage);
            return NULL;
        }
    }
    return best;
}

int ops_admin_main(int argc, char **argv)
{
    oa_args_t args;
    if (argc < 1 || oa_parse(argc, argv, &args) != 0)
        return 2;
    if (oa_option(&args, "help") || args.word_count == 0) {
        s_usage_lines(stdout, args.word_count ? args.words[0] : NULL);
        return args.word_count ? 0 : 2;
    }
    int first = 0;
    const oa_command_t *command = s_find(&args, &first);
    if (!command)
        return 2;
    char problem[256];
    if (ops_tz_choose(oa_option(&args, "tz"), oa_zone, sizeof oa_zone, problem, sizeof problem) !=
        0) {
        fprintf(stderr, "tollgate: %s\n", problem);
        return 2;
    }
    oa_client_t client = {.json = oa_option(&args, "json") != NULL};
    const char *dir = oa_option(&args, "dir");
    if (!dir)
        dir = getenv("TOLLGATE_DIR");
    if (!dir || !*dir)
        dir = OA_DEFAULT_DIR;
    if (oa_discover(&client, dir, strcmp(command->words, "login") != 0) != 0)
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
        PROTO_CHECK(strcmp(text, money[i].decimal) == 0);
    }

    char *escaped = oa_escape("openai/gpt-4o mini:8b");
    PROTO_CHECK(strcmp(escaped, "openai%2Fgpt-4o%20mini%3A8b") == 0);
    free(escaped);

    char a0[] = "model", a1[] = "add", a2[] = "gpt-4o", a3[] = "--route", a4[] = "openai:gpt-4o",
         a5[] = "--route=local:llama3:8b", a6[] = "--json", a7[] = "--price-in", a8[] = "2.50";
    char *argv[] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
    oa_args_t args;
    PROTO_CHECK(oa_parse(9, argv, &args) == 0);
    PROTO_CHECK(args.word_count == 3 && args.option_count == 4);
    PROTO_CHECK(strcmp(oa_option(&args, "route"), "local:llama3:8b") == 0);
    PROTO_CHECK(strcmp(oa_option(&args, "price-in"), "2.50") == 0);
    PROTO_CHECK(oa_option(&args, "json") && !oa_option(&args, "nope"));
    int first = 0;
    const oa_command_t *command = s_find(&args, &first);
    PROTO_CHECK(command && strcmp(command->words, "model add") == 0 && first == 2);

    char b0[] = "provider", b1[] = "key", b2[] = "add", b3[] = "openai", b4[] = "--secret",
         b5[] = "sk-1";
    char *argv2[] = {b0, b1, b2, b3, b4, b5};
    PROTO_CHECK(oa_parse(6, argv2, &args) == 0);
    command = s_find(&args, &first);
    PROTO_CHECK(command && strcmp(command->words, "provider key add") == 0 && first == 3);
    PROTO_CHECK(strcmp(args.words[first], "openai") == 0);

    //  Negative amounts are words, not options.
    char c0[] = "account", c1[] = "topup", c2[] = "team", c3[] = "-2.5";
    char *argv3[] = {c0, c1, c2, c3};
    PROTO_CHECK(oa_parse(4, argv3, &args) == 0);
    command = s_find(&args, &first);
    PROTO_CHECK(command && strcmp(command->words, "account topup") == 0);
    PROTO_CHECK(strcmp(args.words[first + 1], "-2.5") == 0);

    char d0[] = "provider", d1[] = "add", d2[] = "x", d3[] = "--weight";
    char *argv4[] = {d0, d1, d2, d3};
    PROTO_CHECK(oa_parse(4, argv4, &args) == -1);

    PROTO_CHECK(oa_listed("protocol base-url priority", "base-url"));
    PROTO_CHECK(!oa_listed("protocol base-url priority", "base"));
    PROTO_CHECK(!oa_listed("", "x"));

    oa_listen_url("127.0.0.1:8081", false, text, sizeof text);
    PROTO_CHECK(strcmp(text, "http://127.0.0.1:8081") == 0);
    oa_listen_url("0.0.0.0:9", true, text, sizeof text);
    PROTO_CHECK(strcmp(text, "https://127.0.0.1:9") == 0);

    json_t *list = oa_split_list("a, b,,c");
    PROTO_CHECK(json_array_size(list) == 3);
    PROTO_CHECK(strcmp(json_string_value(json_array_get(list, 1)), "b") == 0);
    json_decref(list);
    PROTO_CHECK(oa_width("\u2026abcd") == 5);
    if (verbose)
        printf("OK\n");
}
