/* buf.c - the push server's growable output buffer, and JSON strings
 * written into it (RFC 8259 section 7), escaped so that the output is valid
 * JSON whatever bytes the caller passes. Reading JSON is json.c's job. */
#include "push/push.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Output buffer                                                             */
/* ------------------------------------------------------------------------ */

/* Makes room for n more bytes. Capacity doubles, so appending is amortised
 * O(1) per byte. */
static int buf_reserve(push_buf *b, size_t n) {
  size_t cap = b->cap ? b->cap : 64;
  char *p;
  if (n <= b->cap - b->len) {
    return 0;
  }
  if (n > SIZE_MAX - b->len) {
    return -1;
  }
  while (cap < b->len + n) {
    if (cap > SIZE_MAX / 2) {
      cap = b->len + n;
      break;
    }
    cap *= 2;
  }
  p = realloc(b->p, cap);
  if (p == NULL) {
    return -1;
  }
  b->p = p;
  b->cap = cap;
  return 0;
}

int push_buf_raw(push_buf *b, const char *p, size_t n) {
  if (buf_reserve(b, n) != 0) {
    return -1;
  }
  if (n > 0) {
    memcpy(b->p + b->len, p, n);
  }
  b->len += n;
  return 0;
}

/* How a byte of a JSON string is written: RFC 8259 section 7 requires the
 * quote, the backslash and U+0000..U+001F to be escaped; the short forms
 * are used where they exist. */
static const char *short_escape(unsigned char c) {
  switch (c) {
  case '"':
    return "\\\"";
  case '\\':
    return "\\\\";
  case '\b':
    return "\\b";
  case '\f':
    return "\\f";
  case '\n':
    return "\\n";
  case '\r':
    return "\\r";
  case '\t':
    return "\\t";
  default:
    return NULL;
  }
}

/* Writes (or, with out == NULL, only measures) s[0..n) escaped. Valid UTF-8
 * is kept as is; a byte that starts no valid sequence becomes U+FFFD, so
 * that the output is always valid JSON whatever the caller passes. */
static size_t escape(char *out, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0, i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)s[i];
    const char *e = short_escape(c);
    if (e != NULL) {
      if (out != NULL) {
        memcpy(out + o, e, 2);
      }
      o += 2;
      i++;
    } else if (c < 0x20) {
      if (out != NULL) {
        memcpy(out + o, "\\u00", 4);
        out[o + 4] = hex[c >> 4];
        out[o + 5] = hex[c & 15];
      }
      o += 6;
      i++;
    } else if (c < 0x80) {
      if (out != NULL) {
        out[o] = (char)c;
      }
      o++;
      i++;
    } else {
      size_t k = push_utf8_seq((const unsigned char *)s + i, n - i);
      if (k == 0) {
        if (out != NULL) {
          memcpy(out + o, "\\ufffd", 6);
        }
        o += 6;
        i++;
      } else {
        if (out != NULL) {
          memcpy(out + o, s + i, k);
        }
        o += k;
        i += k;
      }
    }
  }
  return o;
}

int push_buf_str(push_buf *b, const char *s, size_t n) {
  /* Measured first, so the buffer grows once and is left as it was when it
   * cannot. The escaped form is at most 6 bytes per input byte. */
  size_t m = escape(NULL, s, n);
  if (m > SIZE_MAX - 2 || buf_reserve(b, m + 2) != 0) {
    return -1;
  }
  b->p[b->len] = '"';
  escape(b->p + b->len + 1, s, n);
  b->p[b->len + 1 + m] = '"';
  b->len += m + 2;
  return 0;
}

int push_buf_u64(push_buf *b, uint64_t v) {
  char tmp[20];
  size_t k = sizeof tmp;
  do {
    tmp[--k] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return push_buf_raw(b, tmp + k, sizeof tmp - k);
}

void push_buf_done(push_buf *b, size_t keep) {
  if (b->cap > keep) {
    push_buf_free(b);
  }
  b->len = 0;
}

void push_buf_free(push_buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = 0;
  b->cap = 0;
}
