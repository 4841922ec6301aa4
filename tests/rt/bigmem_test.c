/* bigmem_test.c - the runtime's allocator for the core: large blocks freed
 * on a thread come back for the next large allocation there, within the
 * cache's bounds (blocks and bytes); everything else is libc's. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rt/bigmem.h"
#include "test.h"

static const herald_mem *m = &herald__big_mem;

#define MIB ((size_t)1 << 20)

static void *big_alloc(size_t n) {
  return m->malloc(n, m->user_data);
}
static void big_release(void *p) {
  m->free(p, m->user_data);
}

/* Small blocks are never kept. */
static void test_small_pass_through(void) {
  herald__big_flush();
  void *p = big_alloc(100);
  CHECK(p != NULL);
  p = m->realloc(p, 5000, m->user_data);
  CHECK(p != NULL);
  big_release(p);
  big_release(NULL);
  CHECK_EQ(herald__big_cached(), 0);
}

/* A large block freed is handed out again: the same pages, still mapped. */
static void test_reuse(void) {
  herald__big_flush();
  uint8_t *a = big_alloc(16 * MIB);
  CHECK(a != NULL);
  memset(a, 7, 16 * MIB);
  big_release(a);
  CHECK(herald__big_cached() >= 16 * MIB);
  uint8_t *b = big_alloc(16 * MIB);
  CHECK(b == a);
  CHECK_EQ(herald__big_cached(), 0);
  /* A smaller large request takes it too; the smallest that fits wins. */
  uint8_t *c = big_alloc(2 * MIB);
  big_release(b);
  big_release(c);
  uint8_t *d = big_alloc(MIB + 1);
  CHECK(d == c);
  /* Growing in place while the block is big enough; then from the cache. */
  CHECK(m->realloc(d, 2 * MIB, m->user_data) == d);
  d[0] = 42;
  uint8_t *e = m->realloc(d, 8 * MIB, m->user_data);
  CHECK(e == a);
  CHECK_EQ(e[0], 42);
  CHECK(herald__big_cached() >= 2 * MIB); /* d went back */
  big_release(e);
  herald__big_flush();
  CHECK_EQ(herald__big_cached(), 0);
}

/* The bounds: HERALD_BIG_CACHE_BLOCKS blocks and HERALD_BIG_CACHE_BYTES
 * bytes; a block past either goes back to libc (ASan sees it freed). */
static void test_bounds(void) {
  herald__big_flush();
  enum { N = HERALD_BIG_CACHE_BLOCKS + 2 };
  void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = big_alloc(MIB);
    CHECK(p[i] != NULL);
  }
  for (int i = 0; i < N; i++) {
    big_release(p[i]);
  }
  size_t kept = herald__big_cached();
  CHECK(kept >= HERALD_BIG_CACHE_BLOCKS * MIB);
  CHECK(kept < (HERALD_BIG_CACHE_BLOCKS + 1) * MIB);
  herald__big_flush();
  void *huge = big_alloc(HERALD_BIG_CACHE_BYTES + MIB);
  CHECK(huge != NULL);
  big_release(huge);
  CHECK_EQ(herald__big_cached(), 0);
  /* Four 16 MiB message buffers fit the byte bound. */
  void *q[HERALD_BIG_CACHE_BLOCKS];
  for (int i = 0; i < HERALD_BIG_CACHE_BLOCKS; i++) {
    q[i] = big_alloc(16 * MIB);
  }
  for (int i = 0; i < HERALD_BIG_CACHE_BLOCKS; i++) {
    big_release(q[i]);
  }
  CHECK(herald__big_cached() >= HERALD_BIG_CACHE_BLOCKS * 16 * MIB);
  herald__big_flush();
}

/* Each thread has its own cache, freed when the thread exits. */
static void *thread_main(void *arg) {
  (void)arg;
  big_release(big_alloc(4 * MIB));
  return (void *)herald__big_cached();
}

static void test_threads(void) {
  herald__big_flush();
  pthread_t t;
  void *kept;
  CHECK_EQ(pthread_create(&t, NULL, thread_main, NULL), 0);
  CHECK_EQ(pthread_join(t, &kept), 0);
  CHECK((size_t)kept >= 4 * MIB);
  CHECK_EQ(herald__big_cached(), 0); /* not this thread's */
}

int main(void) {
  RUN(test_small_pass_through);
  RUN(test_reuse);
  RUN(test_bounds);
  RUN(test_threads);
  return TEST_REPORT();
}
