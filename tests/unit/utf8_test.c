/* utf8_test.c - UTF-8 validation: the Autobahn section 6 classes, fail-fast
 * position, split independence, boundary bytes around SIMD blocks, and random
 * texts against a reference validator written here from the definition. */
#include "core/utf8.h"
#include "herald/core.h"
#include "test.h"

/* Test hook in utf8.c: nonzero forces the scalar engine. */
extern void herald__utf8_force_scalar(int on);

/* ------------------------------------------------------------------------ */
/* Reference                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A deliberately different formulation from the library's: decode code
 * points arithmetically. A partial sequence with t of its len bytes present
 * can still complete to every code point in [lo, hi] (its missing bits all
 * zero, or all one); it is a valid prefix iff that range holds a scalar value
 * that needs exactly len bytes (RFC 3629: shortest form, not a surrogate, at
 * most U+10FFFF). Surrogates form an aligned block, so the range is wholly
 * inside them or contains a non-surrogate.
 *
 * Returns the index of the first byte at which the prefix becomes invalid, or
 * n if p[0..n) is a valid prefix; *open is set when it ends mid-sequence.
 */
static size_t ref_first_bad(const uint8_t *p, size_t n, int *open) {
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  *open = 0;
  while (i < n) {
    uint8_t b = p[i];
    size_t len;
    uint32_t cp;
    if (b < 0x80) {
      i++;
      continue;
    }
    if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1Fu;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0Fu;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07u;
    } else {
      return i; /* continuation or F8..FF where a lead must be */
    }
    for (size_t t = 1;; t++) {
      size_t missing = len - t;
      uint32_t lo = cp << (6 * missing);
      uint32_t hi = lo | ((1u << (6 * missing)) - 1);
      if (hi < min_cp[len] || lo > 0x10FFFF || (lo >= 0xD800 && hi <= 0xDFFF))
        return i + t - 1;
      if (t == len)
        break;
      if (i + t >= n) {
        *open = 1;
        return n;
      }
      if ((p[i + t] & 0xC0) != 0x80)
        return i + t;
      cp = (cp << 6) | (p[i + t] & 0x3Fu);
    }
    i += len;
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Validates chunk by chunk at the given cut points; returns the index of the
 * chunk that returned -1 (or -1 if none) and the final state. */
static int run_chunks(const uint8_t *p, size_t n, const size_t *cuts,
                      size_t ncuts, uint32_t *state) {
  size_t start = 0;
  *state = HERALD_UTF8_ACCEPT;
  for (size_t c = 0; c <= ncuts; c++) {
    size_t end = c < ncuts ? cuts[c] : n;
    if (herald__utf8_validate(state, p + start, end - start) < 0)
      return (int)c;
    start = end;
  }
  return -1;
}

/*
 * Checks p[0..n) against the reference whole, byte at a time and at every
 * 2-way split (or every step-th one), including where the call that rejects
 * must be: the chunk holding the first invalid byte. Runs with the current
 * engine; the callers cover both.
 */
static void check_input(const uint8_t *p, size_t n, size_t step) {
  int open;
  size_t bad = ref_first_bad(p, n, &open);
  int valid = bad == n && !open;
  uint32_t s;
  int r;

  /* Whole. */
  s = HERALD_UTF8_ACCEPT;
  r = n ? herald__utf8_validate(&s, p, n) : 0;
  CHECK_EQ(r, bad < n ? -1 : 0);
  if (bad == n)
    CHECK_EQ(s != HERALD_UTF8_ACCEPT, open);
  CHECK_EQ(herald_utf8_valid(p, n), valid);

  /* Byte at a time: exactly the first invalid byte's call rejects. */
  if (n <= 4096 || step == 1) {
    s = HERALD_UTF8_ACCEPT;
    size_t i = 0;
    for (; i < n; i++) {
      r = herald__utf8_validate(&s, p + i, 1);
      if (r < 0)
        break;
      /* A boundary state after each byte matches the reference. */
    }
    CHECK_EQ(i, bad);
    if (bad == n)
      CHECK_EQ(s != HERALD_UTF8_ACCEPT, open);
  }

  /* Every 2-way split. */
  for (size_t k = 0; k <= n; k += step) {
    size_t cut = k;
    int chunk = run_chunks(p, n, &cut, 1, &s);
    int want = bad == n ? -1 : bad < k ? 0 : 1;
    if (chunk != want) {
      fprintf(stderr, "split at %zu of %zu: chunk %d rejected, want %d\n", k, n,
              chunk, want);
    }
    CHECK_EQ(chunk, want);
    if (bad == n)
      CHECK_EQ(s != HERALD_UTF8_ACCEPT, open);
  }
}

/* Checks with the scalar engine forced, then with the best one. */
static void check_both(const uint8_t *p, size_t n) {
  herald__utf8_force_scalar(1);
  check_input(p, n, 1);
  herald__utf8_force_scalar(0);
  check_input(p, n, 1);
}

/* As check_both, but with the text embedded after 70 bytes of ASCII and
 * followed by 70 more, so that the SIMD engine sees it in its bulk, and at
 * both ends of a chunk, at many alignments. The expected verdict comes from
 * the reference. */
static void check_embedded(const uint8_t *p, size_t n) {
  static const size_t pres[] = {0,  1,  2,  3,  5,  29, 30, 31, 32,
                                33, 34, 60, 61, 62, 63, 64, 65, 66};
  uint8_t buf[512];
  for (size_t i = 0; i < sizeof pres / sizeof *pres; i++) {
    size_t pre = pres[i];
    memset(buf, 'a', sizeof buf);
    memcpy(buf + pre, p, n);
    check_input(buf, pre + n, 1);
    check_input(buf, pre + n + 70, 7);
  }
}

static void check_str(const char *s, int expect_valid) {
  size_t n = strlen(s);
  const uint8_t *p = (const uint8_t *)s;
  int open;
  size_t bad = ref_first_bad(p, n, &open);
  CHECK_EQ(bad == n && !open, expect_valid);
  CHECK_EQ(herald_utf8_valid(p, n), expect_valid);
  check_both(p, n);
  check_embedded(p, n);
}

#define VALID(s) check_str(s, 1)
#define INVALID(s) check_str(s, 0)

/* ------------------------------------------------------------------------ */
/* Autobahn section 6 classes                                                */
/* ------------------------------------------------------------------------ */

static void test_valid_basic(void) {
  VALID("");
  VALID("Hello-\xC2\xB5@\xC3\x9F\xC3\xB6\xC3\xA4\xC3\xBC\xC3\xA0\xC3\xA1-UTF-8!"
        "!");
  VALID("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"); /* kosme, 6.2.1 */
  CHECK_EQ(herald_utf8_valid("", 0), 1);
  CHECK_EQ(herald_utf8_valid(NULL, 0), 1);
  uint8_t nul[3] = {0, 0, 0}; /* U+0000, 6.3.x first possible */
  CHECK_EQ(herald_utf8_valid(nul, 3), 1);
  check_both(nul, 3);
}

static void test_valid_boundaries(void) {
  VALID("\xC2\x80");         /* U+0080 */
  VALID("\xE0\xA0\x80");     /* U+0800 */
  VALID("\xF0\x90\x80\x80"); /* U+10000 */
  VALID("\x7F");             /* U+007F */
  VALID("\xDF\xBF");         /* U+07FF */
  VALID("\xEF\xBF\xBF");     /* U+FFFF */
  VALID("\xF4\x8F\xBF\xBF"); /* U+10FFFF */
  VALID("\xED\x9F\xBF");     /* U+D7FF */
  VALID("\xEE\x80\x80");     /* U+E000 */
  VALID("\xEF\xBF\xBD");     /* U+FFFD */
  VALID("\xEF\xBF\xBE");     /* U+FFFE noncharacter: valid UTF-8 */
  VALID("\xF0\x9F\xBF\xBE\xF0\x9F\xBF\xBF"); /* U+1FFFE, U+1FFFF */
  VALID("\xF3\xBF\xBF\xBF");                 /* U+FFFFF */
}

static void test_invalid_too_large(void) {
  INVALID("\xF4\x90\x80\x80"); /* U+110000 */
  INVALID("\xF7\xBF\xBF\xBF"); /* U+1FFFFF */
  INVALID("\xF8\x88\x80\x80\x80");
  INVALID("\xFB\xBF\xBF\xBF\xBF");
  INVALID("\xFC\x84\x80\x80\x80\x80");
  INVALID("\xFD\xBF\xBF\xBF\xBF\xBF");
  INVALID("\xF5\x80\x80\x80");
}

static void test_invalid_continuations(void) {
  INVALID("\x80"); /* first continuation byte */
  INVALID("\xBF"); /* last continuation byte */
  INVALID("\x80\xBF");
  INVALID("\x80\xBF\x80");
  INVALID("\x80\xBF\x80\xBF");
  INVALID("\x80\xBF\x80\xBF\x80");
  INVALID("\x80\xBF\x80\xBF\x80\xBF");
  INVALID("\x80\xBF\x80\xBF\x80\xBF\x80");
  INVALID("a\x80");
  INVALID("\xC2\x80\x80");
  INVALID("\xE1\x80\x80\x80");
  INVALID("\xF1\x80\x80\x80\x80");
  /* All 64 continuation bytes in a row (6.3.x "sequence of all"). */
  char all[65];
  for (int i = 0; i < 64; i++)
    all[i] = (char)(0x80 + i);
  all[64] = 0;
  INVALID(all);
}

static void test_invalid_lonely_starts(void) {
  /* Every lead byte followed by a space: all invalid. */
  char buf[3] = {0, ' ', 0};
  for (int b = 0xC0; b <= 0xFF; b++) {
    buf[0] = (char)b;
    INVALID(buf);
  }
  /* All 32 two-byte leads, each followed by a space (6.5.x form). */
  char seq[65];
  for (int i = 0; i < 32; i++) {
    seq[2 * i] = (char)(0xC0 + i);
    seq[2 * i + 1] = ' ';
  }
  seq[64] = 0;
  INVALID(seq);
}

static void test_invalid_last_byte_missing(void) {
  INVALID("\xC0");
  INVALID("\xE0\x80");
  INVALID("\xF0\x80\x80");
  INVALID("\xF8\x80\x80\x80");
  INVALID("\xFC\x80\x80\x80\x80");
  INVALID("\xDF");
  INVALID("\xEF\xBF");
  INVALID("\xF7\xBF\xBF");
  INVALID("\xFB\xBF\xBF\xBF");
  INVALID("\xFD\xBF\xBF\xBF\xBF");
  /* Valid prefixes, invalid only because the text ends. */
  INVALID("\xC2");
  INVALID("\xE1\x80");
  INVALID("\xF1\x80\x80");
  INVALID("\xF4\x8F\xBF");
  INVALID("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE");
  /* Concatenation of incomplete sequences. */
  INVALID("\xC0\xE0\x80\xF0\x80\x80\xF8\x80\x80\x80\xFC\x80\x80\x80\x80"
          "\xDF\xEF\xBF\xF7\xBF\xBF\xFB\xBF\xBF\xBF\xFD\xBF\xBF\xBF\xBF");
  INVALID("\xC2\xE1\x80\xF1\x80\x80");
}

static void test_invalid_impossible(void) {
  INVALID("\xFE");
  INVALID("\xFF");
  INVALID("\xFE\xFE\xFF\xFF");
}

static void test_invalid_overlong(void) {
  /* '/' */
  INVALID("\xC0\xAF");
  INVALID("\xE0\x80\xAF");
  INVALID("\xF0\x80\x80\xAF");
  INVALID("\xF8\x80\x80\x80\xAF");
  INVALID("\xFC\x80\x80\x80\x80\xAF");
  /* Maximal overlongs. */
  INVALID("\xC1\xBF");
  INVALID("\xE0\x9F\xBF");
  INVALID("\xF0\x8F\xBF\xBF");
  INVALID("\xF8\x87\xBF\xBF\xBF");
  INVALID("\xFC\x83\xBF\xBF\xBF\xBF");
  /* NUL. */
  INVALID("\xC0\x80");
  INVALID("\xE0\x80\x80");
  INVALID("\xF0\x80\x80\x80");
  INVALID("\xF8\x80\x80\x80\x80");
  INVALID("\xFC\x80\x80\x80\x80\x80");
}

static void test_invalid_surrogates(void) {
  static const char *single[] = {"\xED\xA0\x80", "\xED\xAD\xBF", "\xED\xAE\x80",
                                 "\xED\xAF\xBF", "\xED\xB0\x80", "\xED\xBE\x80",
                                 "\xED\xBF\xBF"};
  for (size_t i = 0; i < sizeof single / sizeof *single; i++)
    INVALID(single[i]);
  static const char *paired[] = {
      "\xED\xA0\x80\xED\xB0\x80", "\xED\xA0\x80\xED\xBF\xBF",
      "\xED\xAD\xBF\xED\xB0\x80", "\xED\xAD\xBF\xED\xBF\xBF",
      "\xED\xAE\x80\xED\xB0\x80", "\xED\xAE\x80\xED\xBF\xBF",
      "\xED\xAF\xBF\xED\xB0\x80", "\xED\xAF\xBF\xED\xBF\xBF"};
  for (size_t i = 0; i < sizeof paired / sizeof *paired; i++)
    INVALID(paired[i]);
}

/* 6.4.x: a valid text broken by an invalid sequence; the chunk holding the
 * first invalid byte must reject, even when the sequence is incomplete. */
static void test_fail_fast(void) {
  static const uint8_t kosme[] = {0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF,
                                  0x83, 0xCE, 0xBC, 0xCE, 0xB5};
  static const uint8_t cases[][4] = {
      {0xF4, 0x90, 0x80, 0x80}, /* 6.4.1: fails at 90 */
      {0xED, 0xA0, 0x80, 0x80}, /* surrogate: fails at A0 */
      {0xE0, 0x80, 0x80, 0x80}, /* overlong: fails at the first 80 */
      {0xF0, 0x8F, 0xBF, 0xBF}, /* overlong: fails at 8F */
      {0xC0, 0x80, 0x80, 0x80}, /* fails at C0 */
      {0xF5, 0x80, 0x80, 0x80}, /* fails at F5 */
  };
  static const size_t fail_at[] = {1, 1, 1, 1, 0, 0};
  uint8_t buf[600];
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
      /* Prefix lengths that put the bad byte in the scalar tail, inside
       * SIMD blocks, and at block edges. */
      for (size_t pre = 0; pre < 300; pre++) {
        size_t n = 0;
        memset(buf, 'x', pre);
        n = pre;
        if (pre >= sizeof kosme) {
          memcpy(buf + pre - sizeof kosme, kosme, sizeof kosme);
        }
        memcpy(buf + n, cases[c], 4);
        n += 4;
        memcpy(buf + n, "edited", 6);
        n += 6;
        size_t bad = pre + fail_at[c];
        uint32_t s = 0;
        /* The chunk ending right after the bad byte rejects. */
        CHECK_EQ(herald__utf8_validate(&s, buf, bad + 1), -1);
        /* The chunk ending right before it does not. */
        s = 0;
        CHECK_EQ(herald__utf8_validate(&s, buf, bad), 0);
        CHECK_EQ(herald__utf8_validate(&s, buf + bad, n - bad), -1);
        /* Whole. */
        s = 0;
        CHECK_EQ(herald__utf8_validate(&s, buf, n), -1);
      }
    }
  }
  herald__utf8_force_scalar(0);
}

/* A chunk ending mid-sequence with a valid prefix returns 0 and an open
 * state; the next chunk finishes it. */
static void test_state(void) {
  static const uint8_t euro[] = {0xE2, 0x82, 0xAC};
  uint32_t s = 0;
  CHECK_EQ(herald__utf8_validate(&s, euro, 1), 0);
  CHECK(s != HERALD_UTF8_ACCEPT);
  CHECK_EQ(herald__utf8_validate(&s, euro + 1, 1), 0);
  CHECK(s != HERALD_UTF8_ACCEPT);
  CHECK_EQ(herald__utf8_validate(&s, euro + 2, 1), 0);
  CHECK_EQ(s, HERALD_UTF8_ACCEPT);
  /* An empty chunk changes nothing. */
  s = 0;
  CHECK_EQ(herald__utf8_validate(&s, euro, 2), 0);
  uint32_t open = s;
  CHECK_EQ(herald__utf8_validate(&s, euro, 0), 0);
  CHECK_EQ(s, open);
  /* A long chunk ending mid-sequence (SIMD engine) carries the same way. */
  uint8_t buf[200];
  memset(buf, 'q', sizeof buf);
  buf[198] = 0xF0;
  buf[199] = 0x9F;
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    s = 0;
    CHECK_EQ(herald__utf8_validate(&s, buf, sizeof buf), 0);
    CHECK(s != HERALD_UTF8_ACCEPT);
    static const uint8_t rest[] = {0x98, 0x80, 'z'};
    CHECK_EQ(herald__utf8_validate(&s, rest, 3), 0);
    CHECK_EQ(s, HERALD_UTF8_ACCEPT);
  }
  herald__utf8_force_scalar(0);
}

/* ------------------------------------------------------------------------ */
/* Exhaustive short sequences                                                */
/* ------------------------------------------------------------------------ */

static const uint8_t edge_bytes[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                     0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
                                     0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1,
                                     0xF3, 0xF4, 0xF5, 0xF7, 0xF8, 0xFF};
#define NEDGE (sizeof edge_bytes / sizeof *edge_bytes)

/* Compares the whole-input verdict (and that herald_utf8_valid agrees) for a
 * sequence embedded in ASCII at the given offset of a 100-byte buffer. */
static int agree_at(const uint8_t *seq, size_t len, size_t at) {
  uint8_t buf[100];
  int open;
  memset(buf, ' ', sizeof buf);
  memcpy(buf + at, seq, len);
  size_t bad = ref_first_bad(buf, sizeof buf, &open);
  uint32_t s = 0;
  int r = herald__utf8_validate(&s, buf, sizeof buf);
  int ok = r == (bad < sizeof buf ? -1 : 0);
  /* The chunk ending at the sequence's end must also agree (fail-fast,
   * including an incomplete valid prefix at the very end). */
  bad = ref_first_bad(buf, at + len, &open);
  s = 0;
  r = herald__utf8_validate(&s, buf, at + len);
  ok = ok && r == (bad < at + len ? -1 : 0);
  if (r == 0)
    ok = ok && (s != HERALD_UTF8_ACCEPT) == open;
  return ok;
}

static void test_exhaustive_short(void) {
  static const size_t offsets[] = {0,  29, 30, 31, 32, 33, 60, 61,
                                   62, 63, 64, 65, 94, 95, 96};
#define NOFF (sizeof offsets / sizeof *offsets)
  uint8_t seq[4];
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    size_t fails = 0, k = 0;
    /* Every 1- and 2-byte sequence, at the start and at a block edge. */
    for (unsigned a = 0; a < 256; a++) {
      seq[0] = (uint8_t)a;
      check_input(seq, 1, 1);
      for (unsigned b = 0; b < 256; b++) {
        seq[1] = (uint8_t)b;
        fails += !agree_at(seq, 2, 0);
        fails += !agree_at(seq, 2, offsets[k++ % NOFF]);
      }
    }
    /* Every 3- and 4-byte sequence of edge-case bytes, each at one of the
     * offsets in turn. */
    for (size_t a = 0; a < NEDGE; a++)
      for (size_t b = 0; b < NEDGE; b++)
        for (size_t c = 0; c < NEDGE; c++)
          for (size_t d = 0; d < NEDGE; d++) {
            seq[0] = edge_bytes[a];
            seq[1] = edge_bytes[b];
            seq[2] = edge_bytes[c];
            seq[3] = edge_bytes[d];
            size_t o = offsets[k++ % NOFF];
            fails += !agree_at(seq, 3, o);
            fails += !agree_at(seq, 4, o);
          }
    CHECK_EQ(fails, 0);
  }
#undef NOFF
  herald__utf8_force_scalar(0);
}

/* ------------------------------------------------------------------------ */
/* Random texts                                                              */
/* ------------------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* xorshift64*: a fixed seed gives the same texts on every run. */
static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

/* Appends the UTF-8 encoding of cp to p; returns its length. */
static size_t encode(uint8_t *p, uint32_t cp) {
  if (cp < 0x80) {
    p[0] = (uint8_t)cp;
    return 1;
  }
  if (cp < 0x800) {
    p[0] = (uint8_t)(0xC0 | (cp >> 6));
    p[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    p[0] = (uint8_t)(0xE0 | (cp >> 12));
    p[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    p[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  p[0] = (uint8_t)(0xF0 | (cp >> 18));
  p[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  p[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
  p[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* A random scalar value of a random encoded length, biased to the edges of
 * each length's range; ascii_pct percent are ASCII. */
static uint32_t random_cp(unsigned ascii_pct) {
  static const uint32_t edges[] = {0x80,   0x7FF,  0x800,   0xD7FF,   0xE000,
                                   0xFFFD, 0xFFFF, 0x10000, 0x10FFFF, 0x7F,
                                   0x0,    0xFFFE, 0x1F600, 0x3B1,    0xFFFF};
  uint64_t r = rng();
  if (r % 100 < ascii_pct)
    return (uint32_t)((r >> 8) % 0x80);
  switch ((r >> 8) % 5) {
  case 0:
    return 0x80 + (uint32_t)((r >> 16) % (0x800 - 0x80));
  case 1: {
    uint32_t cp = 0x800 + (uint32_t)((r >> 16) % (0x10000 - 0x800));
    return cp >= 0xD800 && cp <= 0xDFFF ? cp - 0x800 : cp;
  }
  case 2:
    return 0x10000 + (uint32_t)((r >> 16) % (0x110000 - 0x10000));
  case 3:
    return edges[(r >> 16) % (sizeof edges / sizeof *edges)];
  default:
    return (uint32_t)((r >> 16) % 0x80);
  }
}

/* Fills up to cap bytes (at least cap - 3) with random whole characters. */
static size_t random_text(uint8_t *p, size_t cap, unsigned ascii_pct) {
  size_t n = 0;
  uint8_t tmp[4];
  while (n < cap) {
    size_t len = encode(tmp, random_cp(ascii_pct));
    if (n + len > cap)
      break;
    memcpy(p + n, tmp, len);
    n += len;
  }
  return n;
}

static void test_random_short(void) {
  uint8_t buf[320];
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    for (size_t len = 0; len <= 300; len++) {
      for (unsigned pct = 0; pct <= 90; pct += 45) {
        size_t n = random_text(buf, len, pct);
        CHECK_EQ(herald_utf8_valid(buf, n), 1);
        check_input(buf, n, 1);
      }
    }
  }
  herald__utf8_force_scalar(0);
}

/* Random corruption: overwrite 1..3 bytes and compare everything with the
 * reference (verdict, rejecting chunk for splits and byte-at-a-time). */
static void test_random_corrupt(void) {
  uint8_t buf[320];
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    for (int iter = 0; iter < 3000; iter++) {
      size_t n = random_text(buf, 1 + rng() % 300, (unsigned)(rng() % 100));
      if (n == 0)
        continue;
      int hits = 1 + (int)(rng() % 3);
      for (int h = 0; h < hits; h++) {
        uint64_t r = rng();
        if (n == 0)
          break;
        size_t at = (size_t)(r % n);
        switch ((r >> 32) % 4) {
        case 0:
          buf[at] = (uint8_t)(r >> 40);
          break;
        case 1:
          buf[at] = edge_bytes[(r >> 40) % NEDGE];
          break;
        case 2:
          buf[at] ^= 0x40;
          break;
        default:
          n = at; /* truncate, maybe mid-sequence */
          break;
        }
      }
      check_input(buf, n, 1 + (size_t)(rng() % 5));
    }
  }
  herald__utf8_force_scalar(0);
}

#define BIG (100 * 1024)
static uint8_t big[BIG + 8];

/* Large texts: whole equals random-sized chunks equals sampled 2-way splits;
 * then a single corruption at sampled positions is caught by the right
 * chunk. */
static void test_random_large(void) {
  static const unsigned pcts[] = {0, 50, 99, 100};
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    for (size_t t = 0; t < sizeof pcts / sizeof *pcts; t++) {
      size_t n = random_text(big, BIG - (size_t)(rng() % 7), pcts[t]);
      CHECK_EQ(herald_utf8_valid(big, n), 1);
      /* Random chunk sizes, 1..2000. */
      size_t cuts[4096], nc = 0, at = 0;
      while (nc < 4096) {
        at += 1 + (size_t)(rng() % 2000);
        if (at >= n)
          break;
        cuts[nc++] = at;
      }
      uint32_t s;
      CHECK_EQ(run_chunks(big, n, cuts, nc, &s), -1);
      CHECK_EQ(s, HERALD_UTF8_ACCEPT);
      check_input(big, n, 997);
      /* Corrupt one byte at sampled positions. */
      for (int k = 0; k < 40; k++) {
        size_t pos = (size_t)(rng() % n);
        uint8_t saved = big[pos];
        big[pos] = edge_bytes[rng() % NEDGE];
        int open;
        size_t bad = ref_first_bad(big, n, &open);
        s = 0;
        CHECK_EQ(herald__utf8_validate(&s, big, n), bad < n ? -1 : 0);
        size_t cut = bad < n ? bad : pos;
        int chunk = run_chunks(big, n, &cut, 1, &s);
        CHECK_EQ(chunk, bad < n ? 1 : -1);
        cut = bad < n ? bad + 1 : pos;
        chunk = run_chunks(big, n, &cut, 1, &s);
        CHECK_EQ(chunk, bad < n ? 0 : -1);
        big[pos] = saved;
      }
    }
  }
  herald__utf8_force_scalar(0);
}

/* Every chunk in its own exactly-sized heap block, so that ASan catches any
 * read before or after a chunk (SIMD loads included). */
static void test_exact_buffers(void) {
  uint8_t text[400];
  for (int mode = 0; mode < 2; mode++) {
    herald__utf8_force_scalar(mode == 0);
    for (size_t len = 1; len <= 260; len++) {
      size_t n = random_text(text, len, (unsigned)(len % 3) * 45);
      int open;
      if (len % 5 == 0 && n > 0)
        text[n - 1 - (size_t)(rng() % n)] = edge_bytes[rng() % NEDGE];
      size_t bad = ref_first_bad(text, n, &open);
      for (size_t k = 0; k <= n; k += 1 + n / 40) {
        uint8_t *a = malloc(k ? k : 1), *b = malloc(n - k ? n - k : 1);
        memcpy(a, text, k);
        memcpy(b, text + k, n - k);
        uint32_t s = 0;
        int r1 = herald__utf8_validate(&s, a, k);
        int r2 = r1 < 0 ? -1 : herald__utf8_validate(&s, b, n - k);
        CHECK_EQ(r1, bad < k ? -1 : 0);
        CHECK_EQ(r2, bad < n ? -1 : 0);
        if (bad == n)
          CHECK_EQ(s != HERALD_UTF8_ACCEPT, open);
        free(a);
        free(b);
      }
    }
  }
  herald__utf8_force_scalar(0);
}

/* A state the validator never hands out is rejected rather than trusted. */
static void test_bad_state(void) {
  uint32_t s = 0xFFFFFFFFu;
  CHECK_EQ(herald__utf8_validate(&s, (const uint8_t *)"a", 1), -1);
}

int main(void) {
  RUN(test_valid_basic);
  RUN(test_valid_boundaries);
  RUN(test_invalid_too_large);
  RUN(test_invalid_continuations);
  RUN(test_invalid_lonely_starts);
  RUN(test_invalid_last_byte_missing);
  RUN(test_invalid_impossible);
  RUN(test_invalid_overlong);
  RUN(test_invalid_surrogates);
  RUN(test_fail_fast);
  RUN(test_state);
  RUN(test_exhaustive_short);
  RUN(test_random_short);
  RUN(test_random_corrupt);
  RUN(test_random_large);
  RUN(test_exact_buffers);
  RUN(test_bad_state);
  return TEST_REPORT();
}
