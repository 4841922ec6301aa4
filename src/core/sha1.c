/* sha1.c - SHA-1 as specified by FIPS 180-4 section 6.1.
 *
 * SHA-1 is no longer collision resistant, but RFC 6455 section 4.2.2 fixes it
 * for Sec-WebSocket-Accept, where it only proves that the server understood
 * the handshake. The core carries its own copy so that it does not depend on
 * a crypto library. */
#include "core/sha1.h"

#include <string.h>

/* FIPS 180-4 section 3.2: circular left shift of a 32-bit word. */
static uint32_t rotl32(uint32_t x, unsigned n) {
  return (x << n) | (x >> (32 - n));
}

/* Words are big-endian in SHA-1 (FIPS 180-4 section 3.1), independent of the
 * host's byte order, so they are assembled byte by byte. */
static uint32_t load_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static void store_be32(uint8_t *p, uint32_t x) {
  p[0] = (uint8_t)(x >> 24);
  p[1] = (uint8_t)(x >> 16);
  p[2] = (uint8_t)(x >> 8);
  p[3] = (uint8_t)x;
}

/* Processes one 512-bit block (FIPS 180-4 section 6.1.2). The message
 * schedule is kept as a 16-word ring rather than 80 words, which computes the
 * same W[t] with less stack. */
static void sha1_block(uint32_t h[5], const uint8_t *block) {
  uint32_t w[16];
  for (unsigned t = 0; t < 16; t++) {
    w[t] = load_be32(block + 4 * t);
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (unsigned t = 0; t < 80; t++) {
    uint32_t wt;
    if (t < 16) {
      wt = w[t];
    } else {
      wt = rotl32(
          w[(t + 13) & 15] ^ w[(t + 8) & 15] ^ w[(t + 2) & 15] ^ w[t & 15], 1);
      w[t & 15] = wt;
    }
    /* The functions and constants of FIPS 180-4 sections 4.1.1 and 4.2.1. */
    uint32_t f, k;
    if (t < 20) {
      f = (b & c) | (~b & d);
      k = 0x5a827999u;
    } else if (t < 40) {
      f = b ^ c ^ d;
      k = 0x6ed9eba1u;
    } else if (t < 60) {
      f = (b & c) | (b & d) | (c & d);
      k = 0x8f1bbcdcu;
    } else {
      f = b ^ c ^ d;
      k = 0xca62c1d6u;
    }
    uint32_t tmp = rotl32(a, 5) + f + e + k + wt;
    e = d;
    d = c;
    c = rotl32(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

void herald__sha1_init(herald_sha1 *s) {
  /* Initial hash value, FIPS 180-4 section 5.3.1. */
  s->h[0] = 0x67452301u;
  s->h[1] = 0xefcdab89u;
  s->h[2] = 0x98badcfeu;
  s->h[3] = 0x10325476u;
  s->h[4] = 0xc3d2e1f0u;
  s->total = 0;
  s->used = 0;
}

void herald__sha1_update(herald_sha1 *s, const void *p, size_t n) {
  const uint8_t *in = p;
  s->total += n;
  /* Top up a partially filled block first, so that whole blocks can then be
   * hashed straight from the caller's memory without copying. */
  if (s->used > 0) {
    size_t take = 64 - s->used;
    if (take > n) {
      take = n;
    }
    memcpy(s->block + s->used, in, take);
    s->used += take;
    in += take;
    n -= take;
    if (s->used < 64) {
      return;
    }
    sha1_block(s->h, s->block);
    s->used = 0;
  }
  while (n >= 64) {
    sha1_block(s->h, in);
    in += 64;
    n -= 64;
  }
  if (n > 0) {
    memcpy(s->block, in, n);
    s->used = n;
  }
}

void herald__sha1_final(herald_sha1 *s, uint8_t digest[20]) {
  /* Padding, FIPS 180-4 section 5.1.1: a 1 bit, zeros up to 448 mod 512
   * bits, then the message length in bits as a 64-bit big-endian number. */
  uint64_t bits = s->total * 8;
  s->block[s->used++] = 0x80;
  if (s->used > 56) {
    memset(s->block + s->used, 0, 64 - s->used);
    sha1_block(s->h, s->block);
    s->used = 0;
  }
  memset(s->block + s->used, 0, 56 - s->used);
  store_be32(s->block + 56, (uint32_t)(bits >> 32));
  store_be32(s->block + 60, (uint32_t)bits);
  sha1_block(s->h, s->block);
  for (unsigned i = 0; i < 5; i++) {
    store_be32(digest + 4 * i, s->h[i]);
  }
  /* The state held (a function of) the message; clear it so that a reused
   * context cannot leak it and must be initialised again. */
  memset(s, 0, sizeof *s);
}
