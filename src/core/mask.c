/* mask.c - RFC 6455 section 5.3 payload masking.
 *
 * Section 5.3 defines the masked byte i as original byte i XOR key[i mod 4].
 * A payload may arrive (or be sent) in pieces, so the caller passes the key
 * offset at which the piece starts and gets back the offset for the next one.
 *
 * The key repeats every four bytes, so once it is rotated to the starting
 * offset, every block whose length is a multiple of four starts at the same
 * key phase. We spread the rotated key over a 32-byte pattern and XOR whole
 * blocks with it: 128 bytes per loop step in 32-byte vectors (GCC/Clang vector
 * extensions, which compile to AVX2 in the copy of the loop built for it, and
 * to pairs of SSE2 or other native vectors elsewhere), then 16-, 8- and
 * 4-byte steps and single bytes. Every load and store goes through memcpy, so
 * any alignment is fine and nothing breaks strict aliasing.
 */
#include "core/mask.h"

#include <string.h>

typedef uint8_t mask_vec __attribute__((vector_size(32)));

/* Below this, the word loop beats an indirect call into the vector loop. */
#define MASK_VECTOR_MIN 64

/*
 * XORs src[0..n) with the 32-byte key pattern pat into dst, for n a multiple
 * of 32. All four loads of a step happen before its stores, so dst == src
 * works. Always inlined so that each caller's target attributes decide which
 * instructions the vector operations become.
 */
static inline __attribute__((always_inline)) void
mask_vectors(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *pat) {
  mask_vec k, a, b, c, d;
  size_t i = 0;
  memcpy(&k, pat, sizeof k);
  for (; n - i >= 128; i += 128) {
    memcpy(&a, src + i, 32);
    memcpy(&b, src + i + 32, 32);
    memcpy(&c, src + i + 64, 32);
    memcpy(&d, src + i + 96, 32);
    a ^= k;
    b ^= k;
    c ^= k;
    d ^= k;
    memcpy(dst + i, &a, 32);
    memcpy(dst + i + 32, &b, 32);
    memcpy(dst + i + 64, &c, 32);
    memcpy(dst + i + 96, &d, 32);
  }
  for (; i < n; i += 32) {
    memcpy(&a, src + i, 32);
    a ^= k;
    memcpy(dst + i, &a, 32);
  }
}

typedef void (*mask_engine)(uint8_t *, const uint8_t *, size_t,
                            const uint8_t *);

static void mask_generic(uint8_t *dst, const uint8_t *src, size_t n,
                         const uint8_t *pat) {
  mask_vectors(dst, src, n, pat);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HERALD_MASK_X86 1
__attribute__((target("avx2"))) static void
mask_avx2(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *pat) {
  mask_vectors(dst, src, n, pat);
}
#endif

static mask_engine mask_best(void) {
#ifdef HERALD_MASK_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2"))
    return mask_avx2;
#endif
  return mask_generic;
}

static void mask_first(uint8_t *dst, const uint8_t *src, size_t n,
                       const uint8_t *pat);

/* The engine in use: mask_first until the first large call picks the best one.
 * Racing first calls store the same value; relaxed atomics keep it defined. */
static mask_engine mask_engine_ptr = mask_first;

static void mask_first(uint8_t *dst, const uint8_t *src, size_t n,
                       const uint8_t *pat) {
  mask_engine e = mask_best();
  __atomic_store_n(&mask_engine_ptr, e, __ATOMIC_RELAXED);
  e(dst, src, n, pat);
}

typedef uint8_t mask_v16 __attribute__((vector_size(16)));

/* XORs src[0..n) into dst with kw, the key rotated to the phase of src[0]
 * and repeated twice, for n under 64 (what is left after the vector bulk,
 * or a whole small payload). Every step covers a multiple of four bytes, so
 * the phase stays put: 16-byte vectors (each loaded before it is stored, so
 * dst == src works), then 8, 4 and single bytes. Explicit vectors keep the
 * compiler from vectorizing a word loop itself, with overlap checks that
 * cost more than the XOR at these sizes. */
static inline __attribute__((always_inline)) void
mask_tail(uint8_t *dst, const uint8_t *src, size_t n, uint64_t kw) {
  size_t i = 0;
  mask_v16 kv;
  memcpy(&kv, &kw, 8);
  memcpy((uint8_t *)&kv + 8, &kw, 8);
  for (; n - i >= 16; i += 16) {
    mask_v16 v;
    memcpy(&v, src + i, 16);
    v ^= kv;
    memcpy(dst + i, &v, 16);
  }
  if (n - i >= 8) {
    uint64_t w;
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
    i += 8;
  }
  uint8_t kb[8];
  memcpy(kb, &kw, 8);
  if (n - i >= 4) {
    uint32_t w4, k4;
    memcpy(&w4, src + i, 4);
    memcpy(&k4, kb, 4);
    w4 ^= k4;
    memcpy(dst + i, &w4, 4);
    i += 4;
  }
  switch (n - i) {
  case 3:
    dst[i + 2] = (uint8_t)(src[i + 2] ^ kb[2]);
    /* fall through */
  case 2:
    dst[i + 1] = (uint8_t)(src[i + 1] ^ kb[1]);
    /* fall through */
  case 1:
    dst[i] = (uint8_t)(src[i] ^ kb[0]);
    break;
  default:
    break;
  }
}

/* A payload of MASK_VECTOR_MIN bytes or more: the largest multiple of 32
 * through the vector engine, the rest in mask_tail. Out of line, so that
 * the small case in herald__mask_copy makes no call and needs no frame. */
static __attribute__((noinline)) void
mask_large(uint8_t *dst, const uint8_t *src, size_t n, uint64_t kw) {
  uint8_t pat[32];
  size_t bulk = n & ~(size_t)31;
  for (size_t j = 0; j < sizeof pat; j += 8)
    memcpy(pat + j, &kw, 8);
  __atomic_load_n(&mask_engine_ptr, __ATOMIC_RELAXED)(dst, src, bulk, pat);
  mask_tail(dst + bulk, src + bulk, n - bulk, kw);
}

size_t herald__mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                         const uint8_t key[4], size_t off) {
  off &= 3;
  /* The key rotated to start at off, twice over: byte j of kw (in memory
   * order) is key[(off + j) % 4]. Built from 4-byte copies rather than a
   * byte loop: most payloads are small, and this runs once per frame. */
  uint8_t k8[12];
  uint64_t kw;
  memcpy(k8, key, 4);
  memcpy(k8 + 4, key, 4);
  memcpy(k8 + 8, key, 4);
  memcpy(&kw, k8 + off, 8);
  if (n >= MASK_VECTOR_MIN)
    mask_large(dst, src, n, kw);
  else
    mask_tail(dst, src, n, kw);
  return (off + n) & 3;
}
