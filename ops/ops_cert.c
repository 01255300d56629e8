#include "ops_cert.h"
#include "ops_state.h"
#include "proto_config.h"
#include "proto_socket.h"

#include <czmq.h>
#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void s_usage(FILE *out)
{
    fprintf(out, "usage: tollgate cert make [--curve-dir FOLDER] [--dir DIR] [--replace] "
                 "[PROGRAM ...]\n"
                 "       tollgate cert list [--curve-dir FOLDER] [--dir DIR]\n"
                 "  FOLDER defaults to curve.dir in $TOLLGATE_CONFIG or DIR/tollgate.conf,\n"
                 "  else DIR/curve (DIR: --dir, $TOLLGATE_DIR, ./var). `make` writes\n"
                 "  FOLDER/public/NAME.cert and FOLDER/secret/NAME.cert for each program\n"
                 "  (default: every program, admin, probe and tollgate), keeping existing ones\n"
                 "  unless --replace.\n");
}

//  The certificate folder when --curve-dir is not given.
static void s_default_folder(const char *dir, char *out, size_t size)
{
    snprintf(out, size, "%s/curve", dir);
    const char *file = getenv("TOLLGATE_CONFIG");
    char state_file[PATH_MAX];
    snprintf(state_file, sizeof state_file, "%s/tollgate.conf", dir);
    if (!file || !*file)
        file = access(state_file, R_OK) == 0 ? state_file : NULL;
    proto_config_t *config = proto_config_new();
    char error[512];
    if (file && proto_config_load_file(config, file, error, sizeof error) == 0 &&
        *proto_config_str(config, "curve.dir"))
        snprintf(out, size, "%s", proto_config_str(config, "curve.dir"));
    proto_config_destroy(&config);
}

static int s_list(const char *folder)
{
    char public_dir[PATH_MAX];
    snprintf(public_dir, sizeof public_dir, "%s/public", folder);
    DIR *dir = opendir(public_dir);
    if (!dir) {
        fprintf(stderr, "tollgate cert list: no certificates in %s\n", folder);
        return 1;
    }
    zlistx_t *names = zlistx_new();
    zlistx_set_comparator(names, (zlistx_comparator_fn *)strcmp);
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        size_t length = strlen(entry->d_name);
        if (entry->d_name[0] != '.' && length > 5 &&
            strcmp(entry->d_name + length - 5, ".cert") == 0)
            zlistx_add_end(names, strndup(entry->d_name, length - 5));
    }
    closedir(dir);
    zlistx_sort(names);
    printf("%-10s %-40s %s\n", "PROGRAM", "PUBLIC KEY", "SECRET HERE");
    for (char *name = zlistx_first(names); name; name = zlistx_next(names)) {
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/%s.cert", public_dir, name);
        zcert_t *cert = zcert_load(path);
        snprintf(path, sizeof path, "%s/secret/%s.cert", folder, name);
        printf("%-10s %-40s %s\n", name, cert ? zcert_public_txt(cert) : "(unreadable)",
               access(path, F_OK) == 0 ? "yes" : "no");
        zcert_destroy(&cert);
        free(name);
    }
    zlistx_destroy(&names);
    return 0;
}

int ops_cert_main(int argc, char **argv)
{
    static const struct option options[] = {{"curve-dir", required_argument, NULL, 'c'},
                                            {"dir", required_argument, NULL, 'd'},
                                            {"replace", no_argument, NULL, 'r'},
                                            {"help", no_argument, NULL, 'h'},
                                            {NULL, 0, NULL, 0}};
    if (argc < 2 || (strcmp(argv[1], "make") != 0 && strcmp(argv[1], "list") != 0)) {
        s_usage(argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    bool make = strcmp(argv[1], "make") == 0;
    argc--;
    argv++;
    const char *dir =
        getenv("TOLLGATE_DIR") && *getenv("TOLLGATE_DIR") ? getenv("TOLLGATE_DIR") : "./var";
    const char *folder = NULL;
    bool replace = false;
    int option;
    while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (option == 'c')
            folder = optarg;
        else if (option == 'd')
            dir = optarg;
        else if (option == 'r' && make)
            replace = true;
        else {
            s_usage(option == 'h' ? stdout : stderr);
            return option == 'h' ? 0 : 2;
        }
    }
    char chosen[PATH_MAX];
    if (folder)
        snprintf(chosen, sizeof chosen, "%s", folder);
    else
        s_default_folder(dir, chosen, sizeof chosen);
    if (!make) {
        if (optind < argc) {
            s_usage(stderr);
            return 2;
        }
        return s_list(chosen);
    }
    const char *const *programs = ops_cert_programs;
    int count = 0;
    if (optind < argc) {
        programs = (const char *const *)argv + optind;
        count = argc - optind;
    } else
        while (programs[count])
            count++;
    char error[1024];
    int written = proto_socket_make_certs(chosen, programs, count, replace, error, sizeof error);
    if (written < 0) {
        fprintf(stderr, "tollgate cert make: %s\n", error);
        return 1;
    }
    printf("%d certificate(s) written in %s (%d kept)\n", written, chosen, count - written);
    return 0;
}
