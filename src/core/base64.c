/* base64.c - RFC 4648 section 4 base64 with padding; the contract is in
 * herald/core.h.
 *
 * The decoder accepts only the canonical encoding, because its first user
 * (Sec-WebSocket-Key, RFC 6455 section 4.1 step 7) is defined as the base64
 * of 16 bytes: a key that decodes only under a lenient reading is not one. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "herald/core.h"

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

HERALD_API long herald_base64_encode(char *out, size_t outcap,
                                     const uint8_t *in, size_t n) {
  /* Check the room before writing anything; the length is computed so that
   * it cannot overflow (a buffer that large cannot exist anyway). */
  if (n / 3 >= (size_t)LONG_MAX / 4 || outcap < HERALD_BASE64_ENCODED_LEN(n)) {
    return HERALD_ERR_INVALID_ARG;
  }
  size_t o = 0;
  size_t i = 0;
  for (; n - i >= 3; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = b64_alphabet[(v >> 6) & 63];
    out[o++] = b64_alphabet[v & 63];
  }
  /* RFC 4648 section 4: a final group of one or two bytes is padded with
   * zero bits to whole characters and then with '=' to four characters. */
  if (n - i == 1) {
    uint32_t v = (uint32_t)in[i] << 16;
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = '=';
    out[o++] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = b64_alphabet[(v >> 18) & 63];
    out[o++] = b64_alphabet[(v >> 12) & 63];
    out[o++] = b64_alphabet[(v >> 6) & 63];
    out[o++] = '=';
  }
  return (long)o;
}

/* Computed rather than looked up so that no 256-entry table has to be kept
 * in sync by hand. */
HERALD_API int herald_base64_value(unsigned char c, char c62, char c63) {
  if (c >= 'A' && c <= 'Z') {
    return c - 'A';
  }
  if (c >= 'a' && c <= 'z') {
    return c - 'a' + 26;
  }
  if (c >= '0' && c <= '9') {
    return c - '0' + 52;
  }
  if (c == (unsigned char)c62) {
    return 62;
  }
  if (c == (unsigned char)c63) {
    return 63;
  }
  return -1;
}

static int b64_value(unsigned char c) {
  return herald_base64_value(c, '+', '/');
}

HERALD_API long herald_base64_decode(uint8_t *out, size_t outcap,
                                     const char *in, size_t n) {
  if (n % 4 != 0) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (n == 0) {
    return 0;
  }
  /* Work out the output size before writing anything, so that input which
   * does not fit leaves out untouched. */
  size_t pad = 0;
  if (in[n - 1] == '=') {
    pad = in[n - 2] == '=' ? 2 : 1;
  }
  size_t outlen = n / 4 * 3 - pad;
  if (outlen > outcap || outlen > (size_t)LONG_MAX) {
    return HERALD_ERR_INVALID_ARG;
  }
  size_t o = 0;
  for (size_t i = 0; i < n; i += 4) {
    int last = i + 4 == n;
    int v0 = b64_value((unsigned char)in[i]);
    int v1 = b64_value((unsigned char)in[i + 1]);
    int v2 = b64_value((unsigned char)in[i + 2]);
    int v3 = b64_value((unsigned char)in[i + 3]);
    if (v0 < 0 || v1 < 0) {
      return HERALD_ERR_INVALID_ARG;
    }
    if (last && pad == 2) {
      /* "xx==": one byte; the 4 bits of v1 below it must be zero
       * (RFC 4648 section 3.5, canonical encoding). */
      if ((v1 & 15) != 0) {
        return HERALD_ERR_INVALID_ARG;
      }
      out[o++] = (uint8_t)(v0 << 2 | v1 >> 4);
    } else if (last && pad == 1) {
      /* "xxx=": two bytes; the 2 bits of v2 below them must be zero. */
      if (v2 < 0 || (v2 & 3) != 0) {
        return HERALD_ERR_INVALID_ARG;
      }
      out[o++] = (uint8_t)(v0 << 2 | v1 >> 4);
      out[o++] = (uint8_t)((v1 & 15) << 4 | v2 >> 2);
    } else {
      /* A full group; '=' here (including in any earlier group) is not in
       * the alphabet and is rejected by b64_value. */
      if (v2 < 0 || v3 < 0) {
        return HERALD_ERR_INVALID_ARG;
      }
      out[o++] = (uint8_t)(v0 << 2 | v1 >> 4);
      out[o++] = (uint8_t)((v1 & 15) << 4 | v2 >> 2);
      out[o++] = (uint8_t)((v2 & 3) << 6 | v3);
    }
  }
  return (long)o;
}
