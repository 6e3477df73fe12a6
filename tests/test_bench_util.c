/* test_bench_util.c — the benchmark helpers in bench/bench_util.h: the clock is monotonic and the
 * read-bandwidth probe returns a plausible positive number (small buffer: a smoke test, not a
 * measurement). */
#include <math.h>
#include <stdio.h>

#include "../bench/bench_util.h"
#include "testutil.h"

int main(void) {
    const double t0 = es_bench_now();
    const uint64_t n0 = es_bench_now_ns();
    volatile double x = 0.0;
    for (int i = 0; i < 1000000; i++) x += 1e-9 * i;
    const double t1 = es_bench_now();
    CHECK(t1 > t0);
    CHECK(es_bench_now_ns() > n0);

    for (int threads = 1; threads <= 3; threads++) {
        const double gbs = es_bench_read_bandwidth_gbs(threads, (size_t)48 << 20);
        printf("read bandwidth, %d thread(s), 48 MiB: %.1f GB/s\n", threads, gbs);
        /* Anything between a slow sanitizer build and a large server is fine. */
        CHECK_MSG(isfinite(gbs) && gbs > 0.05 && gbs < 10000.0, "%d threads: %g GB/s", threads, gbs);
    }
    /* Degenerate arguments are clamped or refused, never crash. */
    CHECK(es_bench_read_bandwidth_gbs(0, 1 << 20) > 0.0);
    CHECK(es_bench_read_bandwidth_gbs(4, 8) < 0.0);  /* fewer vectors than threads */
    return es_test_finish("test_bench_util");
}
