/* sig.h — signal hygiene for the library's own threads. */
#ifndef ES_UTIL_SIG_H
#define ES_UTIL_SIG_H

#include <pthread.h>
#include <signal.h>

/* A write to a socket whose peer has gone must fail with EPIPE, not kill the process. SIGPIPE is
 * thread-directed, so blocking it on the library's socket threads leaves the embedding program's
 * own signal handling alone. */
static inline void es_thread_block_sigpipe(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

#endif
