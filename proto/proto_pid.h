/*  proto_pid: getpid() answered from memory, for libzmq's fork checks.

    libzmq 4.3.4 compares getpid() with the pid it saved, to notice that it
    runs in a forked child, each time a thread signals or checks a mailbox:
    several times per message on each side (docs/benchmarks.md). glibc asks
    the kernel every time (it stopped caching the pid in 2.25), and a system
    call costs about 1 µs on this virtual machine. Ingress and dispatch made
    3.3 getpid per request at 32 connections and 16 at 2 connections: 16 %
    and 26 % of their system calls.

    This module defines getpid(). The dynamic linker looks in the program
    before the shared libraries, so libzmq's calls come here (the link
    exports the symbol: proto/CMakeLists.txt). Until proto_pid_cache_start
    is called it asks the kernel every time, as glibc does. After, it answers
    with the pid it saved, and a fork() clears that in the child, as glibc
    did before 2.25, so libzmq's check still sees a child for what it is.
    A child of vfork or posix_spawn shares the parent's memory but only runs
    exec, and glibc's own calls use its internal getpid, not this one.
*/
#ifndef PROTO_PID_H_INCLUDED
#define PROTO_PID_H_INCLUDED

#include <stdbool.h>

//  Call once at start. False if the program's getpid is not the one the
//  libraries resolve (the symbol was not exported); it then still answers,
//  from the kernel.
bool proto_pid_cache_start(void);

void proto_pid_test(bool verbose);

#endif
