/* utf8.c - incremental, fail-fast UTF-8 validation (RFC 3629).
 *
 * Two engines give the same verdicts:
 *
 *  - A portable scalar one: a small deterministic automaton over byte classes
 *    that follows the well-formed byte sequence table of RFC 3629 section 4,
 *    plus a skip over runs of ASCII that tests 16 bytes per step.
 *
 *  - An AVX2 one for the bulk of a chunk. It looks at every byte together with
 *    the one before it: three 16-entry tables, indexed by the high nibble of
 *    the previous byte, the low nibble of the previous byte and the high
 *    nibble of the current byte, each give a bit set of the error kinds that
 *    the nibble is compatible with. An error is present exactly where all
 *    three agree on some kind. The third and fourth bytes of a sequence are
 *    checked separately from the bytes two and three positions back.
 *
 * The SIMD engine needs no state of its own: the scalar automaton finishes a
 * sequence carried over from the previous chunk, the SIMD engine checks the
 * bytes from there up to the start of a sequence left incomplete at the end of
 * the chunk, and the automaton takes those last few bytes. Every byte of a
 * chunk is thus checked before the call returns, so a chunk that makes the
 * text invalid always returns -1 (fail-fast at chunk granularity), and the
 * verdict does not depend on how the input is split.
 */
#include "core/utf8.h"

#include "herald/core.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HERALD_UTF8_X86 1
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* Scalar automaton                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Byte classes. RFC 3629 section 4 restricts only the second byte of a
 * sequence beyond "80..BF", so the continuation bytes split into the three
 * ranges those restrictions use: 80..8F, 90..9F and A0..BF.
 */
enum {
  CL_ASCII = 0, /* 00..7F */
  CL_C80 = 1,   /* 80..8F */
  CL_C90 = 2,   /* 90..9F */
  CL_CA0 = 3,   /* A0..BF */
  CL_BAD = 4,   /* C0, C1 (always overlong), F5..FF (above U+10FFFF) */
  CL_L2 = 5,    /* C2..DF: two-byte lead */
  CL_E0 = 6,    /* E0: second byte A0..BF (no overlongs) */
  CL_L3 = 7,    /* E1..EC, EE, EF: three-byte lead */
  CL_ED = 8,    /* ED: second byte 80..9F (no surrogates) */
  CL_F0 = 9,    /* F0: second byte 90..BF (no overlongs) */
  CL_L4 = 10,   /* F1..F3: four-byte lead */
  CL_F4 = 11    /* F4: second byte 80..8F (nothing above U+10FFFF) */
};

/* clang-format off */
static const uint8_t utf8_class[256] = {
  /* 00..7F */
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  /* 80..8F, 90..9F, A0..BF */
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
  3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
  3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
  /* C0..DF */
  4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
  5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
  /* E0..EF */
  6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
  /* F0..FF */
  9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};
/* clang-format on */

/*
 * States, premultiplied by 16 so that state + class indexes the transition
 * table directly. Each names what the next byte must be. HERALD_UTF8_ACCEPT
 * (0) is the character boundary; ST_REJECT absorbs everything.
 */
enum {
  ST_ACCEPT = 0,   /* boundary */
  ST_1 = 16,       /* one more 80..BF */
  ST_2 = 32,       /* two more 80..BF */
  ST_3 = 48,       /* three more 80..BF */
  ST_E0 = 64,      /* A0..BF, then one more */
  ST_ED = 80,      /* 80..9F, then one more */
  ST_F0 = 96,      /* 90..BF, then two more */
  ST_F4 = 112,     /* 80..8F, then two more */
  ST_REJECT = 128, /* not a prefix of valid UTF-8 */
  ST_LAST_OPEN = ST_F4
};

#define R ST_REJECT
/* clang-format off */
static const uint8_t utf8_next[144] = {
  /*         ASCII 80   90   A0   bad  L2   E0     L3   ED     F0     L4 F4 */
  /* ACC */  0,    R,   R,   R,   R,   ST_1, ST_E0, ST_2, ST_ED, ST_F0,
             ST_3, ST_F4, R, R, R, R,
  /* 1 */    R,    0,   0,   0,   R, R, R, R, R, R, R, R, R, R, R, R,
  /* 2 */    R,    ST_1, ST_1, ST_1, R, R, R, R, R, R, R, R, R, R, R, R,
  /* 3 */    R,    ST_2, ST_2, ST_2, R, R, R, R, R, R, R, R, R, R, R, R,
  /* E0 */   R,    R,   R,   ST_1, R, R, R, R, R, R, R, R, R, R, R, R,
  /* ED */   R,    ST_1, ST_1, R, R, R, R, R, R, R, R, R, R, R, R, R,
  /* F0 */   R,    R,   ST_2, ST_2, R, R, R, R, R, R, R, R, R, R, R, R,
  /* F4 */   R,    ST_2, R, R, R, R, R, R, R, R, R, R, R, R, R, R,
  /* REJ */  R, R, R, R, R, R, R, R, R, R, R, R, R, R, R, R,
};
/* clang-format on */
#undef R

/* Bytes 0x80 in every lane: the high bits that mark non-ASCII bytes. */
#define HIGH_BITS 0x8080808080808080ull

/* Whether the state is one this file hands out: a premultiplied open state
 * or the boundary. Anything else (a caller's stale or garbage value) rejects
 * instead of indexing past the table. */
static int state_ok(uint32_t s) {
  return (s & 15u) == 0 && s <= ST_LAST_OPEN;
}

/*
 * Runs the automaton over p[0..n) from state s. Returns the final state,
 * which is ST_REJECT as soon as a byte made the prefix invalid. Whenever the
 * automaton is on a boundary, ASCII is skipped without it: 16 and 8 bytes at a
 * time while no byte has its high bit set (loaded with memcpy, so any
 * alignment is fine), then byte by byte.
 */
static uint32_t utf8_run(uint32_t s, const uint8_t *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (s == ST_ACCEPT) {
      uint64_t w0, w1;
      while (n - i >= 16) {
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        if ((w0 | w1) & HIGH_BITS)
          break;
        i += 16;
      }
      if (n - i >= 8) {
        memcpy(&w0, p + i, 8);
        if (!(w0 & HIGH_BITS))
          i += 8;
      }
      while (i < n && p[i] < 0x80)
        i++;
    }
    /* Up to 16 bytes through the automaton before looking for ASCII runs
     * again, so mixed text does not pay for a failed skip on every byte. */
    size_t end = n - i > 16 ? i + 16 : n;
    for (; i < end; i++) {
      s = utf8_next[s + utf8_class[p[i]]];
      if (s == ST_REJECT)
        return s;
    }
  }
  return s;
}

static int validate_scalar(uint32_t *state, const uint8_t *p, size_t n) {
  uint32_t s = *state;
  if (!state_ok(s))
    return -1;
  s = utf8_run(s, p, n);
  if (s == ST_REJECT)
    return -1;
  *state = s;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* AVX2 engine                                                               */
/* ------------------------------------------------------------------------ */

#ifdef HERALD_UTF8_X86

/*
 * Error kinds, one bit each, for a pair (previous byte, current byte). Each
 * kind is a product of a set of previous-byte high nibbles, a set of
 * previous-byte low nibbles and a set of current-byte high nibbles, which is
 * what lets three independent nibble lookups, ANDed, detect it.
 *
 *   SHORT  a lead byte (C..F) followed by a non-continuation (0..7, C..F):
 *          the sequence ended too early.
 *   LONG   an ASCII byte followed by a continuation: a stray continuation.
 *   OVL3   E0 followed by 80..9F: a three-byte overlong (below U+0800).
 *   SURR   ED followed by A0..BF: a UTF-16 surrogate U+D800..U+DFFF.
 *   OVL2   C0 or C1 followed by anything: a two-byte overlong (below U+0080).
 *   BIG    F4 followed by 90..BF, or F5..FF followed by 90..BF: above
 *          U+10FFFF.
 *   F8X    F0 followed by 80..8F (a four-byte overlong, below U+10000), or
 *          F5..FF followed by 80..8F (above U+10FFFF). Both have high nibble
 *          F before and 8 after, so they share a bit.
 *   CONT2  a continuation followed by a continuation. This is not an error by
 *          itself: it is right exactly when the current byte is the third or
 *          fourth of a sequence, which the bytes two and three back decide.
 *          The bit is therefore XORed with "must be a continuation" below.
 *
 * F5..FF followed by a non-continuation is caught by SHORT.
 */
enum {
  E_SHORT = 1 << 0,
  E_LONG = 1 << 1,
  E_OVL3 = 1 << 2,
  E_SURR = 1 << 3,
  E_OVL2 = 1 << 4,
  E_BIG = 1 << 5,
  E_F8X = 1 << 6,
  E_CONT2 = 1 << 7
};

/* Indexed by the high nibble of the previous byte. */
static const uint8_t tbl_prev_hi[16] = {
    E_LONG,
    E_LONG,
    E_LONG,
    E_LONG,
    E_LONG,
    E_LONG,
    E_LONG,
    E_LONG,
    E_CONT2,
    E_CONT2,
    E_CONT2,
    E_CONT2,
    E_SHORT | E_OVL2,
    E_SHORT,
    E_SHORT | E_OVL3 | E_SURR,
    E_SHORT | E_BIG | E_F8X,
};

/* Indexed by the low nibble of the previous byte. SHORT, LONG and CONT2 do
 * not depend on it, so every entry carries them. */
#define ANY_LO (E_SHORT | E_LONG | E_CONT2)
static const uint8_t tbl_prev_lo[16] = {
    ANY_LO | E_OVL3 | E_OVL2 | E_F8X, /* x0: E0, C0, F0 */
    ANY_LO | E_OVL2,                  /* x1: C1 */
    ANY_LO,
    ANY_LO,
    ANY_LO | E_BIG,         /* x4: F4 */
    ANY_LO | E_BIG | E_F8X, /* x5..xF: F5..FF */
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_SURR | E_BIG | E_F8X, /* xD: ED */
    ANY_LO | E_BIG | E_F8X,
    ANY_LO | E_BIG | E_F8X,
};
#undef ANY_LO

/* Indexed by the high nibble of the current byte. */
#define CONT (E_LONG | E_CONT2 | E_OVL2)
static const uint8_t tbl_cur_hi[16] = {
    E_SHORT | E_OVL2,      E_SHORT | E_OVL2, E_SHORT | E_OVL2, E_SHORT | E_OVL2,
    E_SHORT | E_OVL2,      E_SHORT | E_OVL2, E_SHORT | E_OVL2, E_SHORT | E_OVL2,
    CONT | E_OVL3 | E_F8X, /* 8x */
    CONT | E_OVL3 | E_BIG, /* 9x */
    CONT | E_SURR | E_BIG, /* Ax */
    CONT | E_SURR | E_BIG, /* Bx */
    E_SHORT | E_OVL2,      E_SHORT | E_OVL2, E_SHORT | E_OVL2, E_SHORT | E_OVL2,
};
#undef CONT

/*
 * Per-lane maxima for the last three bytes of a block: a byte above its
 * maximum is a lead whose sequence runs past the block (F0.. in the third
 * last position, E0.. in the second last, C0.. in the last).
 */
static const uint8_t tbl_open_max[32] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xEF, 0xDF, 0xBF,
};

#define AVX2_FN __attribute__((target("avx2")))

/* The shortest input avx2_complete takes. */
#define AVX2_MIN 35

typedef struct {
  __m256i prev_hi, prev_lo, cur_hi, nibble, open_max;
} avx2_tables;

/*
 * Returns a vector that is nonzero where the block cur holds an error, given
 * the blocks prev1, prev2 and prev3 of the bytes one, two and three positions
 * before each of cur's. Sequences that run past the end of cur are not errors
 * here; the caller deals with them.
 */
AVX2_FN static inline __m256i avx2_kernel(const avx2_tables *t, __m256i cur,
                                          __m256i prev1, __m256i prev2,
                                          __m256i prev3) {
  __m256i p_hi = _mm256_and_si256(_mm256_srli_epi16(prev1, 4), t->nibble);
  __m256i p_lo = _mm256_and_si256(prev1, t->nibble);
  __m256i c_hi = _mm256_and_si256(_mm256_srli_epi16(cur, 4), t->nibble);
  __m256i kinds =
      _mm256_and_si256(_mm256_and_si256(_mm256_shuffle_epi8(t->prev_hi, p_hi),
                                        _mm256_shuffle_epi8(t->prev_lo, p_lo)),
                       _mm256_shuffle_epi8(t->cur_hi, c_hi));

  /* The current byte must be a continuation when the byte two back is a
   * three- or four-byte lead (E0..FF) or the byte three back a four-byte lead
   * (F0..FF). Saturating subtraction leaves the high bit set exactly then. */
  __m256i third = _mm256_subs_epu8(prev2, _mm256_set1_epi8(0x60));
  __m256i fourth = _mm256_subs_epu8(prev3, _mm256_set1_epi8(0x70));
  __m256i must = _mm256_and_si256(_mm256_or_si256(third, fourth),
                                  _mm256_set1_epi8((char)0x80));
  return _mm256_xor_si256(kinds, must);
}

/* avx2_kernel for the block cur that follows the block prev in memory. */
AVX2_FN static inline __m256i avx2_check(const avx2_tables *t, __m256i cur,
                                         __m256i prev) {
  /* [prev's high lane, cur's low lane]: alignr works within 128-bit lanes,
   * so this supplies the bytes that shift into each lane's front. */
  __m256i carry = _mm256_permute2x128_si256(prev, cur, 0x21);
  return avx2_kernel(t, cur, _mm256_alignr_epi8(cur, carry, 15),
                     _mm256_alignr_epi8(cur, carry, 14),
                     _mm256_alignr_epi8(cur, carry, 13));
}

AVX2_FN static inline __m256i load32(const uint8_t *p) {
  return _mm256_loadu_si256((const __m256i *)(const void *)p);
}

/*
 * Checks that p[0..n), n >= 35, which starts on a character boundary, is
 * complete, valid UTF-8: returns 0 if so, -1 otherwise. Whole 32-byte blocks
 * are checked in order; a final partial block is handled by checking the last
 * 32 bytes instead, with their three predecessors loaded directly from memory
 * (hence n >= 35): bytes checked twice get the same verdict both times. A
 * sequence still open at the very end is an error. All-ASCII 64-byte steps
 * cost one OR and one test; they can only be wrong when the block before left
 * a sequence open, which "open" records.
 */
AVX2_FN static int avx2_complete(const uint8_t *p, size_t n) {
  avx2_tables t;
  t.prev_hi = _mm256_broadcastsi128_si256(
      _mm_loadu_si128((const __m128i *)(const void *)tbl_prev_hi));
  t.prev_lo = _mm256_broadcastsi128_si256(
      _mm_loadu_si128((const __m128i *)(const void *)tbl_prev_lo));
  t.cur_hi = _mm256_broadcastsi128_si256(
      _mm_loadu_si128((const __m128i *)(const void *)tbl_cur_hi));
  t.nibble = _mm256_set1_epi8(0x0F);
  t.open_max = load32(tbl_open_max);
  __m256i high = _mm256_set1_epi8((char)0x80);

  __m256i prev = _mm256_setzero_si256();
  __m256i open = _mm256_setzero_si256();
  __m256i err = _mm256_setzero_si256();
  size_t i = 0;
  for (; n - i >= 64; i += 64) {
    __m256i a = load32(p + i);
    __m256i b = load32(p + i + 32);
    if (_mm256_testz_si256(_mm256_or_si256(a, b), high)) {
      err = _mm256_or_si256(err, open);
      open = _mm256_setzero_si256();
      prev = b;
      continue;
    }
    err = _mm256_or_si256(err, avx2_check(&t, a, prev));
    err = _mm256_or_si256(err, avx2_check(&t, b, a));
    if (!_mm256_testz_si256(err, err))
      return -1;
    open = _mm256_subs_epu8(b, t.open_max);
    prev = b;
  }
  if (n - i >= 32) {
    __m256i a = load32(p + i);
    err = _mm256_or_si256(err, avx2_check(&t, a, prev));
    prev = a;
    i += 32;
  }
  if (i < n) {
    const uint8_t *q = p + n - 32;
    prev = load32(q);
    err = _mm256_or_si256(err, avx2_kernel(&t, prev, load32(q - 1),
                                           load32(q - 2), load32(q - 3)));
  }
  err = _mm256_or_si256(err, _mm256_subs_epu8(prev, t.open_max));
  return _mm256_testz_si256(err, err) ? 0 : -1;
}

/*
 * The AVX2 engine for a whole chunk. The automaton finishes a sequence carried
 * in from the previous chunk (at most three bytes). Then the chunk's remainder
 * splits at m, the start of its last sequence if that sequence is incomplete
 * (found by stepping back over at most three continuation bytes from the end),
 * else the end. The remainder is a valid prefix exactly when p[i..m) is
 * complete valid UTF-8, which avx2_complete decides, and p[m..n), at most
 * three bytes, is a valid prefix on its own, which the automaton decides and
 * turns into the state for the next chunk. A remainder too short for
 * avx2_complete goes to the automaton whole.
 */
static int validate_avx2(uint32_t *state, const uint8_t *p, size_t n) {
  uint32_t s = *state;
  size_t i = 0;
  if (!state_ok(s))
    return -1;
  while (s != ST_ACCEPT && i < n) {
    s = utf8_next[s + utf8_class[p[i++]]];
    if (s == ST_REJECT)
      return -1;
  }
  if (s != ST_ACCEPT) { /* the whole chunk continued one sequence */
    *state = s;
    return 0;
  }
  size_t m = n;
  for (size_t back = 1; back <= 3 && back <= n - i; back++) {
    uint8_t b = p[n - back];
    if (b < 0x80)
      break;
    if (b >= 0xC0) {
      size_t len = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2;
      if (len > back)
        m = n - back;
      break;
    }
  }
  if (m - i < AVX2_MIN) {
    m = i; /* too short for avx2_complete: the automaton does it all */
  } else if (avx2_complete(p + i, m - i) < 0) {
    return -1;
  }
  s = utf8_run(ST_ACCEPT, p + m, n - m);
  if (s == ST_REJECT)
    return -1;
  *state = s;
  return 0;
}

#endif /* HERALD_UTF8_X86 */

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                  */
/* ------------------------------------------------------------------------ */

/* Chunks shorter than this go straight to the automaton. */
#define UTF8_SIMD_MIN 48

typedef int (*utf8_engine)(uint32_t *, const uint8_t *, size_t);

static utf8_engine utf8_best(void) {
#ifdef HERALD_UTF8_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2"))
    return validate_avx2;
#endif
  return validate_scalar;
}

static int validate_first(uint32_t *state, const uint8_t *p, size_t n);

/* The engine in use. It starts as validate_first, which picks the best one
 * and stores it; concurrent first calls store the same value, and the
 * relaxed atomics keep that benign race defined. */
static utf8_engine utf8_engine_ptr = validate_first;

static int validate_first(uint32_t *state, const uint8_t *p, size_t n) {
  utf8_engine e = utf8_best();
  __atomic_store_n(&utf8_engine_ptr, e, __ATOMIC_RELAXED);
  return e(state, p, n);
}

/* Test hook: nonzero forces the scalar engine, zero restores the best one.
 * Declared here rather than in utf8.h because only the unit test uses it. */
void herald__utf8_force_scalar(int on);
void herald__utf8_force_scalar(int on) {
  __atomic_store_n(&utf8_engine_ptr, on ? validate_scalar : utf8_best(),
                   __ATOMIC_RELAXED);
}

int herald__utf8_validate(uint32_t *state, const uint8_t *p, size_t n) {
  /* Very short chunks are not worth an indirect call into the SIMD engine. */
  if (n < UTF8_SIMD_MIN)
    return validate_scalar(state, p, n);
  return __atomic_load_n(&utf8_engine_ptr, __ATOMIC_RELAXED)(state, p, n);
}

HERALD_API int herald_utf8_valid(const void *p, size_t n) {
  uint32_t s = HERALD_UTF8_ACCEPT;
  if (n == 0)
    return 1;
  return herald__utf8_validate(&s, p, n) == 0 && s == HERALD_UTF8_ACCEPT;
}
