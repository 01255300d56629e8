/*  ops_cert: `tollgate cert make|list`, the cluster's CURVE certificates
    (proto_socket describes the folder and what the programs do with it).

        tollgate cert make [--curve-dir FOLDER] [--dir DIR] [--replace] [PROGRAM ...]
        tollgate cert list [--curve-dir FOLDER] [--dir DIR]

    Exit codes: 0 done, 1 could not write or read, 2 bad usage.
*/
#ifndef OPS_CERT_H_INCLUDED
#define OPS_CERT_H_INCLUDED

//  Runs `tollgate cert ...`; argv[0] is "cert". Returns the exit code.
int ops_cert_main(int argc, char **argv);

#endif
