/*  proto_config: the configuration every Tollgate program reads.

    One table of known keys (proto_config.c) serves all programs, so one file
    can describe a whole cluster. Precedence, highest first:
        --set key=value on the command line
        environment: TOLLGATE_ + key upper-cased with '.' -> '_'
                     (ingress.listen -> TOLLGATE_INGRESS_LISTEN)
        the config file (--config FILE or TOLLGATE_CONFIG): `key = value` lines, # comments
        built-in defaults
    Unknown keys and values of the wrong kind are errors with a message that
    names the key and where it came from. Secrets print masked.
*/
#ifndef PROTO_CONFIG_H_INCLUDED
#define PROTO_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct _proto_config_t proto_config_t;

//  Creates a configuration holding the defaults.
proto_config_t *proto_config_new(void);

//  Destroys the configuration and nulls the pointer.
void proto_config_destroy(proto_config_t **self_p);

//  Reads `key = value` lines from a file. Returns 0, or -1 with a message in error.
int proto_config_load_file(proto_config_t *self, const char *path, char *error, size_t error_size);

//  Reads TOLLGATE_* variables from a NULL-terminated environment. Returns 0 or -1.
int proto_config_load_env(proto_config_t *self, char **environment, char *error, size_t error_size);

//  Sets one key from text, checking its kind. `origin` names where it came
//  from in error messages. Returns 0 or -1.
int proto_config_set(proto_config_t *self, const char *key, const char *value, const char *origin,
                     char *error, size_t error_size);

//  True when `key` is a known key.
bool proto_config_known(const char *key);

//  Value of a string key. Borrowed; valid until the key is set again.
const char *proto_config_str(proto_config_t *self, const char *key);

//  Value of an integer key.
int64_t proto_config_int(proto_config_t *self, const char *key);

//  Value of a boolean key.
bool proto_config_bool(proto_config_t *self, const char *key);

//  Endpoints to connect to for a component ("billing", "router", "dispatch",
//  "dispatch.events", "health.events", "ledger"): its `.endpoints` list when
//  set, else its own bind address. An item dns://NAME:PORT stands for
//  tcp://ADDRESS:PORT for every IPv4 address NAME resolves to now, sorted
//  (a scaled compose service, a headless Kubernetes service); a name that
//  does not resolve yet stays tcp://NAME:PORT. Fills up to `max`
//  borrowed-until-destroy strings in `out` and returns how many.
int proto_config_endpoints(proto_config_t *self, const char *component, const char **out, int max);

//  Writes every key with its value and origin, secrets masked.
void proto_config_print(proto_config_t *self, FILE *out);

//  Copies `value` into `out` with any password in a URL or conninfo masked.
void proto_config_mask_url(const char *value, char *out, size_t out_size);

//  Self test.
void proto_config_test(bool verbose);

#endif
