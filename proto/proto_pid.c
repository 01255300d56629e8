//  proto_pid: see proto_pid.h.
#include "proto_pid.h"
#include "proto_check.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

//  Whole-process facts: the pid is one per process, whatever the thread.
//  0 in s_saved means "ask the kernel on the next call".
static int s_started;
static pid_t s_saved;

static pid_t s_kernel_pid(void)
{
    return (pid_t)syscall(SYS_getpid);
}

static void s_forget_in_child(void)
{
    __atomic_store_n(&s_saved, 0, __ATOMIC_RELAXED);
}

pid_t getpid(void)
{
    if (!__atomic_load_n(&s_started, __ATOMIC_RELAXED))
        return s_kernel_pid();
    pid_t pid = __atomic_load_n(&s_saved, __ATOMIC_RELAXED);
    if (pid == 0) {
        pid = s_kernel_pid();
        __atomic_store_n(&s_saved, pid, __ATOMIC_RELAXED);
    }
    return pid;
}

static void s_register(void)
{
    //  Registered before the cache is on, so no fork can copy a saved pid
    //  into a child that does not clear it.
    if (pthread_atfork(NULL, NULL, s_forget_in_child) == 0)
        __atomic_store_n(&s_started, 1, __ATOMIC_RELAXED);
}

bool proto_pid_cache_start(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, s_register);
    //  What the libraries' calls resolve to: ours only if it was exported.
    pid_t (*resolved)(void) = NULL;
    *(void **)&resolved = dlsym(RTLD_DEFAULT, "getpid");
    return resolved == getpid && __atomic_load_n(&s_started, __ATOMIC_RELAXED);
}

//  --------------------------------------------------------------------------
//  Self test

//  In a child: from here on the getpid system call fails with EPERM.
static bool s_forbid_getpid_syscall(void)
{
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = {.len = sizeof code / sizeof code[0], .filter = code};
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
           prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

//  libzmq connects, sends and receives over inproc: every step goes through
//  its mailboxes and their getpid checks. A check that saw -1 would take this
//  process for a forked child and drop its signals, and the receive would fail.
static bool s_zmq_round_trip(void)
{
    void *context = zmq_ctx_new();
    void *server = zmq_socket(context, ZMQ_PAIR);
    void *client = zmq_socket(context, ZMQ_PAIR);
    int timeout = 2000;
    bool ok = server && client && zmq_bind(server, "inproc://proto-pid") == 0 &&
              zmq_connect(client, "inproc://proto-pid") == 0 &&
              zmq_setsockopt(server, ZMQ_RCVTIMEO, &timeout, sizeof timeout) == 0 &&
              zmq_send(client, "ping", 4, 0) == 4;
    char buffer[8] = "";
    ok = ok && zmq_recv(server, buffer, sizeof buffer, 0) == 4 && memcmp(buffer, "ping", 4) == 0;
    zmq_close(client);
    zmq_close(server);
    zmq_ctx_term(context);
    return ok;
}

//  Exit status of a child running check: 0 when it held.
static int s_in_child(int (*check)(pid_t parent), pid_t parent)
{
    pid_t child = fork();
    PROTO_CHECK(child >= 0);
    if (child == 0)
        _exit(check(parent));
    int status = 0;
    PROTO_CHECK(waitpid(child, &status, 0) == child);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

static int s_child_has_own_pid(pid_t parent)
{
    pid_t own = s_kernel_pid();
    if (own == parent)
        return 1;
    return getpid() == own ? 0 : 2;
}

static int s_child_without_syscall(pid_t parent)
{
    (void)parent;
    pid_t own = getpid();
    if (own != s_kernel_pid())
        return 1;
    if (!s_forbid_getpid_syscall())
        return 2;
    //  The filter holds, and from here only the saved pid answers.
    if (s_kernel_pid() != -1)
        return 3;
    if (getpid() != own)
        return 4;
    return s_zmq_round_trip() ? 0 : 5;
}

void proto_pid_test(bool verbose)
{
    if (verbose)
        printf(" * proto_pid: ");
    //  Before the start, and after: the kernel's answer.
    PROTO_CHECK(getpid() == s_kernel_pid());
    PROTO_CHECK(proto_pid_cache_start());
    PROTO_CHECK(proto_pid_cache_start());
    pid_t parent = getpid();
    PROTO_CHECK(parent == s_kernel_pid());
    //  A forked child answers with its own pid, not the parent's saved one.
    PROTO_CHECK(s_in_child(s_child_has_own_pid, parent) == 0);
    //  With the system call forbidden, getpid and libzmq still work.
    PROTO_CHECK(s_in_child(s_child_without_syscall, parent) == 0);
    PROTO_CHECK(getpid() == parent);
    if (verbose)
        printf("OK\n");
}
