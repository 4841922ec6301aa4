/* mask_test.c - RFC 6455 section 5.3 masking against a byte-at-a-time
 * reference: every key offset, lengths 0..300 and large, misaligned buffers,
 * split application, mask_copy, and involution. */
#include "core/mask.h"
#include "test.h"

static const uint8_t key[4] = {0x37, 0xFA, 0x21, 0x3D};

/* The definition: byte i is XORed with key[(off + i) mod 4]. */
static size_t ref_mask(uint8_t *p, size_t n, const uint8_t k[4], size_t off) {
  for (size_t i = 0; i < n; i++)
    p[i] ^= k[(off + i) % 4];
  return (off + n) % 4;
}

static uint64_t rng_state = 0x243F6A8885A308D3ull;

static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

static void fill(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(rng() >> 56);
}

#define CAP (1u << 20)
#define SLACK 64
static uint8_t orig[CAP + SLACK];
static uint8_t want[CAP + SLACK];
static uint8_t got[CAP + SLACK];
static uint8_t out[CAP + SLACK];

/* Masks n bytes at misalignment mis with offset off in place and by copy
 * (into a differently aligned buffer), compares both with the reference, and
 * checks that nothing outside [mis, mis + n) was touched. */
static void check_one(size_t n, size_t off, size_t mis, size_t omis) {
  fill(orig, n + SLACK);
  memcpy(want, orig, n + SLACK);
  memcpy(got, orig, n + SLACK);
  memcpy(out, orig, n + SLACK);
  size_t r = ref_mask(want + mis, n, key, off);

  CHECK_EQ(herald__mask(got + mis, n, key, off), r);
  CHECK_MEM(got, want, n + SLACK);

  CHECK_EQ(herald__mask_copy(out + omis, orig + mis, n, key, off), r);
  CHECK_MEM(out + omis, want + mis, n);
  CHECK_MEM(out, orig, omis);
  CHECK_MEM(out + omis + n, orig + omis + n, SLACK - omis);
  CHECK_MEM(orig, want, mis); /* source untouched outside too */

  /* Masking twice restores the original. */
  CHECK_EQ(herald__mask(got + mis, n, key, off), r);
  CHECK_MEM(got, orig, n + SLACK);
}

static void test_small_all_offsets(void) {
  for (size_t n = 0; n <= 300; n++)
    for (size_t off = 0; off < 4; off++)
      for (size_t mis = 0; mis < 8; mis++)
        check_one(n, off, mis, (mis * 3 + n) % 8);
}

static void test_large(void) {
  static const size_t sizes[] = {511,    512,         513,     1023,
                                 4096,   4099,        65536,   65537,
                                 100003, CAP - 1 - 7, CAP - 32};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    for (size_t off = 0; off < 4; off++)
      check_one(sizes[i], off, (i + off) % 8, (i * 5 + off) % 32);
}

/* Masking the first k bytes and then the rest from the returned offset
 * equals masking the whole at once, for every k. */
static void test_split(void) {
  uint8_t a[400], b[400];
  for (size_t n = 0; n <= 260; n += 13) {
    for (size_t off = 0; off < 4; off++) {
      fill(a, n);
      memcpy(b, a, n);
      ref_mask(a, n, key, off);
      for (size_t k = 0; k <= n; k++) {
        uint8_t c[400];
        memcpy(c, b, n);
        size_t mid = herald__mask(c, k, key, off);
        CHECK_EQ(mid, (off + k) & 3);
        CHECK_EQ(herald__mask(c + k, n - k, key, mid), (off + n) & 3);
        CHECK_MEM(c, a, n);
      }
    }
  }
  /* Many random pieces of a large payload, by copy. */
  size_t n = 300000, done = 0, off = 1;
  fill(orig, n);
  memcpy(want, orig, n);
  ref_mask(want, n, key, 1);
  while (done < n) {
    size_t piece = 1 + (size_t)(rng() % 3000);
    if (piece > n - done)
      piece = n - done;
    off = herald__mask_copy(out + done, orig + done, piece, key, off);
    done += piece;
  }
  CHECK_EQ(off, (1 + n) & 3);
  CHECK_MEM(out, want, n);
}

/* The RFC 6455 section 5.7 example: "Hello" masked with 37 fa 21 3d. */
static void test_rfc_example(void) {
  uint8_t p[5] = {'H', 'e', 'l', 'l', 'o'};
  static const uint8_t masked[5] = {0x7f, 0x9f, 0x4d, 0x51, 0x58};
  CHECK_EQ(herald__mask(p, 5, key, 0), 1);
  CHECK_MEM(p, masked, 5);
  CHECK_EQ(herald__mask(NULL, 0, key, 3), 3);
  CHECK_EQ(herald__mask_copy(NULL, NULL, 0, key, 2), 2);
}

/* Source and destination in exactly-sized heap blocks, so that ASan catches
 * any access outside them. */
static void test_exact_buffers(void) {
  for (size_t n = 1; n <= 600; n += 1 + n / 16) {
    for (size_t off = 0; off < 4; off++) {
      uint8_t *a = malloc(n), *b = malloc(n), *c = malloc(n);
      fill(a, n);
      memcpy(c, a, n);
      ref_mask(c, n, key, off);
      CHECK_EQ(herald__mask_copy(b, a, n, key, off), (off + n) & 3);
      CHECK_MEM(b, c, n);
      CHECK_EQ(herald__mask(a, n, key, off), (off + n) & 3);
      CHECK_MEM(a, c, n);
      free(a);
      free(b);
      free(c);
    }
  }
}

int main(void) {
  RUN(test_rfc_example);
  RUN(test_small_all_offsets);
  RUN(test_large);
  RUN(test_split);
  RUN(test_exact_buffers);
  return TEST_REPORT();
}
