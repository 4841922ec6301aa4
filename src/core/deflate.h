/* deflate.h - permessage-deflate (RFC 7692): parsing and negotiating the
 * Sec-WebSocket-Extensions header, and the zlib streams that compress and
 * decompress messages (deflate.c and zstream.c). Internal; conn.c drives
 * it.
 *
 * Ownership: every stream is allocated through the herald_mem hooks given to
 * its constructor and freed by the matching _del. No function keeps a pointer
 * to its arguments after it returns. */
#ifndef HERALD_DEFLATE_H
#define HERALD_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "herald/core.h"

/* The parameters of one offer or response (RFC 7692 7.1). */
typedef struct herald__pmd {
  uint8_t snct; /* server_no_context_takeover */
  uint8_t cnct; /* client_no_context_takeover */
  uint8_t smwb; /* server_max_window_bits: 0 absent, else 8..15 */
  uint8_t cmwb; /* client_max_window_bits: 0 absent, 1 valueless, 8..15 */
} herald__pmd;

/* Longest text herald__pmd_offer() / herald__pmd_accept() write. */
#define HERALD__PMD_TEXT_MAX 128

/* Client: writes the offer ("permessage-deflate; client_max_window_bits")
 * for cfg into out (HERALD__PMD_TEXT_MAX bytes) and returns its length. */
size_t herald__pmd_offer(const herald_deflate_config *cfg, char *out);

/* Server: walks every Sec-WebSocket-Extensions header in h[0..n) in order
 * and picks the first permessage-deflate offer that cfg accepts (RFC 7692
 * 5, 7.1). Offers with invalid, repeated or unknown parameters are declined;
 * a header that is not a valid extension list ends the search in that
 * header. Returns 1 and fills *agreed (the response's parameters) and
 * out and *outlen (the response text, HERALD__PMD_TEXT_MAX bytes), or 0 when no
 * offer is acceptable. */
int herald__pmd_accept(const herald_deflate_config *cfg, const herald_header *h,
                       size_t n, herald__pmd *agreed, char *out,
                       size_t *outlen);

/* Client: checks the server's Sec-WebSocket-Extensions headers against the
 * offer herald__pmd_offer(cfg) made (RFC 7692 5, 7.1). Returns 1 with
 * *agreed filled when permessage-deflate was accepted, 0 when the server
 * accepted no extension, or -1 with *why set (an extension we did not offer,
 * several, a parameter that is invalid, repeated, unknown or not allowed in
 * a response to our offer). */
int herald__pmd_check_response(const herald_deflate_config *cfg,
                               const herald_header *h, size_t n,
                               herald__pmd *agreed, const char **why);

/* ---- streams ------------------------------------------------------------ */

/* RFC 7692 7.2.1/7.2.2: the end of a sync flush (00 00 FF FF). The sender
 * strips it from a compressed message, the receiver appends it again. */
extern const uint8_t herald__pmd_tail[4];

typedef struct herald__zstream herald__zstream;

/* Creates a raw-deflate compressor (RFC 1951, no zlib header) with a window
 * of 2^bits bytes (9..15; 8 becomes 9) or a decompressor (bits is the
 * agreed window, 8..15; it always gets a 32 KiB window, which is safe). level
 * -1..9, mem_level 1..9: zlib's (compressor only). fast_min: messages of at
 * least this many bytes are compressed with igzip (zstream.c) when
 * herald_deflate_fast_available(); 0 never. no_context: the caller resets the
 * compressor after every message (no context takeover), so it keeps no
 * copy of igzip's window. budget (may be NULL): igzip's state is drawn on
 * it when a message first needs it; refused, the stream compresses
 * everything with zlib. Returns 0, HERALD_ERR_NOMEM or
 * HERALD_ERR_INTERNAL. */
int herald__zdeflate_new(herald__zstream **pz, const herald_mem *mem, int bits,
                         int level, int mem_level, size_t fast_min,
                         int no_context, herald_budget *budget);
int herald__zinflate_new(herald__zstream **pz, const herald_mem *mem, int bits);

/* The most memory zlib's compressor (deflate 1) with a 2^bits window and
 * mem_level, or the decompressor (deflate 0), holds: what a connection
 * draws on herald_deflate_config.budget for it. */
uint64_t herald__zstream_charge(int deflate, int bits, int mem_level);

/* Frees z (NULL is fine). */
void herald__zstream_del(herald__zstream *z);

/* Forgets the context (the window) between messages: no context takeover.
 * Cheap for an engine that has not compressed since its last reset. */
void herald__zstream_reset(herald__zstream *z);

/* Upper bound of the compressed size of len bytes with one sync flush. */
size_t herald__zdeflate_bound(herald__zstream *z, size_t len);

/* Compresses in[0..inlen) as one message: raw deflate ending with a sync
 * flush, into out[0..outcap). Returns the length written (trailing
 * 00 00 FF FF included), or HERALD_ERR_INTERNAL if out was too small or zlib
 * failed. */
int64_t herald__zdeflate(herald__zstream *z, const uint8_t *in, size_t inlen,
                         uint8_t *out, size_t outcap);

/* One inflate step: consumes from *in (*inlen bytes) and writes at most outcap
 * bytes to out; *produced is set. Returns 0 (progress or nothing to do; output
 * may be pending when *produced == outcap), 1 at the end of a final block
 * (BFINAL: the rest of the message's input must not be fed), or
 * HERALD_ERR_INFLATE (corrupt data) / HERALD_ERR_NOMEM. */
int herald__zinflate(herald__zstream *z, const uint8_t **in, size_t *inlen,
                     uint8_t *out, size_t outcap, size_t *produced);

#endif
