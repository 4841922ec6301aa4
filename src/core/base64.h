/* base64.h - the core's former private names for base64, kept only for the
 * core files that still use them (src/core/conn.c). The base64 functions
 * are public now: herald_base64_encode(), herald_base64_decode() and
 * herald_base64_value() in herald/core.h, whose contract these follow. New
 * code uses those; once conn.c does too, delete this file. Internal. */
#ifndef HERALD_BASE64_H
#define HERALD_BASE64_H

#include <stddef.h>
#include <stdint.h>

#include "herald/core.h"

/* Encodes in[0..n) into out, which needs HERALD_BASE64_ENCODED_LEN(n)
 * bytes; writes no NUL. Returns the number of characters written. */
static inline size_t herald__base64_encode(char *out, const uint8_t *in,
                                           size_t n) {
  long r = herald_base64_encode(out, HERALD_BASE64_ENCODED_LEN(n), in, n);
  return r < 0 ? 0 : (size_t)r;
}

/* herald_base64_value(). */
static inline int herald__base64_value(unsigned char c, char c62, char c63) {
  return herald_base64_value(c, c62, c63);
}

/* herald_base64_decode(), but -1 on every error. */
static inline long herald__base64_decode(uint8_t *out, size_t outcap,
                                         const char *in, size_t n) {
  long r = herald_base64_decode(out, outcap, in, n);
  return r < 0 ? -1 : r;
}

#endif
