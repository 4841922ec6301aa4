/* bigmem.h - the allocator the runtime gives the core: libc's, with medium
 * and large blocks kept for reuse on the thread that freed them
 * (bigmem.c). */
#ifndef HERALD_RT_BIGMEM_H
#define HERALD_RT_BIGMEM_H

#include <stddef.h>

#include "herald/core.h"

/* Blocks of at least this many bytes are medium: an output buffer that
 * held a large echo, a message buffer of 64 KiB and up. */
#define HERALD_MID_MIN ((size_t)64 << 10)
/* Blocks of at least this many bytes are large. */
#define HERALD_BIG_MIN ((size_t)1 << 20)

/* What one thread keeps of the medium blocks freed on it, at most: this
 * many blocks and this many bytes. */
#define HERALD_MID_CACHE_BLOCKS 16
#define HERALD_MID_CACHE_BYTES ((size_t)4 << 20)

/* What one thread keeps of the large blocks freed on it, at most: this many
 * blocks and this many bytes. A block freed past either bound of its class
 * goes back to libc. */
#define HERALD_BIG_CACHE_BLOCKS 4
/* Four buffers of a 16 MiB message (the default max_message_size), with
 * libc's rounding. */
#define HERALD_BIG_CACHE_BYTES                                                 \
  ((size_t)HERALD_BIG_CACHE_BLOCKS * (((size_t)16 << 20) + 65536))

/* A kept block that was not handed out again for this many calls of
 * herald__big_idle() goes back to libc. */
#define HERALD_BIG_IDLE_ROUNDS 20

/* The allocator a server or client gives its connections when their
 * herald_config has no mem of its own. */
extern const herald_mem herald__big_mem;

/* Bytes the calling thread keeps in medium and large blocks. */
size_t herald__big_cached(void);

/* Frees the blocks the calling thread keeps (also done at thread exit). */
void herald__big_flush(void);

/* One round of the calling thread's idle release: frees the kept blocks
 * that waited HERALD_BIG_IDLE_ROUNDS rounds without being handed out. A
 * loop calls it on its timer tick (every 100 ms: unused blocks go back
 * after 2 s). Returns the bytes freed. */
size_t herald__big_idle(void);

#endif
