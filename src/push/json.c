/* json.c - a validating JSON scanner (RFC 8259) that hands out spans of its
 * input. Writing JSON is buf.c's job.
 *
 * push_json_parse is the only function that looks at untrusted text: it
 * checks the whole grammar in one pass, without recursion (open containers
 * live in a fixed stack of PUSH_JSON_MAX_DEPTH bytes), and refuses an
 * object that names a member twice. Everything else works on spans it has
 * accepted, so it only needs to find boundaries (strings, brackets), not to
 * re-check the grammar; it still never reads outside the span it is given,
 * whatever the span holds.
 *
 * Every function is linear in the size of its input, except the check for
 * repeated member names, which sorts the names of an object with more than
 * a few: O(n log n) in the worst case, whatever the names are. */
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
size_t push_utf8_seq(const unsigned char *s, size_t n) {
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

static size_t str_char(const char *p, size_t n, size_t *pi, char out[4]);

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
    size_t k = push_utf8_seq((const unsigned char *)p + i, n - i);
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

/* ------------------------------------------------------------------------ */
/* Repeated member names                                                     */
/* ------------------------------------------------------------------------ */

/*
 * RFC 8259 section 4 only says names SHOULD be unique, and leaves what a
 * repeated one means to each receiver: some take the first, some the last.
 * Every reader here takes the first, so a command, an API body or a token
 * that repeats a member could mean one thing to Herald and another to the
 * program that wrote or checked it. Such objects are refused instead, as
 * I-JSON (RFC 7493 section 2.3) and JWT (RFC 7519 section 4) require.
 *
 * Names are compared after unescaping ("\u0069d" is "id"), as RFC 8259
 * section 8.3 asks. The names of every object still open are kept on one
 * stack of spans; when an object closes, its own names (the top of the
 * stack) are checked and popped. Each name is checked once, with its own
 * object's names only, so the cost is that of sorting each object's names:
 * O(n log n) overall with heapsort, even for hostile input (a hash table
 * could be made to degrade, and comparing every pair is quadratic).
 */

/* A member name: the offset of its opening quote and its raw length,
 * quotes included (for the error report), and the bytes it stands for:
 * dlen bytes at p + off + 1 when it holds no escape (aoff == NO_ARENA),
 * else unescaped once into the arena at aoff, so that every comparison is
 * one memcmp whatever the spelling. */
typedef struct json_name {
  size_t off, len;
  size_t aoff, dlen;
} json_name;

#define NO_ARENA SIZE_MAX

/* Objects with up to this many names are checked pair by pair, which is
 * cheaper than sorting for the small objects of commands; larger ones are
 * sorted. */
#define NAMES_PAIRWISE 8

/* The stack starts in the caller's frame and moves to the heap only for
 * documents with more names open at once than that. */
#define NAMES_INLINE 32

typedef struct name_stack {
  json_name *v;
  size_t n, cap;
  push_buf arena; /* unescaped names, in stack order */
  json_name inline_v[NAMES_INLINE];
} name_stack;

static int names_push(name_stack *st, const char *p, json_name nm) {
  if (st->n == st->cap) {
    json_name *v;
    if (st->cap > SIZE_MAX / 2 / sizeof *v) {
      return -1;
    }
    if (st->v == st->inline_v) {
      v = malloc(st->cap * 2 * sizeof *v);
      if (v != NULL) {
        memcpy(v, st->v, st->n * sizeof *v);
      }
    } else {
      v = realloc(st->v, st->cap * 2 * sizeof *v);
    }
    if (v == NULL) {
      return -1;
    }
    st->v = v;
    st->cap *= 2;
  }
  const char *q = p + nm.off + 1;
  size_t qn = nm.len - 2;
  nm.aoff = NO_ARENA;
  nm.dlen = qn;
  if (memchr(q, '\\', qn) != NULL) {
    /* Unescaping never lengthens: qn bytes are enough. */
    size_t i = 0, start = st->arena.len;
    char c[4];
    while (i < qn) {
      size_t m = str_char(q, qn, &i, c);
      if (m == 0 || push_buf_raw(&st->arena, c, m) != 0) {
        return -1; /* m == 0 cannot happen after scan_string */
      }
    }
    nm.aoff = start;
    nm.dlen = st->arena.len - start;
  }
  st->v[st->n++] = nm;
  return 0;
}

/* Pops the names from index b on. The arena is a stack too, so it ends
 * where the earliest of them began (the least offset: the names may have
 * been sorted). */
static void names_pop(name_stack *st, size_t b) {
  for (size_t i = b; i < st->n; i++) {
    if (st->v[i].aoff < st->arena.len) {
      st->arena.len = st->v[i].aoff;
    }
  }
  st->n = b;
}

static const char *name_bytes(const char *p, const push_buf *arena,
                              json_name nm) {
  return nm.aoff == NO_ARENA ? p + nm.off + 1 : arena->p + nm.aoff;
}

/* Orders names by the bytes they stand for, a shorter name before a longer
 * one it begins: < 0, 0 (the same name) or > 0. */
static int name_cmp(const char *p, const push_buf *arena, json_name a,
                    json_name b) {
  size_t k = a.dlen < b.dlen ? a.dlen : b.dlen;
  int c =
      k > 0 ? memcmp(name_bytes(p, arena, a), name_bytes(p, arena, b), k) : 0;
  return c != 0 ? c : a.dlen < b.dlen ? -1 : a.dlen > b.dlen;
}

static void sift_down(const char *p, const push_buf *arena, json_name *a,
                      size_t root, size_t n) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= n) {
      return;
    }
    if (child + 1 < n && name_cmp(p, arena, a[child], a[child + 1]) < 0) {
      child++;
    }
    if (name_cmp(p, arena, a[root], a[child]) >= 0) {
      return;
    }
    json_name t = a[root];
    a[root] = a[child];
    a[child] = t;
    root = child;
  }
}

/* Heapsort: O(k log k) comparisons whatever the input, no extra memory. */
static void sort_names(const char *p, const push_buf *arena, json_name *a,
                       size_t k) {
  for (size_t i = k / 2; i-- > 0;) {
    sift_down(p, arena, a, i, k);
  }
  for (size_t end = k; end-- > 1;) {
    json_name t = a[0];
    a[0] = a[end];
    a[end] = t;
    sift_down(p, arena, a, 0, end);
  }
}

/* Checks that the names of one object, st->v[b..n), differ. On a repeat
 * returns -1 and sets *dup to an occurrence after the first. May reorder
 * them. */
static int names_unique(const char *p, name_stack *st, size_t b,
                        json_name *dup) {
  json_name *a = st->v + b;
  size_t k = st->n - b;
  if (k <= NAMES_PAIRWISE) {
    for (size_t i = 1; i < k; i++) {
      for (size_t j = 0; j < i; j++) {
        if (name_cmp(p, &st->arena, a[j], a[i]) == 0) {
          *dup = a[i];
          return -1;
        }
      }
    }
    return 0;
  }
  sort_names(p, &st->arena, a, k);
  for (size_t i = 1; i < k; i++) {
    if (name_cmp(p, &st->arena, a[i - 1], a[i]) == 0) {
      *dup = a[i - 1].off > a[i].off ? a[i - 1] : a[i];
      return -1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The parser                                                                */
/* ------------------------------------------------------------------------ */

/* The name and name-separator of an object member: ws string ws ':'
 * (RFC 8259 section 4). *name gets the string's offset and length. */
static int scan_member_name(const char *p, size_t n, size_t *pi,
                            json_name *name) {
  size_t i = skip_ws(p, n, *pi);
  name->off = i;
  if (i >= n || p[i] != '"' || scan_string(p, n, &i) != 0) {
    return -1;
  }
  name->len = i - name->off;
  i = skip_ws(p, n, i);
  if (i >= n || p[i] != ':') {
    return -1;
  }
  *pi = i + 1;
  return 0;
}

int push_json_parse_ex(const char *p, size_t n, push_json *out,
                       push_json_error *err) {
  /* The opening bracket of every container still open: an explicit stack
   * instead of recursion, so that the depth limit is the only bound on
   * stack use and hostile nesting cannot exhaust the C stack. base[d]: for
   * an open object, where its names start on the name stack. */
  char open[PUSH_JSON_MAX_DEPTH];
  size_t base[PUSH_JSON_MAX_DEPTH];
  size_t depth = 0;
  size_t start = skip_ws(p, n, 0);
  size_t i = start;
  name_stack names;
  json_name name = {0, 0, NO_ARENA, 0};
  push_json_fault fault = PUSH_JSON_SYNTAX;

  names.v = names.inline_v;
  names.n = 0;
  names.cap = NAMES_INLINE;
  names.arena.p = NULL;
  names.arena.len = 0;
  names.arena.cap = 0;
  for (;;) {
    /* A value is expected at i. */
    i = skip_ws(p, n, i);
    if (i >= n) {
      goto fail;
    }
    char c = p[i];
    if (c == '[' || c == '{') {
      if (depth == PUSH_JSON_MAX_DEPTH) {
        goto fail;
      }
      base[depth] = names.n;
      open[depth++] = c;
      i = skip_ws(p, n, i + 1);
      if (i < n && p[i] == (c == '[' ? ']' : '}')) {
        depth--; /* empty container: a complete value */
        i++;
      } else if (c == '{') {
        if (scan_member_name(p, n, &i, &name) != 0) {
          goto fail;
        }
        if (names_push(&names, p, name) != 0) {
          fault = PUSH_JSON_NOMEM;
          goto fail;
        }
        continue;
      } else {
        continue;
      }
    } else if (scan_scalar(p, n, &i) != 0) {
      goto fail;
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
        goto fail;
      }
      char top = open[depth - 1];
      if (p[i] == (top == '[' ? ']' : '}')) {
        depth--;
        i++;
        if (top == '{') {
          if (names_unique(p, &names, base[depth], &name) != 0) {
            fault = PUSH_JSON_DUPLICATE;
            goto fail;
          }
          names_pop(&names, base[depth]);
        }
        continue;
      }
      if (p[i] != ',') {
        goto fail;
      }
      i++;
      if (top == '{') {
        if (scan_member_name(p, n, &i, &name) != 0) {
          goto fail;
        }
        if (names_push(&names, p, name) != 0) {
          fault = PUSH_JSON_NOMEM;
          goto fail;
        }
      }
      break;
    }
  }

done:
  /* Section 2: JSON-text = ws value ws, and nothing else. */
  if (skip_ws(p, n, i) != n) {
    i = skip_ws(p, n, i); /* where the trailing garbage starts */
    goto fail;
  }
  if (names.v != names.inline_v) {
    free(names.v);
  }
  push_buf_free(&names.arena);
  out->p = p + start;
  out->n = i - start;
  if (err != NULL) {
    err->fault = PUSH_JSON_OK;
    err->name.p = NULL;
    err->name.n = 0;
    err->offset = 0;
  }
  return 0;

fail:
  if (names.v != names.inline_v) {
    free(names.v);
  }
  push_buf_free(&names.arena);
  if (err != NULL) {
    err->fault = fault;
    err->name.p = fault == PUSH_JSON_DUPLICATE ? p + name.off : NULL;
    err->name.n = fault == PUSH_JSON_DUPLICATE ? name.len : 0;
    err->offset = fault == PUSH_JSON_DUPLICATE ? name.off : i < n ? i : n;
  }
  return -1;
}

int push_json_parse(const char *p, size_t n, push_json *out) {
  return push_json_parse_ex(p, n, out, NULL);
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
