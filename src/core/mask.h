/* mask.h - RFC 6455 5.3 payload masking. Internal. */
#ifndef HERALD_MASK_H
#define HERALD_MASK_H

#include <stddef.h>
#include <stdint.h>

/* XORs p[0..n) in place with the 4-byte key, starting at key byte
 * off (0..3), and returns the key offset for the byte after the last one:
 * (off + n) & 3. Correct for any n, alignment and offset, so a payload split
 * across calls unmasks exactly as it would whole. Word-at-a-time / SIMD. */
size_t herald__mask(uint8_t *p, size_t n, const uint8_t key[4], size_t off);

/* As herald__mask, but reads src and writes dst (dst == src allowed, other
 * overlap not). */
size_t herald__mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                         const uint8_t key[4], size_t off);

#endif
