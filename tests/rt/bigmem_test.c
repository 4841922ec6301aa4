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
  p = m->realloc(p, HERALD_MID_MIN - 64, m->user_data);
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

/* Medium blocks (an output buffer after a 64 KiB echo) are kept too, in
 * their own class with its own bounds; a request is served from its own
 * class only. */
static void test_medium(void) {
  herald__big_flush();
  uint8_t *a = big_alloc(HERALD_MID_MIN);
  CHECK(a != NULL);
  big_release(a);
  CHECK(herald__big_cached() >= HERALD_MID_MIN);
  CHECK(herald__big_cached() < 2 * HERALD_MID_MIN);
  void *large = big_alloc(HERALD_BIG_MIN); /* not from the medium class */
  CHECK(large != a);
  CHECK(herald__big_cached() >= HERALD_MID_MIN);
  big_release(large);
  herald__big_flush();
  a = big_alloc(256 << 10);
  big_release(a);
  uint8_t *b = big_alloc(100 << 10);
  CHECK(b == a);
  big_release(b);
  /* Growing past a kept block's size takes a fitting one, or libc's. */
  uint8_t *c = big_alloc(HERALD_MID_MIN);
  c[0] = 9;
  uint8_t *d = m->realloc(c, 200 << 10, m->user_data);
  CHECK(d == a);
  CHECK_EQ(d[0], 9);
  big_release(d);
  /* The bounds: HERALD_MID_CACHE_BLOCKS blocks, HERALD_MID_CACHE_BYTES. */
  herald__big_flush();
  enum { N = HERALD_MID_CACHE_BLOCKS + 2 };
  void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = big_alloc(HERALD_MID_MIN);
  }
  for (int i = 0; i < N; i++) {
    big_release(p[i]);
  }
  size_t kept = herald__big_cached();
  CHECK(kept >= HERALD_MID_CACHE_BLOCKS * HERALD_MID_MIN);
  CHECK(kept < (HERALD_MID_CACHE_BLOCKS + 1) * HERALD_MID_MIN);
  herald__big_flush();
  for (int i = 0; i < 6; i++) {
    p[i] = big_alloc(HERALD_BIG_MIN - 4096);
  }
  for (int i = 0; i < 6; i++) {
    big_release(p[i]);
  }
  CHECK(herald__big_cached() <= HERALD_MID_CACHE_BYTES);
  CHECK(herald__big_cached() >= 3 * (HERALD_BIG_MIN - 4096));
  herald__big_flush();
}

/* Kept blocks not handed out for HERALD_BIG_IDLE_ROUNDS rounds go back;
 * one that circulates stays. */
static void test_idle(void) {
  herald__big_flush();
  void *a = big_alloc(HERALD_MID_MIN);
  void *b = big_alloc(2 * MIB);
  big_release(a);
  big_release(b);
  size_t both = herald__big_cached();
  for (int i = 0; i < HERALD_BIG_IDLE_ROUNDS - 1; i++) {
    CHECK_EQ(herald__big_idle(), 0);
    /* b is used and freed again each round: its wait starts over. */
    void *again = big_alloc(2 * MIB);
    CHECK(again == b);
    big_release(again);
  }
  CHECK_EQ(herald__big_cached(), both);
  size_t freed = herald__big_idle(); /* a's 20th round unused */
  CHECK(freed >= HERALD_MID_MIN && freed < 2 * HERALD_MID_MIN);
  CHECK(herald__big_cached() >= 2 * MIB);
  for (int i = 0; i < HERALD_BIG_IDLE_ROUNDS; i++) {
    (void)herald__big_idle();
  }
  CHECK_EQ(herald__big_cached(), 0);
  CHECK_EQ(herald__big_idle(), 0);
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
  RUN(test_medium);
  RUN(test_idle);
  RUN(test_threads);
  return TEST_REPORT();
}
