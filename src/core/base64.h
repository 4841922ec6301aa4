/* base64.h - RFC 4648 section 4 base64 with padding. Internal. */
#ifndef HERALD_BASE64_H
#define HERALD_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encodes in[0..n) into out, which needs 4 * ((n + 2) / 3) bytes; writes no
 * NUL. Returns the number of characters written. */
size_t herald__base64_encode(char *out, const uint8_t *in, size_t n);

/* The 6-bit value of one base64 character, or -1: c62 and c63 are the
 * alphabet's last two characters ('+' '/' for RFC 4648 section 4, '-' '_'
 * for base64url, section 5). Shared by every base64 reader in the tree. */
int herald__base64_value(unsigned char c, char c62, char c63);

/* Decodes the canonical padded form only (length a multiple of 4, '=' only
 * as the last one or two characters, unused bits zero). Writes at most outcap
 * bytes. Returns the decoded length, or -1 if in is not canonical base64 or
 * does not fit. */
long herald__base64_decode(uint8_t *out, size_t outcap, const char *in,
                           size_t n);

#endif
