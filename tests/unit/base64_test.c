/* base64_test.c - the public base64 of herald/core.h: RFC 4648 section 10
 * vectors both ways, round trips of every length and byte value, output
 * buffers one byte too small, rejection of everything that is not the
 * canonical padded encoding, and the character values of both alphabets. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "herald/core.h"
#include "test.h"

static const struct {
  const char *raw;
  const char *enc;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void test_encode_vectors(void) {
  for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
    char out[16];
    size_t rl = strlen(rfc4648[i].raw);
    size_t el = strlen(rfc4648[i].enc);
    long n = herald_base64_encode(out, sizeof out,
                                  (const uint8_t *)rfc4648[i].raw, rl);
    CHECK_EQ(n, el);
    CHECK_EQ(HERALD_BASE64_ENCODED_LEN(rl), el);
    CHECK_MEM(out, rfc4648[i].enc, el);
    /* An exact-size output buffer is enough (ASan sees any write past it);
     * one byte less is refused and nothing is written. */
    char *exact = malloc(el ? el : 1);
    CHECK_EQ(
        herald_base64_encode(exact, el, (const uint8_t *)rfc4648[i].raw, rl),
        el);
    CHECK_MEM(exact, rfc4648[i].enc, el);
    if (el > 0) {
      memset(out, '#', sizeof out);
      CHECK_EQ(herald_base64_encode(out, el - 1,
                                    (const uint8_t *)rfc4648[i].raw, rl),
               HERALD_ERR_INVALID_ARG);
      CHECK_EQ(out[0], '#');
    }
    free(exact);
  }
  /* No input needs no room, and in may then be NULL. */
  CHECK_EQ(herald_base64_encode(NULL, 0, NULL, 0), 0);
}

static void test_decode_vectors(void) {
  for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
    uint8_t out[16];
    const char *enc = rfc4648[i].enc;
    long n = herald_base64_decode(out, sizeof out, enc, strlen(enc));
    CHECK_EQ(n, strlen(rfc4648[i].raw));
    CHECK(HERALD_BASE64_DECODED_MAX(strlen(enc)) >= (size_t)n);
    CHECK_MEM(out, rfc4648[i].raw, strlen(rfc4648[i].raw));
    /* An exact-size output buffer is enough; one byte less is not. The
     * input is copied to an exact-size allocation so that ASan sees any
     * read past its end. */
    size_t rl = strlen(rfc4648[i].raw);
    size_t el = strlen(enc);
    char *copy = malloc(el ? el : 1);
    memcpy(copy, enc, el);
    uint8_t *exact = malloc(rl ? rl : 1);
    CHECK_EQ(herald_base64_decode(exact, rl, copy, el), rl);
    if (rl > 0) {
      CHECK_EQ(herald_base64_decode(exact, rl - 1, copy, el),
               HERALD_ERR_INVALID_ARG);
    }
    free(exact);
    free(copy);
  }
}

static void test_all_alphabet(void) {
  /* 48 bytes whose encoding uses each of the 64 characters exactly once. */
  const char *enc =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint8_t raw[48];
  CHECK_EQ(herald_base64_decode(raw, sizeof raw, enc, 64), 48);
  char back[64];
  CHECK_EQ(herald_base64_encode(back, sizeof back, raw, 48), 64);
  CHECK_MEM(back, enc, 64);
}

static void test_roundtrip(void) {
  uint8_t raw[300];
  for (size_t i = 0; i < sizeof raw; i++) {
    raw[i] = (uint8_t)(255 - i * 7);
  }
  for (size_t n = 0; n <= sizeof raw; n++) {
    char enc[400];
    uint8_t dec[300];
    long el = herald_base64_encode(enc, sizeof enc, raw, n);
    CHECK_EQ(el, 4 * ((n + 2) / 3));
    CHECK_EQ(herald_base64_decode(dec, sizeof dec, enc, (size_t)el), n);
    CHECK_MEM(dec, raw, n);
  }
}

static void test_rejects(void) {
  static const char *bad[] = {
      "Zg",         /* not a multiple of 4 */
      "Zg=",        /* not a multiple of 4 */
      "Zm9vY",      /* not a multiple of 4 */
      "Zh==",       /* non-zero bits under the padding */
      "Zm9=",       /* non-zero bits under the padding */
      "Z===",       /* too much padding */
      "====",       /* only padding */
      "=Zg=",       /* padding first */
      "Zg=a",       /* padding in the middle of a group */
      "Zg==Zg==",   /* padding before the last group */
      "Zm9v\nYmFy", /* whitespace is not skipped */
      "Zm 9",       /* whitespace is not skipped */
      "Zm9v-_==",   /* the base64url alphabet is not base64 */
      "Zm9\x80",    /* non-ASCII */
      "Zm9\0",      /* NUL */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t out[16];
    size_t n = strlen(bad[i]);
    if (i == sizeof bad / sizeof bad[0] - 1) {
      n = 4;
    }
    long r = herald_base64_decode(out, sizeof out, bad[i], n);
    if (r != HERALD_ERR_INVALID_ARG) {
      fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    CHECK_EQ(r, HERALD_ERR_INVALID_ARG);
  }
}

static void test_websocket_key_size(void) {
  /* A Sec-WebSocket-Key decodes to exactly 16 bytes into a 16-byte buffer;
   * 17 bytes do not fit and are refused. */
  uint8_t out[16];
  CHECK_EQ(herald_base64_decode(out, 16, "dGhlIHNhbXBsZSBub25jZQ==", 24), 16);
  CHECK_MEM(out, "the sample nonce", 16);
  CHECK_EQ(herald_base64_decode(out, 16, "dGhlIHNhbXBsZSBub25jZXM=", 24),
           HERALD_ERR_INVALID_ARG);
}

static void test_values(void) {
  /* Each alphabet's 64 characters have the values 0..63 in order; every
   * other byte, the padding included, has none. */
  static const char std[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  static const char url[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int c = 0; c < 256; c++) {
    const char *s = memchr(std, c, 64);
    const char *u = memchr(url, c, 64);
    CHECK_EQ(herald_base64_value((unsigned char)c, '+', '/'), s ? s - std : -1);
    CHECK_EQ(herald_base64_value((unsigned char)c, '-', '_'), u ? u - url : -1);
  }
}

int main(void) {
  RUN(test_encode_vectors);
  RUN(test_decode_vectors);
  RUN(test_all_alphabet);
  RUN(test_roundtrip);
  RUN(test_rejects);
  RUN(test_websocket_key_size);
  RUN(test_values);
  return TEST_REPORT();
}
