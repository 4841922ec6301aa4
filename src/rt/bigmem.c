/*
 * bigmem.c - the allocator the runtime gives the core. Small blocks are
 * libc's. A medium block (HERALD_MID_MIN and up: an output buffer that held
 * a large echo, the message buffer of a 64 KiB message) or a large one
 * (HERALD_BIG_MIN and up: the message buffer of a large message) is not
 * returned to libc when freed but kept by the thread that freed it, within
 * the bounds of its class (blocks and bytes), and handed out again for the
 * next allocation of its class on that thread. Each loop runs on one
 * thread, so this is a cache per loop. Without it every 16 MiB message took
 * a fresh mapping from libc (mmap, or brk and a trim), 4096 page faults to
 * fill it, and an munmap; every 64 KiB echo that the socket did not take at
 * once went through libc's large-chunk paths twice.
 *
 * Kept blocks go back to libc when the thread exits, when they waited
 * HERALD_BIG_IDLE_ROUNDS rounds of herald__big_idle() (the loop's tick)
 * unused, and all at once when libc has no memory for a request.
 *
 * The size of a block is libc's malloc_usable_size(), so small blocks carry
 * no header and cost nothing more than the size lookup when freed.
 */
#include "rt/bigmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The kept blocks of one class. stamp: the idle round it was kept in. */
typedef struct cache_class {
  void *blk[HERALD_MID_CACHE_BLOCKS];
  size_t size[HERALD_MID_CACHE_BLOCKS];
  uint32_t stamp[HERALD_MID_CACHE_BLOCKS];
  int n;
  size_t bytes;
} cache_class;

_Static_assert(HERALD_BIG_CACHE_BLOCKS <= HERALD_MID_CACHE_BLOCKS,
               "one array size serves both classes");

typedef struct big_cache {
  cache_class mid, big;
  uint32_t round; /* herald__big_idle() calls */
  int registered; /* the exit key holds this cache */
} big_cache;

static _Thread_local big_cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void class_free_all(cache_class *k) {
  for (int i = 0; i < k->n; i++) {
    free(k->blk[i]);
  }
  k->n = 0;
  k->bytes = 0;
}

static void cache_free_all(big_cache *c) {
  class_free_all(&c->mid);
  class_free_all(&c->big);
}

/* At thread exit: the key's value is the exiting thread's cache. */
static void on_thread_exit(void *c) {
  cache_free_all(c);
}

static void make_exit_key(void) {
  (void)pthread_key_create(&exit_key, on_thread_exit);
}

/* The class of a block or request of n bytes, or NULL for a small one. */
static cache_class *class_of(size_t n) {
  return n >= HERALD_BIG_MIN   ? &cache.big
         : n >= HERALD_MID_MIN ? &cache.mid
                               : NULL;
}

static void class_remove(cache_class *k, int i) {
  k->bytes -= k->size[i];
  k->n--;
  k->blk[i] = k->blk[k->n];
  k->size[i] = k->size[k->n];
  k->stamp[i] = k->stamp[k->n];
}

/* The smallest kept block of at least n bytes, taken out, or NULL. */
static void *cache_take(size_t n) {
  cache_class *k = class_of(n);
  if (k == NULL) {
    return NULL;
  }
  int best = -1;
  for (int i = 0; i < k->n; i++) {
    if (k->size[i] >= n && (best < 0 || k->size[i] < k->size[best])) {
      best = i;
    }
  }
  if (best < 0) {
    return NULL;
  }
  void *p = k->blk[best];
  class_remove(k, best);
  return p;
}

/* Keeps p (size bytes) if its class's bounds allow; returns 0 when they do
 * not (or p is small). */
static int cache_put(void *p, size_t size) {
  cache_class *k = class_of(size);
  if (k == NULL) {
    return 0;
  }
  int max_n =
      k == &cache.big ? HERALD_BIG_CACHE_BLOCKS : HERALD_MID_CACHE_BLOCKS;
  size_t max_bytes =
      k == &cache.big ? HERALD_BIG_CACHE_BYTES : HERALD_MID_CACHE_BYTES;
  if (k->n == max_n || size > max_bytes - k->bytes) {
    return 0;
  }
  if (!cache.registered) {
    pthread_once(&exit_once, make_exit_key);
    (void)pthread_setspecific(exit_key, &cache);
    cache.registered = 1;
  }
  k->blk[k->n] = p;
  k->size[k->n] = size;
  k->stamp[k->n] = cache.round;
  k->n++;
  k->bytes += size;
  return 1;
}

static void big_free(void *p, void *ud) {
  (void)ud;
  if (p == NULL) {
    return;
  }
  size_t size = malloc_usable_size(p);
  if (!cache_put(p, size)) {
    free(p);
  }
}

/* Out of memory: what this thread keeps goes back, and libc tries again. */
static void *retry_malloc(size_t n) {
  void *p = malloc(n);
  if (p == NULL && (cache.mid.n || cache.big.n)) {
    cache_free_all(&cache);
    p = malloc(n);
  }
  return p;
}

static void *big_malloc(size_t n, void *ud) {
  (void)ud;
  void *p = cache_take(n);
  return p != NULL ? p : retry_malloc(n);
}

static void *big_realloc(void *p, size_t n, void *ud) {
  if (p == NULL) {
    return big_malloc(n, ud);
  }
  if (n < HERALD_MID_MIN) {
    return realloc(p, n);
  }
  size_t have = malloc_usable_size(p);
  if (have >= n && have >= HERALD_MID_MIN) {
    return p; /* a kept-size block is kept whole, never shrunk in place */
  }
  void *q = cache_take(n);
  if (q == NULL) {
    q = realloc(p, n);
    if (q == NULL && (cache.mid.n || cache.big.n)) {
      cache_free_all(&cache);
      q = realloc(p, n);
    }
    return q;
  }
  memcpy(q, p, have < n ? have : n);
  big_free(p, ud);
  return q;
}

const herald_mem herald__big_mem = {big_malloc, big_realloc, big_free, NULL};

size_t herald__big_cached(void) {
  return cache.mid.bytes + cache.big.bytes;
}

void herald__big_flush(void) {
  cache_free_all(&cache);
}

static size_t class_idle(cache_class *k) {
  size_t freed = 0;
  for (int i = 0; i < k->n;) {
    if (cache.round - k->stamp[i] >= HERALD_BIG_IDLE_ROUNDS) {
      freed += k->size[i];
      free(k->blk[i]);
      class_remove(k, i);
    } else {
      i++;
    }
  }
  return freed;
}

size_t herald__big_idle(void) {
  cache.round++;
  if (cache.mid.n == 0 && cache.big.n == 0) {
    return 0;
  }
  return class_idle(&cache.mid) + class_idle(&cache.big);
}
