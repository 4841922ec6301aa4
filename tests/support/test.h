/* test.h - a minimal unit-test harness: one executable per module, each test
 * a function, every failed check reported with file and line, and a closing
 * "N passed, N failed" line that CTest and CI read. */
#ifndef HERALD_TEST_H
#define HERALD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks_;
static int test_current_failed_;
static int test_passed_;
static int test_failed_;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      test_failed_checks_++;                                                   \
      test_current_failed_ = 1;                                                \
    }                                                                          \
  } while (0)

#define CHECK_EQ(a, b)                                                         \
  do {                                                                         \
    long long a_ = (long long)(a), b_ = (long long)(b);                        \
    if (a_ != b_) {                                                            \
      fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n",        \
              __FILE__, __LINE__, #a, #b, a_, b_);                             \
      test_failed_checks_++;                                                   \
      test_current_failed_ = 1;                                                \
    }                                                                          \
  } while (0)

#define CHECK_MEM(p, q, n)                                                     \
  do {                                                                         \
    if (memcmp((p), (q), (n)) != 0) {                                          \
      fprintf(stderr, "%s:%d: check failed: memory %s == %s\n", __FILE__,      \
              __LINE__, #p, #q);                                               \
      test_failed_checks_++;                                                   \
      test_current_failed_ = 1;                                                \
    }                                                                          \
  } while (0)

#define CHECK_STR(s, lit)                                                      \
  CHECK((s).len == strlen(lit) && memcmp((s).ptr, (lit), (s).len) == 0)

#define RUN(fn)                                                                \
  do {                                                                         \
    test_current_failed_ = 0;                                                  \
    fn();                                                                      \
    if (test_current_failed_) {                                                \
      fprintf(stderr, "FAIL %s\n", #fn);                                       \
      test_failed_++;                                                          \
    } else {                                                                   \
      printf("ok %s\n", #fn);                                                  \
      test_passed_++;                                                          \
    }                                                                          \
  } while (0)

#define TEST_REPORT()                                                          \
  (printf("%d passed, %d failed\n", test_passed_, test_failed_),               \
   test_failed_ ? 1 : 0)

#endif
