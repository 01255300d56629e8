/*  mock_waiter - parks suspended connections until a deadline or the client's hang-up

    Nothing sleeps inside an MHD callback. A request that must wait (delay-headers, hang, the
    gap between two stream chunks under delay-chunks) suspends its connection and hands it to
    one waiter thread, which owns an epoll set of the waiting sockets and a list of deadlines.
    The waiter resumes a connection when its deadline passes, or as soon as the client hangs
    up (EPOLLRDHUP): MHD itself does not notice a disconnect while a connection is suspended,
    and tests need client aborts to be seen promptly (client_aborts in /mock/stats).
*/

#ifndef MOCK_WAITER_H_INCLUDED
#define MOCK_WAITER_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MOCK_NEVER UINT64_MAX    //  A deadline that never comes (hang)
#define MOCK_GATHER_MAX_MS 60000 //  gather:N lets its streams go after this long regardless

typedef struct _mock_req_t mock_req_t;

typedef struct {
    pthread_t thread;      //  Runs the waiter's loop
    pthread_mutex_t mutex; //  Guards everything below
    int epfd;              //  Sockets of parked connections, watched for EPOLLRDHUP
    int evfd;              //  Wakes the thread when an earlier deadline arrives or on stop
    mock_req_t **items;    //  Parked requests
    size_t n_items;        //  How many
    size_t cap_items;      //  Allocated slots
    uint64_t next_wake;    //  Deadline the thread currently sleeps towards
    size_t n_gathering;    //  Parked items waiting at gather:N
    bool stopping;         //  Destroy in progress: resume everything, accept nothing
} mock_waiter_t;

//  Initialises self and starts its thread. Returns 0, or -1 (close it all the same).
int mock_waiter_start(mock_waiter_t *self);

//  Resumes every parked connection, refuses new ones and joins the thread.
void mock_waiter_stop(mock_waiter_t *self);

//  Releases what mock_waiter_start allocated; the thread must be stopped (or never started).
void mock_waiter_close(mock_waiter_t *self);

//  Suspends req's connection until due (or the client leaves). Must be called from an MHD
//  callback of that connection. Returns 0, or -1 when shutting down (connection not held).
int mock_waiter_hold(mock_req_t *req, uint64_t due);

//  Like mock_waiter_hold, for a stream at gather:count: it waits until count streams wait
//  there at once (then all of them go on), MOCK_GATHER_MAX_MS, or the client's hang-up.
int mock_waiter_gather(mock_req_t *req, int count);

#endif
