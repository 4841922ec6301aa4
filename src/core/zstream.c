/*
 * zstream.c - the compression streams of permessage-deflate (RFC 7692):
 * raw deflate (RFC 1951, no zlib header) through zlib for both directions,
 * and, when herald is built with Intel's ISA-L (HERALD_HAVE_ISAL), its igzip
 * compressor for large messages. Everything is allocated through herald_mem.
 *
 * Two compressors, one stream. With context takeover the peer's inflater
 * keeps one window across messages, whichever engine compressed each of
 * them. A compressor may always choose not to refer to old bytes, but it
 * must never refer to bytes the peer has not got where it thinks they are.
 * So only the engine that compressed the last message (ctx) is in step with
 * the peer. Before the other one compresses, it is reset and given the
 * window as a dictionary: zlib's own window (deflateGetDictionary()) when
 * igzip takes over, and for zlib taking over, the copy of igzip's history
 * kept in hist (the tail of what igzip compressed, on top of the dictionary
 * it started with). Both engines then refer only to bytes that are the
 * peer's most recent ones. Without context takeover sender.c resets the
 * stream after every message (no_context) and neither engine keeps
 * anything.
 *
 * Why igzip: a compressed echo costs 0.5-0.7 times zlib's instructions at
 * 4 KiB and 0.2-0.4 times at 16-64 KiB, for about 10 % more bytes on JSON
 * (docs/performance.md "Two engines"); below about 2 KiB it is slower than
 * zlib, because it builds a Huffman code for every block and every sync
 * flush ends one. fast_min picks the size.
 */
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "core/conn_int.h" /* herald__budget_take/give */
#include "core/deflate.h"

#ifdef HERALD_HAVE_ISAL
#include <isa-l/igzip_lib.h>

/* igzip's level 2 with a 16 K-token buffer: a block (and its Huffman code)
 * per 16 K literals or matches. Level 2 (a 32 K-entry hash) sends 2.4 %
 * fewer bytes than level 1 on JSON for no more instructions, for 48 KiB
 * more memory; level 3 costs twice the CPU (docs/performance.md). */
#define ISAL_LEVEL 2
#define ISAL_LEVEL_BUF ISAL_DEF_LVL2_SMALL
#endif

enum { CTX_NONE, CTX_ZLIB, CTX_ISAL };

struct herald__zstream {
  z_stream z;
  const herald_mem *mem;
  uint8_t deflate;
  uint8_t ctx;        /* CTX_*: the engine in step with the peer's window */
  uint8_t zdirty;     /* zlib has compressed since its last reset */
  uint8_t bits;       /* compressor window */
  uint8_t no_context; /* reset after every message: no window to hand over */
  size_t fast_min;
  herald_budget *budget; /* igzip's state is drawn on it (isal_ready) */
#ifdef HERALD_HAVE_ISAL
  struct isal_zstream *is; /* with its level buffer; on first use */
  size_t charge;           /* drawn on budget for is, its buffer, hist */
  uint8_t *hist;           /* a ring of 2^bits bytes: igzip's window */
  size_t hist_len;         /* bytes in it, at most 2^bits */
  size_t hist_end;         /* where the next byte goes */
  uint8_t idirty;
#endif
};

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
  const herald_mem *mem = opaque;
  return mem->malloc((size_t)items * size, mem->user_data);
}

static void z_free(voidpf opaque, voidpf p) {
  const herald_mem *mem = opaque;
  mem->free(p, mem->user_data);
}

static int zstream_new(herald__zstream **pz, const herald_mem *mem, int def,
                       int bits, int level, int mem_level) {
  herald__zstream *z = mem->malloc(sizeof(*z), mem->user_data);
  if (z == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(z, 0, sizeof(*z));
  z->mem = mem;
  z->deflate = (uint8_t)def;
  z->bits = (uint8_t)bits;
  z->z.zalloc = z_alloc;
  z->z.zfree = z_free;
  z->z.opaque = (voidpf)mem;
  /* Negative windowBits: raw deflate, no zlib header or checksum. */
  int rv = def ? deflateInit2(&z->z, level, Z_DEFLATED, -bits, mem_level,
                              Z_DEFAULT_STRATEGY)
               : inflateInit2(&z->z, -bits);
  if (rv != Z_OK) {
    mem->free(z, mem->user_data);
    return rv == Z_MEM_ERROR ? HERALD_ERR_NOMEM : HERALD_ERR_INTERNAL;
  }
  *pz = z;
  return 0;
}

int herald__zdeflate_new(herald__zstream **pz, const herald_mem *mem, int bits,
                         int level, int mem_level, size_t fast_min,
                         int no_context, herald_budget *budget) {
  int rv = zstream_new(pz, mem, 1, bits < 9 ? 9 : bits, level, mem_level);
  if (rv == 0) {
    (*pz)->fast_min = herald_deflate_fast_available() ? fast_min : 0;
    (*pz)->no_context = no_context != 0;
    (*pz)->budget = budget;
  }
  return rv;
}

/* zlib's own figures (zconf.h): a compressor holds 2^(bits+2) +
 * 2^(mem_level+9) bytes of window, hash and pending buffers, a
 * decompressor a 2^bits window (ours are always 15, see
 * herald__zinflate_new); each also holds its state struct (5.9 and 7.1 KB
 * on x86-64, rounded up here) and our herald__zstream. deflate_test's
 * test_memory holds the total to what the streams really hold. */
uint64_t herald__zstream_charge(int deflate, int bits, int mem_level) {
  uint64_t own = sizeof(herald__zstream);
  if (!deflate) {
    return ((uint64_t)1 << 15) + 7 * 1024 + own;
  }
  bits = bits < 9 ? 9 : bits;
  return ((uint64_t)1 << (bits + 2)) + ((uint64_t)1 << (mem_level + 9)) +
         6 * 1024 + own;
}

int herald__zinflate_new(herald__zstream **pz, const herald_mem *mem,
                         int bits) {
  /* Always the largest window. zlib checks a distance against its window
   * only for bytes written before the current call, so with a smaller
   * window a peer that overshoots the agreed one would be accepted or
   * refused depending on how its bytes were split into reads. At 15 every
   * distance deflate can encode that points into real history is valid. */
  (void)bits;
  return zstream_new(pz, mem, 0, 15, 0, 0);
}

HERALD_API int herald_deflate_fast_available(void) {
#ifdef HERALD_HAVE_ISAL
  return 1;
#else
  return 0;
#endif
}

#ifdef HERALD_HAVE_ISAL
/* Gives back what igzip's state drew on the budget. */
static void isal_uncharge(herald__zstream *z) {
  if (z->charge) {
    herald__budget_give(z->budget, z->charge);
    z->charge = 0;
  }
}

static void isal_free(herald__zstream *z) {
  if (z->is != NULL) {
    z->mem->free(z->is->level_buf, z->mem->user_data);
    z->mem->free(z->is, z->mem->user_data);
    z->is = NULL;
  }
  z->mem->free(z->hist, z->mem->user_data);
  z->hist = NULL;
  isal_uncharge(z);
}
#endif

void herald__zstream_del(herald__zstream *z) {
  if (z == NULL) {
    return;
  }
  if (z->deflate) {
    deflateEnd(&z->z);
#ifdef HERALD_HAVE_ISAL
    isal_free(z);
#endif
  } else {
    inflateEnd(&z->z);
  }
  z->mem->free(z, z->mem->user_data);
}

void herald__zstream_reset(herald__zstream *z) {
  if (!z->deflate) {
    inflateReset(&z->z);
    return;
  }
  if (z->zdirty) {
    deflateReset(&z->z);
    z->zdirty = 0;
  }
#ifdef HERALD_HAVE_ISAL
  if (z->idirty) {
    isal_deflate_reset(z->is);
    z->idirty = 0;
  }
  z->hist_len = 0;
  z->hist_end = 0;
#endif
  z->ctx = CTX_NONE;
}

static size_t zlib_bound(herald__zstream *z, size_t len) {
  /* deflateBound() covers one Z_FINISH; a sync flush adds an empty stored
   * block (5 bytes) and up to 7 bits of padding. zlib's bound takes a uLong,
   * so very long inputs use its generic formula ourselves. */
  size_t extra = 16 + (len >> 10);
  if (len <= 0x7fffffffu) {
    return (size_t)deflateBound(&z->z, (uLong)len) + extra;
  }
  return len + (len >> 12) + (len >> 14) + (len >> 25) + 13 + extra;
}

static int use_fast(const herald__zstream *z, size_t len) {
  /* igzip counts in uint32_t; larger messages stay with zlib. */
  return z->fast_min != 0 && len >= z->fast_min && len <= 0x7fffffffu;
}

size_t herald__zdeflate_bound(herald__zstream *z, size_t len) {
  size_t b = zlib_bound(z, len);
  if (use_fast(z, len)) {
    /* igzip writes a dynamic block per 16 K tokens, its code built for
     * the block's own symbols (at most 9 bits a literal on average, plus a
     * header of at most ~300 bytes), or a stored block where that is
     * smaller. If it ever needs more it is abandoned for zlib, whose bound
     * this also covers. */
    size_t f = len + (len >> 3) + 4096;
    b = f > b ? f : b;
  }
  return b;
}

const uint8_t herald__pmd_tail[4] = {0x00, 0x00, 0xff, 0xff};

static int64_t zlib_deflate(herald__zstream *z, const uint8_t *in, size_t inlen,
                            uint8_t *out, size_t outcap) {
  /* zlib counts in uInt: feed at most 1 GiB per call. */
  const uInt step = 1u << 30;
  z->z.next_out = out;
  size_t outleft = outcap;
  for (;;) {
    uInt nin = inlen > step ? step : (uInt)inlen;
    uInt nout = outleft > step ? step : (uInt)outleft;
    z->z.next_in = (Bytef *)(uintptr_t)in;
    z->z.avail_in = nin;
    z->z.avail_out = nout;
    int last = nin == inlen;
    int rv = deflate(&z->z, last ? Z_SYNC_FLUSH : Z_NO_FLUSH);
    if (rv != Z_OK && rv != Z_BUF_ERROR) {
      return HERALD_ERR_INTERNAL;
    }
    size_t used = nin - z->z.avail_in, made = nout - z->z.avail_out;
    in += used;
    inlen -= used;
    outleft -= made;
    if (last && inlen == 0 && z->z.avail_out > 0) {
      break; /* the flush completed: it had room to spare */
    }
    if (outleft == 0) {
      return HERALD_ERR_INTERNAL;
    }
  }
  return (int64_t)(outcap - outleft);
}

#ifdef HERALD_HAVE_ISAL
/* Allocates igzip's state on first use. Returns 0, 1 when the budget
 * refuses it (the stream then stays on zlib: fast_min is cleared), or
 * HERALD_ERR_NOMEM. */
static int isal_ready(herald__zstream *z) {
  if (z->is != NULL) {
    return 0;
  }
  const herald_mem *m = z->mem;
  size_t w = (size_t)1 << z->bits;
  size_t charge = sizeof(*z->is) + ISAL_LEVEL_BUF + (z->no_context ? 0 : w);
  if (z->budget != NULL && !herald__budget_take(z->budget, charge)) {
    z->fast_min = 0;
    return 1;
  }
  z->charge = z->budget != NULL ? charge : 0;
  z->is = m->malloc(sizeof(*z->is), m->user_data);
  uint8_t *lb = m->malloc(ISAL_LEVEL_BUF, m->user_data);
  z->hist = z->no_context ? NULL : m->malloc(w, m->user_data);
  if (z->is == NULL || lb == NULL || (z->hist == NULL && !z->no_context)) {
    m->free(lb, m->user_data);
    m->free(z->is, m->user_data);
    m->free(z->hist, m->user_data);
    z->is = NULL;
    z->hist = NULL;
    isal_uncharge(z);
    return HERALD_ERR_NOMEM;
  }
  isal_deflate_init(z->is);
  z->is->level = ISAL_LEVEL;
  z->is->level_buf = lb;
  z->is->level_buf_size = ISAL_LEVEL_BUF;
  z->is->hist_bits = z->bits;
  z->is->flush = SYNC_FLUSH;
  z->is->gzip_flag = IGZIP_DEFLATE;
  z->idirty = 0;
  z->hist_len = 0;
  z->hist_end = 0;
  return 0;
}

/* Appends what igzip just compressed to the copy of its window: a ring,
 * so each message costs a copy of itself (at most 2^bits), not of the
 * window. */
static void hist_add(herald__zstream *z, const uint8_t *in, size_t len) {
  size_t w = (size_t)1 << z->bits;
  if (len >= w) {
    memcpy(z->hist, in + len - w, w);
    z->hist_len = w;
    z->hist_end = 0;
    return;
  }
  size_t first = w - z->hist_end < len ? w - z->hist_end : len;
  memcpy(z->hist + z->hist_end, in, first);
  memcpy(z->hist, in + first, len - first);
  z->hist_end = (z->hist_end + len) & (w - 1);
  z->hist_len = z->hist_len + len < w ? z->hist_len + len : w;
}

/* Gives zlib, just reset, the ring's window: oldest part first (raw
 * deflate's deflateSetDictionary() appends to the window). */
static int hist_to_zlib(herald__zstream *z) {
  size_t w = (size_t)1 << z->bits;
  size_t start = (z->hist_end + w - z->hist_len) & (w - 1);
  size_t first = w - start < z->hist_len ? w - start : z->hist_len;
  if (deflateSetDictionary(&z->z, z->hist + start, (uInt)first) != Z_OK ||
      deflateSetDictionary(&z->z, z->hist, (uInt)(z->hist_len - first)) !=
          Z_OK) {
    return HERALD_ERR_INTERNAL;
  }
  return 0;
}

/* Compresses one message with igzip, taking the window over from zlib if
 * zlib compressed the last one. Returns the length, or -1 when igzip could
 * not (its output did not fit): nothing of the message is then in the
 * peer's window, ctx is unchanged and hist still holds igzip's old window,
 * so zlib can take the message as if igzip had never been asked. */
static int64_t isal_deflate_msg(herald__zstream *z, const uint8_t *in,
                                size_t inlen, uint8_t *out, size_t outcap) {
  struct isal_zstream *s = z->is;
  if (z->ctx != CTX_ISAL) {
    if (z->idirty) {
      isal_deflate_reset(s);
    }
    z->hist_len = 0;
    z->hist_end = 0;
    if (z->ctx == CTX_ZLIB && !z->no_context) {
      uInt n = (uInt)1 << z->bits;
      if (deflateGetDictionary(&z->z, z->hist, &n) != Z_OK) {
        return HERALD_ERR_INTERNAL;
      }
      z->hist_len = n;
      z->hist_end = n & (((size_t)1 << z->bits) - 1);
      if (n > 0 && isal_deflate_set_dict(s, z->hist, n) != COMP_OK) {
        return HERALD_ERR_INTERNAL;
      }
    }
  }
  z->idirty = 1;
  s->next_in = (uint8_t *)(uintptr_t)in;
  s->avail_in = (uint32_t)inlen;
  s->next_out = out;
  s->avail_out = outcap > UINT32_MAX ? UINT32_MAX : (uint32_t)outcap;
  size_t cap = s->avail_out;
  /* Done once the input is used and the flush's empty block written. */
  do {
    if (isal_deflate(s) != COMP_OK || s->avail_out == 0) {
      isal_deflate_reset(s);
      z->idirty = 0;
      if (z->ctx == CTX_ISAL) {
        z->ctx = CTX_NONE; /* hist is the window: zlib takes it from there */
      }
      return -1;
    }
  } while (s->avail_in > 0 || s->internal_state.state != ZSTATE_NEW_HDR);
  if (!z->no_context) {
    hist_add(z, in, inlen);
  }
  z->ctx = CTX_ISAL;
  return (int64_t)(cap - s->avail_out);
}
#endif

int64_t herald__zdeflate(herald__zstream *z, const uint8_t *in, size_t inlen,
                         uint8_t *out, size_t outcap) {
#ifdef HERALD_HAVE_ISAL
  int from_isal = z->ctx == CTX_ISAL;
  if (use_fast(z, inlen)) {
    int rv = isal_ready(z);
    if (rv < 0) {
      return rv;
    }
    int64_t n = rv == 0 ? isal_deflate_msg(z, in, inlen, out, outcap) : -1;
    if (n != -1) {
      return n;
    }
  }
  if (z->no_context) {
    /* Reset after every message; if not (an error path), start afresh. */
    if (z->ctx != CTX_NONE && z->zdirty) {
      deflateReset(&z->z);
    }
  } else if (from_isal || (z->ctx == CTX_NONE && z->hist_len > 0)) {
    /* zlib takes over igzip's window (or the one igzip gave up). */
    if (z->zdirty) {
      deflateReset(&z->z);
    }
    if (hist_to_zlib(z) != 0) {
      z->zdirty = 1;
      return HERALD_ERR_INTERNAL;
    }
  } else if (z->ctx == CTX_NONE && z->zdirty) {
    deflateReset(&z->z);
  }
#endif
  z->zdirty = 1;
  z->ctx = CTX_ZLIB;
  return zlib_deflate(z, in, inlen, out, outcap);
}

int herald__zinflate(herald__zstream *z, const uint8_t **in, size_t *inlen,
                     uint8_t *out, size_t outcap, size_t *produced) {
  const uInt step = 1u << 30;
  uInt nin = *inlen > step ? step : (uInt)*inlen;
  uInt nout = outcap > step ? step : (uInt)outcap;
  z->z.next_in = (Bytef *)(uintptr_t)*in;
  z->z.avail_in = nin;
  z->z.next_out = out;
  z->z.avail_out = nout;
  int rv = inflate(&z->z, Z_SYNC_FLUSH);
  size_t used = nin - z->z.avail_in;
  *in += used;
  *inlen -= used;
  *produced = nout - z->z.avail_out;
  switch (rv) {
  case Z_OK:
  case Z_BUF_ERROR: /* no progress possible: needs input or output room */
    return 0;
  case Z_STREAM_END:
    return 1;
  case Z_MEM_ERROR:
    return HERALD_ERR_NOMEM;
  default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
    return HERALD_ERR_INFLATE;
  }
}
