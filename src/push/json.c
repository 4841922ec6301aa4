/* json.c - a validating JSON scanner (RFC 8259) that hands out spans of its
 * input, and a growable output buffer that writes JSON strings.
 *
 * push_json_parse is the only function that looks at untrusted text: it
 * checks the whole grammar in one pass, without allocating and without
 * recursion (open containers live in a fixed stack of PUSH_JSON_MAX_DEPTH
 * bytes). Everything else works on spans it has accepted, so it only needs
 * to find boundaries (strings, brackets), not to re-check the grammar; it
 * still never reads outside the span it is given, whatever the span holds.
 *
 * Every function is linear in the size of its input. */
#include "push/push.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Character helpers                                                         */
/* ------------------------------------------------------------------------ */

/* RFC 8259 section 2: ws = space, horizontal tab, line feed, carriage
 * return. Nothing else: a byte order mark is not whitespace and is refused
 * (section 8.1 lets parsers ignore one; we prefer one spelling of a
 * document, since published data is passed on byte for byte). */
static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *p, size_t n, size_t i) {
  while (i < n && is_ws(p[i])) {
    i++;
  }
  return i;
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/* Reads the four hex digits of a \u escape at p[i..i+4). */
static int hex4(const char *p, size_t n, size_t i, uint32_t *out) {
  uint32_t v = 0;
  if (n < 4 || i > n - 4) {
    return -1;
  }
  for (size_t k = 0; k < 4; k++) {
    int h = hex_value(p[i + k]);
    if (h < 0) {
      return -1;
    }
    v = v << 4 | (uint32_t)h;
  }
  *out = v;
  return 0;
}

/* The length of the well-formed UTF-8 sequence at s[0..n), or 0 if there is
 * none. The ranges are the table of RFC 3629 section 4: no overlong forms
 * (C0, C1, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF), nothing above
 * U+10FFFF (F4 90.., F5..FF). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  unsigned lo = 0x80, hi = 0xBF;
  size_t len;
  if (c < 0x80) {
    return 1;
  }
  if (c < 0xC2) {
    return 0;
  }
  if (c < 0xE0) {
    len = 2;
  } else if (c < 0xF0) {
    len = 3;
    lo = c == 0xE0 ? 0xA0 : 0x80;
    hi = c == 0xED ? 0x9F : 0xBF;
  } else if (c < 0xF5) {
    len = 4;
    lo = c == 0xF0 ? 0x90 : 0x80;
    hi = c == 0xF4 ? 0x8F : 0xBF;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) {
    return 0;
  }
  for (size_t k = 2; k < len; k++) {
    if (s[k] < 0x80 || s[k] > 0xBF) {
      return 0;
    }
  }
  return len;
}

/* ------------------------------------------------------------------------ */
/* Validation                                                                */
/* ------------------------------------------------------------------------ */

/* A string starting at the quote p[*pi]; on success *pi is past the closing
 * quote. RFC 8259 section 7: control characters must be escaped, escapes
 * are the eight listed and \uXXXX; section 8.2: a \u escape of a surrogate
 * must be half of a high-low pair, since a lone one is no character and
 * cannot be unescaped into UTF-8. Raw bytes must be UTF-8 (section 8.1). */
static int scan_string(const char *p, size_t n, size_t *pi) {
  size_t i = *pi + 1;
  while (i < n) {
    unsigned char c = (unsigned char)p[i];
    if (c == '"') {
      *pi = i + 1;
      return 0;
    }
    if (c < 0x20) {
      return -1;
    }
    if (c == '\\') {
      if (i + 1 >= n) {
        return -1;
      }
      switch (p[i + 1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        i += 2;
        break;
      case 'u': {
        uint32_t u, low;
        if (hex4(p, n, i + 2, &u) != 0) {
          return -1;
        }
        i += 6;
        if (u >= 0xDC00 && u <= 0xDFFF) {
          return -1; /* a low surrogate with no high one before it */
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
          if (i + 1 >= n || p[i] != '\\' || p[i + 1] != 'u' ||
              hex4(p, n, i + 2, &low) != 0 || low < 0xDC00 || low > 0xDFFF) {
            return -1;
          }
          i += 6;
        }
        break;
      }
      default:
        return -1;
      }
      continue;
    }
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t k = utf8_seq((const unsigned char *)p + i, n - i);
    if (k == 0) {
      return -1;
    }
    i += k;
  }
  return -1;
}

/* RFC 8259 section 6: number = [ minus ] int [ frac ] [ exp ], int = zero /
 * ( digit1-9 *DIGIT ): no leading zeros, no leading '+', no bare '.', and
 * digits required after '.' and after 'e'. Any magnitude is accepted; the
 * readers (push_json_u64) decide what they can represent. */
static int scan_number(const char *p, size_t n, size_t *pi) {
  size_t i = *pi;
  if (p[i] == '-') {
    i++;
  }
  if (i >= n) {
    return -1;
  }
  if (p[i] == '0') {
    i++;
  } else if (p[i] >= '1' && p[i] <= '9') {
    while (i < n && is_digit(p[i])) {
      i++;
    }
  } else {
    return -1;
  }
  if (i < n && p[i] == '.') {
    i++;
    if (i >= n || !is_digit(p[i])) {
      return -1;
    }
    while (i < n && is_digit(p[i])) {
      i++;
    }
  }
  if (i < n && (p[i] == 'e' || p[i] == 'E')) {
    i++;
    if (i < n && (p[i] == '+' || p[i] == '-')) {
      i++;
    }
    if (i >= n || !is_digit(p[i])) {
      return -1;
    }
    while (i < n && is_digit(p[i])) {
      i++;
    }
  }
  *pi = i;
  return 0;
}

static int scan_literal(const char *p, size_t n, size_t *pi, const char *lit,
                        size_t len) {
  if (n - *pi < len || memcmp(p + *pi, lit, len) != 0) {
    return -1;
  }
  *pi += len;
  return 0;
}

/* Any value but an array or an object, at p[*pi] (i < n). */
static int scan_scalar(const char *p, size_t n, size_t *pi) {
  switch (p[*pi]) {
  case '"':
    return scan_string(p, n, pi);
  case 't':
    return scan_literal(p, n, pi, "true", 4);
  case 'f':
    return scan_literal(p, n, pi, "false", 5);
  case 'n':
    return scan_literal(p, n, pi, "null", 4);
  default:
    return scan_number(p, n, pi);
  }
}

/* The name and name-separator of an object member: ws string ws ':'
 * (RFC 8259 section 4). */
static int scan_member_name(const char *p, size_t n, size_t *pi) {
  size_t i = skip_ws(p, n, *pi);
  if (i >= n || p[i] != '"' || scan_string(p, n, &i) != 0) {
    return -1;
  }
  i = skip_ws(p, n, i);
  if (i >= n || p[i] != ':') {
    return -1;
  }
  *pi = i + 1;
  return 0;
}

int push_json_parse(const char *p, size_t n, push_json *out) {
  /* The opening bracket of every container still open: an explicit stack
   * instead of recursion, so that the depth limit is the only bound on
   * memory and hostile nesting cannot exhaust the C stack. */
  char open[PUSH_JSON_MAX_DEPTH];
  size_t depth = 0;
  size_t start = skip_ws(p, n, 0);
  size_t i = start;

  for (;;) {
    /* A value is expected at i. */
    i = skip_ws(p, n, i);
    if (i >= n) {
      return -1;
    }
    char c = p[i];
    if (c == '[' || c == '{') {
      if (depth == PUSH_JSON_MAX_DEPTH) {
        return -1;
      }
      open[depth++] = c;
      i = skip_ws(p, n, i + 1);
      if (i < n && p[i] == (c == '[' ? ']' : '}')) {
        depth--; /* empty container: a complete value */
        i++;
      } else if (c == '{') {
        if (scan_member_name(p, n, &i) != 0) {
          return -1;
        }
        continue;
      } else {
        continue;
      }
    } else if (scan_scalar(p, n, &i) != 0) {
      return -1;
    }

    /* A value just ended: close the containers it ends, or step over the
     * value separator to the next element. Section 5 and 4: elements and
     * members are separated by ',' and there is none after the last. */
    for (;;) {
      if (depth == 0) {
        goto done;
      }
      i = skip_ws(p, n, i);
      if (i >= n) {
        return -1;
      }
      char top = open[depth - 1];
      if (p[i] == (top == '[' ? ']' : '}')) {
        depth--;
        i++;
        continue;
      }
      if (p[i] != ',') {
        return -1;
      }
      i++;
      if (top == '{' && scan_member_name(p, n, &i) != 0) {
        return -1;
      }
      break;
    }
  }

done:
  /* Section 2: JSON-text = ws value ws, and nothing else. */
  if (skip_ws(p, n, i) != n) {
    return -1;
  }
  out->p = p + start;
  out->n = i - start;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Reading validated values                                                  */
/* ------------------------------------------------------------------------ */

push_json_type push_json_type_of(push_json v) {
  if (v.n == 0) {
    return PUSH_JSON_INVALID;
  }
  switch (v.p[0]) {
  case 'n':
    return PUSH_JSON_NULL;
  case 'f':
    return PUSH_JSON_FALSE;
  case 't':
    return PUSH_JSON_TRUE;
  case '"':
    return PUSH_JSON_STRING;
  case '[':
    return PUSH_JSON_ARRAY;
  case '{':
    return PUSH_JSON_OBJECT;
  default:
    return v.p[0] == '-' || is_digit(v.p[0]) ? PUSH_JSON_NUMBER
                                             : PUSH_JSON_INVALID;
  }
}

/* The end of the string whose opening quote is p[i]: past its closing
 * quote, or n if the span ends first. Escapes are two bytes or more, and the
 * second byte of one is never a quote that ends the string. */
static size_t skip_string(const char *p, size_t n, size_t i) {
  i++;
  while (i < n) {
    if (p[i] == '\\') {
      i += 2;
    } else if (p[i] == '"') {
      return i + 1;
    } else {
      i++;
    }
  }
  return n;
}

/* The end of the value starting at p[i]. Brackets inside strings do not
 * count, which is all the grammar that matters once the text is valid. */
static size_t skip_value(const char *p, size_t n, size_t i) {
  size_t depth = 0;
  if (i >= n) {
    return n;
  }
  if (p[i] != '"' && p[i] != '[' && p[i] != '{') {
    while (i < n && !is_ws(p[i]) && p[i] != ',' && p[i] != ']' && p[i] != '}') {
      i++;
    }
    return i;
  }
  while (i < n) {
    char c = p[i];
    if (c == '"') {
      i = skip_string(p, n, i);
    } else {
      i++;
      if (c == '[' || c == '{') {
        depth++;
      } else if (c == ']' || c == '}') {
        depth--;
      }
    }
    if (depth == 0) {
      return i;
    }
  }
  return n;
}

int push_json_next(push_json v, size_t *pos, push_json *key, push_json *value) {
  push_json_type t = push_json_type_of(v);
  const char *p = v.p;
  size_t n = v.n;
  size_t i = *pos;
  if ((t != PUSH_JSON_ARRAY && t != PUSH_JSON_OBJECT) || i >= n) {
    return 0;
  }
  if (i == 0) {
    i = 1; /* past the opening bracket: the first element has no comma */
  } else {
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ',') {
      *pos = n;
      return 0;
    }
    i++;
  }
  i = skip_ws(p, n, i);
  if (i >= n || p[i] == ']' || p[i] == '}') {
    *pos = n;
    return 0;
  }
  if (t == PUSH_JSON_OBJECT) {
    size_t kstart = i;
    if (p[i] != '"') {
      *pos = n;
      return 0;
    }
    i = skip_string(p, n, i);
    if (key != NULL) {
      key->p = p + kstart;
      key->n = i - kstart;
    }
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ':') {
      *pos = n;
      return 0;
    }
    i = skip_ws(p, n, i + 1);
  }
  size_t vstart = i;
  i = skip_value(p, n, i);
  value->p = p + vstart;
  value->n = i - vstart;
  *pos = i;
  return 1;
}

/* Decodes the character at p[*pi] of a string's contents p[0..n) (quotes
 * excluded) into out: a raw byte as is (UTF-8 sequences pass through one
 * byte at a time), an escape as the UTF-8 of what it stands for, a
 * surrogate pair as one 4-byte sequence (RFC 8259 section 7). Returns the
 * number of bytes written, or 0 for an escape that is not valid. */
static size_t str_char(const char *p, size_t n, size_t *pi, char out[4]) {
  size_t i = *pi;
  uint32_t u, low;
  if (p[i] != '\\') {
    out[0] = p[i];
    *pi = i + 1;
    return 1;
  }
  if (i + 1 >= n) {
    return 0;
  }
  *pi = i + 2;
  switch (p[i + 1]) {
  case '"':
  case '\\':
  case '/':
    out[0] = p[i + 1];
    return 1;
  case 'b':
    out[0] = '\b';
    return 1;
  case 'f':
    out[0] = '\f';
    return 1;
  case 'n':
    out[0] = '\n';
    return 1;
  case 'r':
    out[0] = '\r';
    return 1;
  case 't':
    out[0] = '\t';
    return 1;
  case 'u':
    break;
  default:
    return 0;
  }
  if (hex4(p, n, i + 2, &u) != 0) {
    return 0;
  }
  i += 6;
  if (u >= 0xDC00 && u <= 0xDFFF) {
    return 0;
  }
  if (u >= 0xD800 && u <= 0xDBFF) {
    if (i + 1 >= n || p[i] != '\\' || p[i + 1] != 'u' ||
        hex4(p, n, i + 2, &low) != 0 || low < 0xDC00 || low > 0xDFFF) {
      return 0;
    }
    i += 6;
    u = 0x10000 + ((u - 0xD800) << 10) + (low - 0xDC00);
  }
  *pi = i;
  /* RFC 3629 section 3. */
  if (u < 0x80) {
    out[0] = (char)u;
    return 1;
  }
  if (u < 0x800) {
    out[0] = (char)(0xC0 | u >> 6);
    out[1] = (char)(0x80 | (u & 0x3F));
    return 2;
  }
  if (u < 0x10000) {
    out[0] = (char)(0xE0 | u >> 12);
    out[1] = (char)(0x80 | (u >> 6 & 0x3F));
    out[2] = (char)(0x80 | (u & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | u >> 18);
  out[1] = (char)(0x80 | (u >> 12 & 0x3F));
  out[2] = (char)(0x80 | (u >> 6 & 0x3F));
  out[3] = (char)(0x80 | (u & 0x3F));
  return 4;
}

static int is_string(push_json v) {
  return v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"';
}

/* Compares a member name (a string value) with key after unescaping it, so
 * that "\u0069d" names the member "id" as RFC 8259 section 8.3 asks. */
static int name_equals(push_json name, const char *key) {
  const char *p = name.p + 1;
  size_t n = name.n - 2, i = 0, k = 0, klen = strlen(key);
  char c[4];
  while (i < n) {
    size_t m = str_char(p, n, &i, c);
    if (m == 0 || klen - k < m || memcmp(key + k, c, m) != 0) {
      return 0;
    }
    k += m;
  }
  return k == klen;
}

int push_json_get(push_json obj, const char *key, push_json *out) {
  size_t pos = 0;
  push_json name, value;
  if (push_json_type_of(obj) != PUSH_JSON_OBJECT) {
    return 0;
  }
  while (push_json_next(obj, &pos, &name, &value)) {
    if (is_string(name) && name_equals(name, key)) {
      *out = value;
      return 1;
    }
  }
  return 0;
}

long push_json_str(push_json v, char *out, size_t cap) {
  const char *p = v.p + 1;
  size_t n, i = 0, len = 0;
  char c[4];
  if (!is_string(v) || cap == 0) {
    return -1;
  }
  n = v.n - 2;
  while (i < n) {
    size_t m = str_char(p, n, &i, c);
    if (m == 0 || cap - 1 - len < m) {
      return -1;
    }
    memcpy(out + len, c, m);
    len += m;
  }
  out[len] = '\0';
  return (long)len;
}

int push_json_u64(push_json v, uint64_t *out) {
  uint64_t x = 0;
  /* 2^53: the largest integer below which every integer is exact in an
   * IEEE 754 double, the interoperable range of RFC 8259 section 6. It has
   * 16 digits, so 16 digits cannot overflow the accumulator. */
  const uint64_t max = (uint64_t)1 << 53;
  if (v.n == 0 || v.n > 16 || (v.p[0] == '0' && v.n > 1)) {
    return -1;
  }
  for (size_t i = 0; i < v.n; i++) {
    if (!is_digit(v.p[i])) {
      return -1; /* sign, fraction or exponent */
    }
    x = x * 10 + (uint64_t)(v.p[i] - '0');
  }
  if (x > max) {
    return -1;
  }
  *out = x;
  return 0;
}

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
      size_t k = utf8_seq((const unsigned char *)s + i, n - i);
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
