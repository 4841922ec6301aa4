/* mask.h - RFC 6455 5.3 payload masking. Internal. */
#ifndef HERALD_MASK_H
#define HERALD_MASK_H

#include <stddef.h>
#include <stdint.h>

/* XORs src[0..n) with the 4-byte key into dst (dst == src allowed, other
 * overlap not), starting at key byte off (0..3), and returns the key offset
 * for the byte after the last one: (off + n) & 3. Correct for any n,
 * alignment and offset, so a payload split across calls unmasks exactly as
 * it would whole. Word-at-a-time / SIMD. */
size_t herald__mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                         const uint8_t key[4], size_t off);

/* The same in place, on p[0..n); inline, so unmasking a received payload is
 * one call. */
static inline size_t herald__mask(uint8_t *p, size_t n, const uint8_t key[4],
                                  size_t off) {
  return herald__mask_copy(p, p, n, key, off);
}

#endif
