/* membw.h — a memory read-bandwidth probe: the bound that CPU decoding speed is measured against
 * (tokens/s <= bandwidth / bytes read per token). */
#ifndef ES_UTIL_MEMBW_H
#define ES_UTIL_MEMBW_H

#include <stddef.h>

/* Reads a `bytes`-sized buffer (0: 1 GiB; allocated and written first by the threads that read it)
 * with n_threads threads, best of `reps` passes; returns GB/s (1e9 bytes per second), or a negative
 * number if the buffer cannot be allocated or holds fewer 16-byte vectors than threads. */
double es_membw_read_gbs(size_t bytes, int n_threads, int reps);

#endif
