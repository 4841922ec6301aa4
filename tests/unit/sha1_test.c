/* sha1_test.c - SHA-1 against the FIPS 180-4 example vectors (as published
 * in the NIST "Example Values" and RFC 3174 section 7.3), at the padding
 * boundaries, and for every way of splitting the input across updates. */
#include <stdint.h>
#include <string.h>

#include "core/sha1.h"
#include "test.h"

/* Hashes p[0..n) in one update and writes the digest as lowercase hex. */
static void sha1_hex(const void *p, size_t n, char out[41]) {
  herald_sha1 s;
  uint8_t d[20];
  herald__sha1_init(&s);
  herald__sha1_update(&s, p, n);
  herald__sha1_final(&s, d);
  for (int i = 0; i < 20; i++) {
    snprintf(out + 2 * i, 3, "%02x", d[i]);
  }
}

static void test_abc(void) {
  char hex[41];
  sha1_hex("abc", 3, hex);
  CHECK(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
}

static void test_empty(void) {
  char hex[41];
  sha1_hex("", 0, hex);
  CHECK(strcmp(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709") == 0);
  /* An update of zero bytes from a NULL pointer is a no-op. */
  herald_sha1 s;
  uint8_t d[20], e[20];
  herald__sha1_init(&s);
  herald__sha1_update(&s, NULL, 0);
  herald__sha1_final(&s, d);
  herald__sha1_init(&s);
  herald__sha1_final(&s, e);
  CHECK_MEM(d, e, 20);
}

static void test_448_bits(void) {
  const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  char hex[41];
  CHECK_EQ(strlen(m), 56);
  sha1_hex(m, strlen(m), hex);
  CHECK(strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0);
}

static void test_896_bits(void) {
  const char *m = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                  "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
  char hex[41];
  sha1_hex(m, strlen(m), hex);
  CHECK(strcmp(hex, "a49b2446a02c645bf419f995b67091253a04a259") == 0);
}

static void test_million_a(void) {
  /* Fed in uneven pieces so that the partial-block path runs too. */
  static char chunk[1000];
  memset(chunk, 'a', sizeof chunk);
  herald_sha1 s;
  uint8_t d[20];
  char hex[41];
  herald__sha1_init(&s);
  size_t left = 1000000;
  size_t step = 1;
  while (left > 0) {
    size_t k = step < left ? step : left;
    herald__sha1_update(&s, chunk, k);
    left -= k;
    step = step % 991 + 7; /* never more than the chunk */
  }
  herald__sha1_final(&s, d);
  for (int i = 0; i < 20; i++) {
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  }
  CHECK(strcmp(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f") == 0);
}

/* Lengths around the padding boundaries: 55 bytes is the longest message
 * whose padding fits in one block; 56..63 need a second block. */
static void test_padding_boundaries(void) {
  static const struct {
    size_t n;
    const char *hex;
  } v[] = {
      {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
      {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
      {57, "f08f24908d682555111be7ff6f004e78283d989a"},
      {63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5"},
      {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
      {65, "11655326c708d70319be2610e8a57d9a5b959d3b"},
      {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
      {120, "f34c1488385346a55709ba056ddd08280dd4c6d6"},
      {128, "ad5b3fdbcb526778c2839d2f151ea753995e26a0"},
  };
  char a[128];
  memset(a, 'a', sizeof a);
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char hex[41];
    sha1_hex(a, v[i].n, hex);
    CHECK(strcmp(hex, v[i].hex) == 0);
  }
}

/* Every split into two updates, and byte-at-a-time, gives the one-shot
 * digest. */
static void test_splits(void) {
  uint8_t msg[200];
  for (size_t i = 0; i < sizeof msg; i++) {
    msg[i] = (uint8_t)(i * 37 + 11);
  }
  uint8_t whole[20];
  herald_sha1 s;
  herald__sha1_init(&s);
  herald__sha1_update(&s, msg, sizeof msg);
  herald__sha1_final(&s, whole);
  for (size_t k = 0; k <= sizeof msg; k++) {
    uint8_t d[20];
    herald__sha1_init(&s);
    herald__sha1_update(&s, msg, k);
    herald__sha1_update(&s, msg + k, sizeof msg - k);
    herald__sha1_final(&s, d);
    CHECK_MEM(d, whole, 20);
  }
  uint8_t d[20];
  herald__sha1_init(&s);
  for (size_t i = 0; i < sizeof msg; i++) {
    herald__sha1_update(&s, msg + i, 1);
  }
  herald__sha1_final(&s, d);
  CHECK_MEM(d, whole, 20);
}

int main(void) {
  RUN(test_abc);
  RUN(test_empty);
  RUN(test_448_bits);
  RUN(test_896_bits);
  RUN(test_million_a);
  RUN(test_padding_boundaries);
  RUN(test_splits);
  return TEST_REPORT();
}
