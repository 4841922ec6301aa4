/* bigmem.h - the allocator the runtime gives the core: libc's, with large
 * blocks kept for reuse on the thread that freed them (bigmem.c). */
#ifndef HERALD_RT_BIGMEM_H
#define HERALD_RT_BIGMEM_H

#include <stddef.h>

#include "herald/core.h"

/* Blocks of at least this many bytes are large. */
#define HERALD_BIG_MIN ((size_t)1 << 20)
/* What one thread keeps of the large blocks freed on it, at most: this many
 * blocks and this many bytes. A large block freed past either bound goes
 * back to libc. */
#define HERALD_BIG_CACHE_BLOCKS 4
/* Four buffers of a 16 MiB message (the default max_message_size), with
 * libc's rounding. */
#define HERALD_BIG_CACHE_BYTES                                                 \
  ((size_t)HERALD_BIG_CACHE_BLOCKS * (((size_t)16 << 20) + 65536))

/* The allocator a server or client gives its connections when their
 * herald_config has no mem of its own. */
extern const herald_mem herald__big_mem;

/* Bytes the calling thread keeps in large blocks. */
size_t herald__big_cached(void);

/* Frees the blocks the calling thread keeps (also done at thread exit). */
void herald__big_flush(void);

#endif
