/* clock.h — the monotonic clock in seconds: deadlines, timeouts and the latency figures in stats. */
#ifndef ES_UTIL_CLOCK_H
#define ES_UTIL_CLOCK_H

#include <time.h>

static inline double es_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
