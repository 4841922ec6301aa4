/*
 * bigmem.c - the allocator the runtime gives the core. Small blocks are
 * libc's. A large block (HERALD_BIG_MIN and up: the message buffer of a
 * large message) is not returned to libc when freed but kept by the thread
 * that freed it, up to HERALD_BIG_CACHE_BLOCKS blocks and
 * HERALD_BIG_CACHE_BYTES bytes, and handed out again for the next large
 * allocation on that thread. Each loop runs on one thread, so this is a
 * cache per loop. Without it every 16 MiB message took a fresh mapping from
 * libc (mmap, or brk and a trim), 4096 page faults to fill it, and an
 * munmap.
 *
 * The size of a block is libc's malloc_usable_size(), so small blocks carry
 * no header and cost nothing more than the size lookup when freed.
 */
#include "rt/bigmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct big_cache {
  void *blk[HERALD_BIG_CACHE_BLOCKS];
  size_t size[HERALD_BIG_CACHE_BLOCKS];
  int n;
  size_t bytes;
} big_cache;

static _Thread_local big_cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void cache_free_all(big_cache *c) {
  for (int i = 0; i < c->n; i++) {
    free(c->blk[i]);
  }
  c->n = 0;
  c->bytes = 0;
}

/* At thread exit: the key's value is the exiting thread's cache. */
static void on_thread_exit(void *c) {
  cache_free_all(c);
}

static void make_exit_key(void) {
  (void)pthread_key_create(&exit_key, on_thread_exit);
}

/* The smallest kept block of at least n bytes, taken out, or NULL. */
static void *cache_take(size_t n) {
  int best = -1;
  for (int i = 0; i < cache.n; i++) {
    if (cache.size[i] >= n && (best < 0 || cache.size[i] < cache.size[best])) {
      best = i;
    }
  }
  if (best < 0) {
    return NULL;
  }
  void *p = cache.blk[best];
  cache.bytes -= cache.size[best];
  cache.n--;
  cache.blk[best] = cache.blk[cache.n];
  cache.size[best] = cache.size[cache.n];
  return p;
}

/* Keeps p (size bytes) if the bounds allow; returns 0 when they do not. */
static int cache_put(void *p, size_t size) {
  if (cache.n == HERALD_BIG_CACHE_BLOCKS ||
      size > HERALD_BIG_CACHE_BYTES - cache.bytes) {
    return 0;
  }
  if (cache.n == 0) {
    pthread_once(&exit_once, make_exit_key);
    (void)pthread_setspecific(exit_key, &cache);
  }
  cache.blk[cache.n] = p;
  cache.size[cache.n] = size;
  cache.n++;
  cache.bytes += size;
  return 1;
}

static void big_free(void *p, void *ud) {
  (void)ud;
  if (p == NULL) {
    return;
  }
  size_t size = malloc_usable_size(p);
  if (size < HERALD_BIG_MIN || !cache_put(p, size)) {
    free(p);
  }
}

static void *big_malloc(size_t n, void *ud) {
  (void)ud;
  void *p = n >= HERALD_BIG_MIN ? cache_take(n) : NULL;
  return p != NULL ? p : malloc(n);
}

static void *big_realloc(void *p, size_t n, void *ud) {
  if (n < HERALD_BIG_MIN || p == NULL) {
    return p == NULL ? big_malloc(n, ud) : realloc(p, n);
  }
  size_t have = malloc_usable_size(p);
  if (have >= n) {
    return p; /* a large block is kept whole, never shrunk in place */
  }
  void *q = cache_take(n);
  if (q == NULL) {
    return realloc(p, n);
  }
  memcpy(q, p, have);
  big_free(p, ud);
  return q;
}

const herald_mem herald__big_mem = {big_malloc, big_realloc, big_free, NULL};

size_t herald__big_cached(void) {
  return cache.bytes;
}

void herald__big_flush(void) {
  cache_free_all(&cache);
}
