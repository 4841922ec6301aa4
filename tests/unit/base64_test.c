/* base64_test.c - RFC 4648 section 10 vectors both ways, round trips of
 * every length and byte value, and rejection of everything that is not the
 * canonical padded encoding. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"
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
    size_t n = herald__base64_encode(out, (const uint8_t *)rfc4648[i].raw,
                                     strlen(rfc4648[i].raw));
    CHECK_EQ(n, strlen(rfc4648[i].enc));
    CHECK_MEM(out, rfc4648[i].enc, n);
  }
}

static void test_decode_vectors(void) {
  for (size_t i = 0; i < sizeof rfc4648 / sizeof rfc4648[0]; i++) {
    uint8_t out[16];
    const char *enc = rfc4648[i].enc;
    long n = herald__base64_decode(out, sizeof out, enc, strlen(enc));
    CHECK_EQ(n, strlen(rfc4648[i].raw));
    CHECK_MEM(out, rfc4648[i].raw, strlen(rfc4648[i].raw));
    /* An exact-size output buffer is enough; one byte less is not. The
     * input is copied to an exact-size allocation so that ASan sees any
     * read past its end. */
    size_t rl = strlen(rfc4648[i].raw);
    size_t el = strlen(enc);
    char *copy = malloc(el ? el : 1);
    memcpy(copy, enc, el);
    uint8_t *exact = malloc(rl ? rl : 1);
    CHECK_EQ(herald__base64_decode(exact, rl, copy, el), rl);
    if (rl > 0) {
      CHECK_EQ(herald__base64_decode(exact, rl - 1, copy, el), -1);
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
  CHECK_EQ(herald__base64_decode(raw, sizeof raw, enc, 64), 48);
  char back[64];
  CHECK_EQ(herald__base64_encode(back, raw, 48), 64);
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
    size_t el = herald__base64_encode(enc, raw, n);
    CHECK_EQ(el, 4 * ((n + 2) / 3));
    CHECK_EQ(herald__base64_decode(dec, sizeof dec, enc, el), n);
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
    long r = herald__base64_decode(out, sizeof out, bad[i], n);
    if (r != -1) {
      fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    CHECK_EQ(r, -1);
  }
}

static void test_websocket_key_size(void) {
  /* A Sec-WebSocket-Key decodes to exactly 16 bytes into a 16-byte buffer;
   * 17 bytes do not fit and are refused. */
  uint8_t out[16];
  CHECK_EQ(herald__base64_decode(out, 16, "dGhlIHNhbXBsZSBub25jZQ==", 24), 16);
  CHECK_MEM(out, "the sample nonce", 16);
  CHECK_EQ(herald__base64_decode(out, 16, "dGhlIHNhbXBsZSBub25jZXM=", 24), -1);
}

int main(void) {
  RUN(test_encode_vectors);
  RUN(test_decode_vectors);
  RUN(test_all_alphabet);
  RUN(test_roundtrip);
  RUN(test_rejects);
  RUN(test_websocket_key_size);
  return TEST_REPORT();
}
