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
 * to pairs of SSE2 or other native vectors elsewhere), then 8-byte words, then
 * single bytes. Every load and store goes through memcpy, so any alignment is
 * fine and nothing breaks strict aliasing.
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

size_t herald__mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                         const uint8_t key[4], size_t off) {
  uint8_t k8[8];
  uint64_t w, kw;
  size_t i = 0;

  off &= 3;
  if (n == 0)
    return off;
  /* The key rotated to start at off, twice: k8[j] = key[(off + j) % 4]. */
  for (size_t j = 0; j < 4; j++)
    k8[j] = k8[j + 4] = key[(off + j) & 3];
  memcpy(&kw, k8, 8);

  if (n >= MASK_VECTOR_MIN) {
    uint8_t pat[32];
    size_t bulk = n & ~(size_t)31;
    for (size_t j = 0; j < sizeof pat; j += 8)
      memcpy(pat + j, k8, 8);
    __atomic_load_n(&mask_engine_ptr, __ATOMIC_RELAXED)(dst, src, bulk, pat);
    i = bulk;
  }
  /* Every step so far covered a multiple of four bytes, so the key's phase
   * at i is still off. */
  for (; n - i >= 8; i += 8) {
    memcpy(&w, src + i, 8);
    w ^= kw;
    memcpy(dst + i, &w, 8);
  }
  for (size_t j = 0; i < n; i++, j++)
    dst[i] = (uint8_t)(src[i] ^ k8[j]);
  return (off + n) & 3;
}

size_t herald__mask(uint8_t *p, size_t n, const uint8_t key[4], size_t off) {
  return herald__mask_copy(p, p, n, key, off);
}
