/*
 * conn.c - the WebSocket connection state machine (RFC 6455).
 *
 * Every state transition of a connection lives in this file. There are two
 * machines, each one enum and one switch:
 *
 *   herald_state (public, RFC 6455 section 7):
 *     CONNECTING -> OPEN -> CLOSING -> CLOSED, or CONNECTING/OPEN -> CLOSED
 *     when the peer closes first (we answer at once) or the connection fails.
 *
 *   enum reader (private): what the input side waits for next.
 *     RD_REQUEST      server: an HTTP request head
 *     RD_DECIDE       server: the application must accept/reject/reset
 *     RD_IDLE         client: herald_conn_client_start() not called yet
 *     RD_RESPONSE     client: the HTTP response head
 *     RD_HEAD         a frame header (and, for a control frame, its payload)
 *     RD_PAYLOAD      the rest of a data frame's payload
 *     RD_INFLATE      streaming: a compressed message's input is all in, its
 *                     inflated tail is still being handed out in chunks
 *     RD_DISCARD      after the peer's close frame: input is ignored
 *     RD_FAILED       sticky error: every call returns conn->err
 *
 * Input is never copied to be parsed. An incomplete HTTP head, frame header
 * or control frame is left unconsumed in the caller's buffer (the caller
 * presents it again with more bytes); data payloads are consumed as they
 * arrive, unmasked in place, validated, and either delivered directly
 * (zero-copy: a whole unfragmented message in one buffer, or any chunk in
 * streaming mode) or appended to the message buffer.
 *
 * Output is a queue of entries, each either a span of the connection's own
 * output buffer (headers, small or masked payloads, handshake text; many
 * small frames share one span) or a caller's payload referenced in place.
 * herald_conn_output() hands the queue out as iovecs.
 *
 * permessage-deflate (RFC 7692, negotiation and zlib in deflate.c): a
 * compressed message's payload is unmasked in place and inflated, in bounded
 * steps, into the message buffer (whole mode, never past max_message_size)
 * or into one 16 KiB chunk at a time (streaming mode; the rest of the input
 * is left unconsumed, masked again, for the next call). The inflated bytes
 * are what UTF-8 validation and max_message_size see. Whole messages at or
 * above the threshold are compressed on send, straight into the output
 * buffer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "core/base64.h"
#include "core/deflate.h"
#include "core/http1.h"
#include "core/mask.h"
#include "core/utf8.h"
#include "herald/core.h"

enum reader {
  RD_REQUEST,
  RD_DECIDE,
  RD_IDLE,
  RD_RESPONSE,
  RD_HEAD,
  RD_PAYLOAD,
  RD_INFLATE,
  RD_DISCARD,
  RD_FAILED
};

/* conn->flags */
enum {
  F_CLOSE_SENT = 1 << 0,     /* our close frame is queued */
  F_CLOSE_RECEIVED = 1 << 1, /* the peer's close frame arrived */
  F_MSG_DELIVERED = 1 << 2,  /* mbuf was handed out; reset it on next call */
  F_PONG_PENDING = 1 << 3,   /* pongbuf holds a pong to queue */
  F_HEAD_MID_FRAME = 1 << 4, /* the head output entry continues a frame */
  F_FRAG_SENDING = 1 << 5,   /* a fragmented message is being sent */
  F_HS_STALE = 1 << 6,       /* hs may be freed on the next call */
  F_STREAM = 1 << 7,         /* this message is delivered in chunks */
  F_STREAM_NEXT = 1 << 8,    /* messages from the next one on are streamed */
  F_FIN = 1 << 9,            /* the frame being received is final */
  F_MASKED = 1 << 10,        /* the frame being received is masked */
  F_MFIRST = 1 << 11,        /* streaming: the next chunk is the first */
  F_BORROWED = 1 << 12       /* a borrowed payload may be queued */
};

/* One output entry. ext == NULL: bytes [off, off+len) of obuf. */
typedef struct oentry {
  const uint8_t *ext;
  size_t off;
  size_t len;
  herald_release_fn release;
  void *ctx;
  uint8_t ends_frame;
  uint8_t pong;     /* a pong alone: never merged, later pongs queue behind */
  uint8_t borrowed; /* ext is the caller's until herald_conn_output_own() */
} oentry;

/* Handshake state, allocated only while the connection is CONNECTING (or
 * until the next call after the event that used it). */
typedef struct handshake {
  size_t last_len; /* bytes scanned by the previous incomplete parse */
  herald_request req;
  herald_response resp;
  char key[25];   /* client: the Sec-WebSocket-Key we sent */
  char **offered; /* client: copies of the offered subprotocols */
  size_t noffered;
  herald_header headers[]; /* cfg->max_headers entries */
} handshake;

/* The output queue, allocated with the first output and freed by
 * herald_conn_trim() once empty: an idle connection holds none. */
typedef struct outq {
  oentry *ent; /* entries [ohead, ohead + ocount) are pending */
  uint32_t ohead, ocount, ocap;
  size_t odone; /* bytes of ent[ohead] already written */
  uint8_t *obuf;
  size_t olen, ocap_bytes;
} outq;

/* permessage-deflate state, allocated when it is agreed. rx: the peer's
 * messages, tx: ours. *_reset: no context takeover in that direction.
 * tx_bits 0: we never compress (an agreed 8-bit window zlib cannot
 * honour). */
typedef struct zstate {
  uint8_t rx_reset, tx_reset, rx_bits, tx_bits;
  herald__pmd pmd; /* the parameters of the agreed response */
  uint8_t zend;    /* the message's deflate stream ended (BFINAL) */
  uint8_t ztail;   /* bytes of the 00 00 FF FF tail fed to the inflater */
  uint64_t mwire;  /* compressed bytes of the message so far */
  herald__zstream *inf, *def;
  uint8_t *zbuf; /* streaming: one chunk of inflated output */
} zstate;

/* Laid out to fit 120 bytes: what an idle, open connection holds is this
 * struct alone (docs/design.md, "Memory per connection"). */
struct herald_conn {
  const herald_config *cfg; /* its mem (or libc) allocates everything */
  uint8_t role;
  uint8_t state;  /* herald_state */
  uint8_t reader; /* enum reader */
  uint8_t mask_off;
  uint16_t flags;
  int16_t err;        /* sticky error once RD_FAILED */
  const char *reason; /* static text for err */

  /* Frame being received (and F_FIN, F_MASKED). */
  uint8_t fop; /* opcode of the current data frame */
  uint8_t mask[4];
  /* Message being received (and F_MFIRST). mop == 0: none in progress. */
  uint8_t mop;
  uint8_t mcomp; /* the message being received is compressed */
  uint8_t sop;   /* opcode of the message being sent in fragments */
  uint32_t nfrags;
  uint32_t utf8;
  uint64_t fremain; /* payload bytes still to come in this frame */
  uint64_t msize;
  uint8_t *mbuf; /* whole mode: reassembly buffer */
  size_t mlen, mcap;

  zstate *z;        /* NULL: no permessage-deflate */
  outq *o;          /* NULL: no output since the last trim */
  size_t ototal;    /* pending output bytes in all entries */
  uint8_t *pongbuf; /* [0] = length, then up to 125 payload bytes */
  handshake *hs;
};

/* RFC 7692 7.2.1/7.2.2: the end of a sync flush; the sender strips it from
 * a compressed message, the receiver appends it again. */
static const uint8_t pmd_tail[4] = {0x00, 0x00, 0xff, 0xff};

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */
/* ------------------------------------------------------------------------ */

static void *libc_malloc(size_t n, void *ud) {
  (void)ud;
  return malloc(n);
}
static void *libc_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return realloc(p, n);
}
static void libc_free(void *p, void *ud) {
  (void)ud;
  free(p);
}
static const herald_mem libc_mem = {libc_malloc, libc_realloc, libc_free, NULL};

static const herald_mem *conn_mem(const herald_conn *c) {
  return c->cfg->mem ? c->cfg->mem : &libc_mem;
}
static void *mem_alloc(herald_conn *c, size_t n) {
  const herald_mem *m = conn_mem(c);
  return m->malloc(n, m->user_data);
}
static void *mem_realloc(herald_conn *c, void *p, size_t n) {
  const herald_mem *m = conn_mem(c);
  return m->realloc(p, n, m->user_data);
}
static void mem_free(herald_conn *c, void *p) {
  if (p != NULL) {
    const herald_mem *m = conn_mem(c);
    m->free(p, m->user_data);
  }
}

/* ------------------------------------------------------------------------ */
/* Randomness (client role: keys and masks)                                  */
/* ------------------------------------------------------------------------ */

/* The default source reads getrandom(2) 256 bytes at a time into a
 * thread-local pool, so masking a frame costs no syscall in the common case.
 * The kernel's CSPRNG output is used as is (RFC 6455 10.3 asks for a strong
 * source of entropy for masking keys). */
static int default_random(void *buf, size_t len, void *ud) {
  static _Thread_local uint8_t pool[256];
  static _Thread_local size_t avail;
  uint8_t *out = buf;
  (void)ud;
  while (len > 0) {
    if (avail == 0) {
      size_t got = 0;
      while (got < sizeof(pool)) {
        ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
        if (r <= 0) {
          return -1;
        }
        got += (size_t)r;
      }
      avail = sizeof(pool);
    }
    size_t n = len < avail ? len : avail;
    memcpy(out, pool + sizeof(pool) - avail, n);
    memset(pool + sizeof(pool) - avail, 0, n);
    avail -= n;
    out += n;
    len -= n;
  }
  return 0;
}

static int get_random(herald_conn *c, void *buf, size_t len) {
  if (c->cfg->random != NULL) {
    return c->cfg->random(buf, len, c->cfg->random_user_data);
  }
  return default_random(buf, len, NULL);
}

/* ------------------------------------------------------------------------ */
/* Config and small public helpers                                           */
/* ------------------------------------------------------------------------ */

HERALD_API void herald_config_init(herald_config *cfg, herald_role role) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->role = role;
  cfg->max_head_bytes = 8192;
  cfg->max_headers = 64;
  cfg->max_frame_size = 16u << 20;
  cfg->max_message_size = 16u << 20;
  cfg->max_fragments = 65536;
  cfg->copy_threshold = 1024;
  cfg->deflate.server_max_window_bits = 15;
  cfg->deflate.client_max_window_bits = 15;
  cfg->deflate.threshold = 64;
  cfg->deflate.level = 3;
  cfg->deflate.mem_level = 8;
}

HERALD_API int herald_close_code_valid(uint32_t code) {
  /* RFC 6455 7.4.1 and 7.4.2; 1012-1014 are registered with IANA. 1004 is
   * reserved, 1005/1006/1015 must never be sent. */
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* The size herald_frame_header() writes for a payload of len bytes. */
static inline size_t frame_header_len(uint64_t len, int masked) {
  return 2 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + (masked ? 4 : 0);
}

/* herald_frame_header(), inlined into the send paths (where a constant fin,
 * rsv and mask reduce it to a few stores). */
static inline size_t frame_header(uint8_t *out, herald_opcode op, int fin,
                                  unsigned rsv, uint64_t len,
                                  const uint8_t *mask) {
  size_t n = 2;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (op & 0x0f));
  uint8_t mbit = mask ? 0x80 : 0;
  /* RFC 6455 5.2: the minimal number of bytes encodes the length. */
  if (len < 126) {
    out[1] = (uint8_t)(mbit | len);
  } else if (len <= 0xffff) {
    out[1] = mbit | 126;
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
    n = 4;
  } else {
    out[1] = mbit | 127;
    for (int i = 0; i < 8; i++) {
      out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    }
    n = 10;
  }
  if (mask) {
    memcpy(out + n, mask, 4);
    n += 4;
  }
  return n;
}

HERALD_API size_t herald_frame_header(uint8_t *out, herald_opcode op, int fin,
                                      unsigned rsv, uint64_t len,
                                      const uint8_t *mask) {
  return frame_header(out, op, fin, rsv, len, mask);
}

/* ------------------------------------------------------------------------ */
/* Output queue                                                              */
/* ------------------------------------------------------------------------ */

/* Makes room for one more entry at the end of the pending range: slides
 * the pending entries down when at least half of the array is done ones
 * (as out_reserve_bytes, so each entry moves O(1) times), else grows it. */
/* The queue itself, allocated on first use. */
static int out_ensure(herald_conn *c) {
  if (c->o == NULL) {
    c->o = mem_alloc(c, sizeof(outq));
    if (c->o == NULL) {
      return HERALD_ERR_NOMEM;
    }
    memset(c->o, 0, sizeof(outq));
  }
  return 0;
}

static int out_reserve_entry(herald_conn *c) {
  if (out_ensure(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  if (c->o->ohead + c->o->ocount < c->o->ocap) {
    return 0;
  }
  if (c->o->ohead > 0 && c->o->ohead >= c->o->ocap / 2) {
    memmove(c->o->ent, c->o->ent + c->o->ohead, c->o->ocount * sizeof(oentry));
    c->o->ohead = 0;
    return 0;
  }
  uint32_t ncap = c->o->ocap ? c->o->ocap * 2 : 8;
  oentry *n = mem_realloc(c, c->o->ent, ncap * sizeof(oentry));
  if (n == NULL) {
    return HERALD_ERR_NOMEM;
  }
  c->o->ent = n;
  c->o->ocap = ncap;
  return 0;
}

/* Makes room for n more bytes at the end of obuf. The bytes before the
 * first live inline byte were written already. When those dead bytes are
 * at least half of the buffer, the live ones slide down over them; when not,
 * the live bytes move to a new buffer at least twice their size. Either way
 * a byte is moved O(1) times on average, however slowly the socket drains
 * (sliding a large, mostly live buffer down a little at a time would make
 * a slow reader quadratic). */
static int out_reserve_bytes(herald_conn *c, size_t n) {
  if (out_ensure(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  if (c->o->ocap_bytes - c->o->olen >= n) {
    return 0;
  }
  /* The lowest live inline byte. Not always the first entry's: a pong is
   * written at the end of obuf but queued ahead of frames written before it
   * (out_insert_pong), so the offsets are not in queue order. */
  size_t lo = c->o->olen;
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount; i++) {
    const oentry *e = &c->o->ent[i];
    size_t start = e->off + (i == c->o->ohead ? c->o->odone : 0);
    if (e->ext == NULL && start < lo) {
      lo = start;
    }
  }
  size_t live = c->o->olen - lo;
  if (live + n > SIZE_MAX / 4) {
    return HERALD_ERR_NOMEM;
  }
  uint8_t *dst = c->o->obuf;
  size_t ncap = c->o->ocap_bytes;
  if (live + n > ncap / 2) {
    ncap = ncap ? ncap : 256;
    while (ncap < 2 * (live + n)) {
      ncap *= 2;
    }
    dst = mem_alloc(c, ncap);
    if (dst == NULL) {
      return HERALD_ERR_NOMEM;
    }
  }
  if (live > 0) {
    memmove(dst, c->o->obuf + lo, live);
  }
  if (dst != c->o->obuf) {
    mem_free(c, c->o->obuf);
    c->o->obuf = dst;
    c->o->ocap_bytes = ncap;
  }
  c->o->olen = live;
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount; i++) {
    if (c->o->ent[i].ext == NULL) {
      if (i == c->o->ohead && c->o->odone) {
        /* The written part of the head entry is gone: drop it. */
        c->o->ent[i].off += c->o->odone;
        c->o->ent[i].len -= c->o->odone;
        c->o->odone = 0;
      }
      c->o->ent[i].off -= lo;
    }
  }
  return 0;
}

/* Returns a pointer to n fresh bytes at the end of the output, which the
 * caller fills at once. ends_frame: the bytes end a frame (or a handshake).
 * Complete frames are merged into the previous entry when it also ends on a
 * frame boundary and is contiguous, so many small frames make one iovec. */
static uint8_t *out_append_slow(herald_conn *c, size_t n, int ends_frame) {
  if (out_reserve_bytes(c, n) != 0 || out_reserve_entry(c) != 0) {
    return NULL;
  }
  uint8_t *p = c->o->obuf + c->o->olen;
  oentry *last =
      c->o->ocount ? &c->o->ent[c->o->ohead + c->o->ocount - 1] : NULL;
  if (last && last->ext == NULL && last->ends_frame && !last->pong &&
      last->off + last->len == c->o->olen) {
    last->len += n;
    last->ends_frame = ends_frame;
  } else {
    c->o->ent[c->o->ohead + c->o->ocount] =
        (oentry){NULL, c->o->olen, n, NULL, NULL, (uint8_t)ends_frame, 0, 0};
    c->o->ocount++;
  }
  c->o->olen += n;
  c->ototal += n;
  return p;
}

/* The same; its common case (the bytes fit, and extend the last entry, as
 * every frame after the first of a burst does) in a few instructions. */
static inline uint8_t *out_append(herald_conn *c, size_t n, int ends_frame) {
  outq *o = c->o;
  if (o != NULL && o->ocount > 0 && o->ocap_bytes - o->olen >= n) {
    oentry *last = &o->ent[o->ohead + o->ocount - 1];
    if (last->ext == NULL && last->ends_frame && !last->pong &&
        last->off + last->len == o->olen) {
      uint8_t *p = o->obuf + o->olen;
      last->len += n;
      last->ends_frame = (uint8_t)ends_frame;
      o->olen += n;
      c->ototal += n;
      return p;
    }
  }
  return out_append_slow(c, n, ends_frame);
}

static int out_append_ext(herald_conn *c, const uint8_t *p, size_t n,
                          herald_release_fn release, void *ctx) {
  int rv = out_reserve_entry(c);
  if (rv != 0) {
    return rv;
  }
  c->o->ent[c->o->ohead + c->o->ocount] =
      (oentry){p, 0, n, release, ctx, 1, 0, 0};
  c->o->ocount++;
  c->ototal += n;
  return 0;
}

/* Queues one complete frame whose payload is copied (and masked when we are
 * the client). */
static int out_frame_rsv(herald_conn *c, herald_opcode op, int fin,
                         unsigned rsv, const void *data, size_t len) {
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (get_random(c, key, 4) != 0) {
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  /* The header is written in place: its size follows from len alone. */
  size_t hlen = frame_header_len(len, mask != NULL);
  uint8_t *p = out_append(c, hlen + len, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  frame_header(p, op, fin, rsv, len, mask);
  if (len > 0) {
    if (mask) {
      herald__mask_copy(p + hlen, data, len, key, 0);
    } else {
      memcpy(p + hlen, data, len);
    }
  }
  return 0;
}

static int out_frame_copy(herald_conn *c, herald_opcode op, int fin,
                          const void *data, size_t len) {
  return out_frame_rsv(c, op, fin, 0, data, len);
}

/* Takes back the last n bytes appended with out_append(). */
static void out_truncate(herald_conn *c, size_t n) {
  oentry *last = &c->o->ent[c->o->ohead + c->o->ocount - 1];
  last->len -= n;
  last->ends_frame = 1;
  c->o->olen -= n;
  c->ototal -= n;
  if (last->len == 0) {
    c->o->ocount--;
  }
}

/*
 * Queues one whole message compressed (RFC 7692 7.2.1): raw deflate with a
 * sync flush, written straight into the output buffer behind room for the
 * largest header, the trailing 00 00 FF FF dropped, RSV1 set on the frame,
 * masked in place when we are the client. Without context takeover the
 * compressor is reset after each message, and a message that did not shrink
 * goes out uncompressed instead (the peer's window does not depend on it).
 * Returns 0 or an error with nothing queued.
 */
static int out_frame_deflate(herald_conn *c, herald_opcode op, const void *data,
                             size_t len) {
  const herald_deflate_config *dc = &c->cfg->deflate;
  if (len == 0) {
    /* RFC 7692 7.2.3.6: an empty stored block, 0x00 once the tail is gone
     * (zlib refuses a second sync flush with no input in between). */
    uint8_t z = 0;
    return out_frame_rsv(c, op, 1, 0x40, &z, 1);
  }
  if (c->z->def == NULL) {
    int rv = herald__zdeflate_new(&c->z->def, conn_mem(c), c->z->tx_bits,
                                  dc->level, dc->mem_level);
    if (rv != 0) {
      return rv;
    }
  }
  size_t bound = herald__zdeflate_bound(c->z->def, len);
  size_t room = HERALD_MAX_FRAME_HEADER + bound;
  uint8_t *p = out_append(c, room, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  uint8_t *z = p + HERALD_MAX_FRAME_HEADER;
  int64_t zlen = herald__zdeflate(c->z->def, data, len, z, bound);
  if (zlen < 4 || memcmp(z + zlen - 4, pmd_tail, 4) != 0) {
    /* The compressor may hold part of this message: start it over. */
    herald__zstream_reset(c->z->def);
    out_truncate(c, room);
    return HERALD_ERR_INTERNAL;
  }
  size_t clen = (size_t)zlen - 4;
  if (c->z->tx_reset) {
    herald__zstream_reset(c->z->def);
    if (clen >= len) {
      out_truncate(c, room);
      return out_frame_copy(c, op, 1, data, len);
    }
  }
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (get_random(c, key, 4) != 0) {
      out_truncate(c, room);
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  size_t hlen = herald_frame_header(hdr, op, 1, 0x40, clen, mask);
  memmove(p + hlen, z, clen);
  memcpy(p, hdr, hlen);
  if (mask) {
    herald__mask(p + hlen, clen, key, 0);
  }
  out_truncate(c, room - hlen - clen);
  return 0;
}

static void out_release_all(herald_conn *c) {
  if (c->o == NULL) {
    return;
  }
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount; i++) {
    if (c->o->ent[i].release) {
      c->o->ent[i].release(c->o->ent[i].ctx);
    }
  }
  c->o->ohead = c->o->ocount = 0;
  c->ototal = c->o->olen = c->o->odone = 0;
}

/* Inserts the pending pong at the first frame boundary not yet written:
 * right at the head when nothing of the head frame went out, otherwise after
 * the frame being written. A pong never waits behind queued data. */
static int out_insert_pong(herald_conn *c) {
  uint8_t len = c->pongbuf[0];
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (get_random(c, key, 4) != 0) {
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  size_t hlen = herald_frame_header(hdr, HERALD_OP_PONG, 1, 0, len, mask);
  int rv = out_reserve_bytes(c, hlen + len);
  if (rv == 0) {
    rv = out_reserve_entry(c);
  }
  if (rv != 0) {
    return rv;
  }
  uint32_t k = c->o->ohead;
  if (c->o->ocount > 0 && (c->o->odone > 0 || (c->flags & F_HEAD_MID_FRAME))) {
    while (k < c->o->ohead + c->o->ocount && !c->o->ent[k].ends_frame) {
      k++;
    }
    k++; /* after the entry that ends the frame in progress */
  }
  while (k < c->o->ohead + c->o->ocount && c->o->ent[k].pong) {
    k++; /* pongs go out in the order of their pings */
  }
  uint8_t *p = c->o->obuf + c->o->olen;
  memcpy(p, hdr, hlen);
  if (mask) {
    herald__mask_copy(p + hlen, c->pongbuf + 1, len, key, 0);
  } else {
    memcpy(p + hlen, c->pongbuf + 1, len);
  }
  uint32_t end = c->o->ohead + c->o->ocount;
  memmove(&c->o->ent[k + 1], &c->o->ent[k], (end - k) * sizeof(oentry));
  c->o->ent[k] = (oentry){NULL, c->o->olen, hlen + len, NULL, NULL, 1, 1, 0};
  c->o->ocount++;
  c->o->olen += hlen + len;
  c->ototal += hlen + len;
  c->flags &= (uint16_t)~F_PONG_PENDING;
  mem_free(c, c->pongbuf);
  c->pongbuf = NULL;
  return 0;
}

HERALD_API int herald_conn_output(herald_conn *c, struct iovec *iov,
                                  int iovcnt) {
  if (c->flags & F_PONG_PENDING) {
    /* On NOMEM the pong stays pending and the data still goes out. */
    (void)out_insert_pong(c);
  }
  if (c->o == NULL) {
    return 0;
  }
  int n = 0;
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount && n < iovcnt;
       i++) {
    const oentry *e = &c->o->ent[i];
    size_t skip = i == c->o->ohead ? c->o->odone : 0;
    const uint8_t *base = e->ext ? e->ext : c->o->obuf + e->off;
    iov[n].iov_base = (void *)(base + skip);
    iov[n].iov_len = e->len - skip;
    n++;
  }
  return n;
}

HERALD_API int herald_conn_output_own(herald_conn *c) {
  if (!(c->flags & F_BORROWED) || c->o == NULL) {
    c->flags &= (uint16_t)~F_BORROWED;
    return 0;
  }
  for (uint32_t i = c->o->ohead; i < c->o->ohead + c->o->ocount; i++) {
    if (!c->o->ent[i].borrowed) {
      continue;
    }
    /* A borrowed entry is external, so reserving (which moves only inline
     * bytes, and odone only for an inline head) leaves it and odone be. */
    size_t skip = i == c->o->ohead ? c->o->odone : 0;
    size_t n = c->o->ent[i].len - skip;
    if (out_reserve_bytes(c, n) != 0) {
      return HERALD_ERR_NOMEM;
    }
    oentry *e = &c->o->ent[i];
    memcpy(c->o->obuf + c->o->olen, e->ext + skip, n);
    e->ext = NULL;
    e->off = c->o->olen;
    e->len = n;
    e->borrowed = 0;
    if (skip) {
      c->o->odone = 0;
    }
    c->o->olen += n;
  }
  c->flags &= (uint16_t)~F_BORROWED;
  return 0;
}

HERALD_API int herald_conn_output_consumed(herald_conn *c, size_t n) {
  if (n > c->ototal) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (c->o == NULL) {
    return 0; /* nothing was pending, and n is 0 */
  }
  c->ototal -= n;
  while (n > 0) {
    oentry *e = &c->o->ent[c->o->ohead];
    size_t left = e->len - c->o->odone;
    if (n < left) {
      c->o->odone += n;
      break;
    }
    n -= left;
    c->o->odone = 0;
    if (e->ends_frame) {
      c->flags &= (uint16_t)~F_HEAD_MID_FRAME;
    } else {
      c->flags |= F_HEAD_MID_FRAME;
    }
    if (e->release) {
      e->release(e->ctx);
    }
    c->o->ohead++;
    c->o->ocount--;
  }
  if (c->o->ocount == 0) {
    c->o->ohead = 0;
    c->o->olen = 0;
    c->o->odone = 0;
    /* Keep small buffers for the next burst; return big ones. */
    if (c->o->ocap_bytes > 16384) {
      mem_free(c, c->o->obuf);
      c->o->obuf = NULL;
      c->o->ocap_bytes = 0;
    }
  }
  return 0;
}

HERALD_API size_t herald_conn_output_size(const herald_conn *c) {
  if (c->flags & F_PONG_PENDING) {
    return c->ototal + 2 + (c->role == HERALD_ROLE_CLIENT ? 4 : 0) +
           c->pongbuf[0];
  }
  return c->ototal;
}

HERALD_API int herald_conn_done(const herald_conn *c) {
  return c->state == HERALD_STATE_CLOSED && herald_conn_output_size(c) == 0;
}

HERALD_API void herald_conn_trim(herald_conn *c) {
  if (c->o && c->o->ocount == 0) {
    mem_free(c, c->o->obuf);
    mem_free(c, c->o->ent);
    mem_free(c, c->o);
    c->o = NULL;
  }
  if (c->mop == 0 || (c->flags & F_MSG_DELIVERED)) {
    mem_free(c, c->mbuf);
    c->mbuf = NULL;
    c->mlen = c->mcap = 0;
    c->flags &= (uint16_t)~F_MSG_DELIVERED;
    if (c->z) {
      mem_free(c, c->z->zbuf);
      c->z->zbuf = NULL;
    }
    /* Without context takeover a stream holds nothing between messages.
     * With it, the window is the context: it must stay. */
    if (c->z && c->z->rx_reset) {
      herald__zstream_del(c->z->inf);
      c->z->inf = NULL;
    }
  }
  if (c->z && c->z->tx_reset) {
    herald__zstream_del(c->z->def);
    c->z->def = NULL;
  }
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

static int hs_alloc(herald_conn *c) {
  if (c->hs != NULL) {
    return 0;
  }
  size_t n = sizeof(handshake) + c->cfg->max_headers * sizeof(herald_header);
  c->hs = mem_alloc(c, n);
  if (c->hs == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c->hs, 0, n);
  return 0;
}

static void hs_free(herald_conn *c) {
  if (c->hs == NULL) {
    return;
  }
  for (size_t i = 0; i < c->hs->noffered; i++) {
    mem_free(c, c->hs->offered[i]);
  }
  mem_free(c, c->hs->offered);
  mem_free(c, c->hs);
  c->hs = NULL;
  c->flags &= (uint16_t)~F_HS_STALE;
}

HERALD_API int herald_conn_new(herald_conn **pconn, const herald_config *cfg) {
  if (pconn == NULL || cfg == NULL ||
      (cfg->role != HERALD_ROLE_SERVER && cfg->role != HERALD_ROLE_CLIENT) ||
      cfg->max_headers == 0 || cfg->max_head_bytes == 0) {
    return HERALD_ERR_INVALID_ARG;
  }
  const herald_deflate_config *dc = &cfg->deflate;
  if (dc->enabled &&
      (dc->server_max_window_bits < 8 || dc->server_max_window_bits > 15 ||
       dc->client_max_window_bits < 8 || dc->client_max_window_bits > 15 ||
       dc->level < -1 || dc->level > 9 || dc->mem_level < 1 ||
       dc->mem_level > 9)) {
    return HERALD_ERR_INVALID_ARG;
  }
  const herald_mem *mem = cfg->mem ? cfg->mem : &libc_mem;
  herald_conn *c = mem->malloc(sizeof(*c), mem->user_data);
  if (c == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c, 0, sizeof(*c));
  c->cfg = cfg;
  c->role = (uint8_t)cfg->role;
  c->state = HERALD_STATE_CONNECTING;
  c->reader = cfg->role == HERALD_ROLE_SERVER ? RD_REQUEST : RD_IDLE;
  if (cfg->stream_messages) {
    c->flags |= F_STREAM | F_STREAM_NEXT;
  }
  c->reason = "";
  *pconn = c;
  return 0;
}

HERALD_API void herald_conn_del(herald_conn *c) {
  if (c == NULL) {
    return;
  }
  out_release_all(c);
  hs_free(c);
  if (c->o) {
    mem_free(c, c->o->ent);
    mem_free(c, c->o->obuf);
    mem_free(c, c->o);
  }
  mem_free(c, c->mbuf);
  mem_free(c, c->pongbuf);
  if (c->z) {
    mem_free(c, c->z->zbuf);
    herald__zstream_del(c->z->inf);
    herald__zstream_del(c->z->def);
    mem_free(c, c->z);
  }
  mem_free(c, c);
}

HERALD_API void herald_conn_set_streaming(herald_conn *c, int on) {
  if (on) {
    c->flags |= F_STREAM_NEXT;
  } else {
    c->flags &= (uint16_t)~F_STREAM_NEXT;
  }
  if (c->mop == 0) {
    /* Between messages: applies at once. */
    c->flags = (uint16_t)((c->flags & ~F_STREAM) | (on ? F_STREAM : 0));
  }
}

HERALD_API herald_state herald_conn_state(const herald_conn *c) {
  return (herald_state)c->state;
}

HERALD_API const char *herald_conn_error_reason(const herald_conn *c) {
  return c->reason;
}

/* Records the agreed permessage-deflate parameters (the response's) and
 * derives each direction's window and context rule (RFC 7692 7.1). */
static int pmd_agree(herald_conn *c, const herald__pmd *r) {
  int server = c->role == HERALD_ROLE_SERVER;
  int sbits = r->smwb ? r->smwb : 15, cbits = r->cmwb >= 8 ? r->cmwb : 15;
  c->z = mem_alloc(c, sizeof(zstate));
  if (c->z == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c->z, 0, sizeof(zstate));
  c->z->pmd = *r;
  c->z->rx_reset = server ? r->cnct : r->snct;
  c->z->tx_reset = server ? r->snct : r->cnct;
  c->z->rx_bits = (uint8_t)(server ? cbits : sbits);
  if (server) {
    c->z->tx_bits = (uint8_t)sbits; /* >= 9: herald__pmd_accept saw to it */
  } else {
    int mine = c->cfg->deflate.client_max_window_bits;
    int bits = cbits < mine ? cbits : mine;
    /* zlib cannot compress within 8 bits: send uncompressed instead. */
    c->z->tx_bits = (uint8_t)(bits < 9 ? 0 : bits);
  }
  return 0;
}

HERALD_API int herald_conn_deflate(const herald_conn *c,
                                   herald_deflate_params *out) {
  if (c->z == NULL) {
    if (out) {
      memset(out, 0, sizeof(*out));
    }
    return 0;
  }
  if (out) {
    out->server_no_context_takeover = c->z->pmd.snct;
    out->client_no_context_takeover = c->z->pmd.cnct;
    out->server_max_window_bits = c->z->pmd.smwb ? c->z->pmd.smwb : 15;
    out->client_max_window_bits = c->z->pmd.cmwb >= 8 ? c->z->pmd.cmwb : 15;
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Failing the connection                                                    */
/* ------------------------------------------------------------------------ */

/* Queues a close frame with code and reason. code 0: an empty close. */
static int queue_close(herald_conn *c, uint16_t code, const char *reason,
                       size_t reasonlen) {
  uint8_t payload[125];
  size_t len = 0;
  if (code != 0) {
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    if (reasonlen > 0) {
      memcpy(payload + 2, reason, reasonlen);
    }
    len = 2 + reasonlen;
  }
  if (c->flags & F_PONG_PENDING) {
    /* A pong the peer is owed goes out before our close, never after. */
    (void)out_insert_pong(c);
    c->flags &= (uint16_t)~F_PONG_PENDING;
  }
  int rv = out_frame_copy(c, HERALD_OP_CLOSE, 1, payload, len);
  if (rv == 0) {
    c->flags |= F_CLOSE_SENT;
  }
  return rv;
}

/* Queues a complete HTTP response with a plain-text body. */
static int queue_http(herald_conn *c, int status, const char *reason,
                      const char *extra, const herald_header *headers,
                      size_t nheaders) {
  const char *text = herald__http_status_text(status);
  size_t rlen = reason ? strlen(reason) : 0;
  char head[256];
  int hn = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nConnection: close\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    "Content-Length: %zu\r\n%s",
                    status, text, rlen + 1, extra ? extra : "");
  if (hn < 0 || (size_t)hn >= sizeof(head)) {
    return HERALD_ERR_INTERNAL;
  }
  size_t total = (size_t)hn + 2 + rlen + 1;
  for (size_t i = 0; i < nheaders; i++) {
    total += headers[i].name.len + 2 + headers[i].value.len + 2;
  }
  uint8_t *p = out_append(c, total, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memcpy(p, head, (size_t)hn);
  p += hn;
  for (size_t i = 0; i < nheaders; i++) {
    memcpy(p, headers[i].name.ptr, headers[i].name.len);
    p += headers[i].name.len;
    memcpy(p, ": ", 2);
    p += 2;
    memcpy(p, headers[i].value.ptr, headers[i].value.len);
    p += headers[i].value.len;
    memcpy(p, "\r\n", 2);
    p += 2;
  }
  memcpy(p, "\r\n", 2);
  p += 2;
  if (rlen) {
    memcpy(p, reason, rlen);
  }
  p[rlen] = '\n';
  return 0;
}

/*
 * Fails the connection (RFC 6455 7.1.7): records the sticky error, queues the
 * answer the peer is owed when one applies (a close frame with the mapped
 * code and the reason, or an HTTP refusal during the handshake), and moves to
 * CLOSED. Returns err so callers can `return fail(...)`.
 */
static int fail(herald_conn *c, int err, const char *reason) {
  c->err = err;
  c->reason = reason;
  c->reader = RD_FAILED;
  if (c->state == HERALD_STATE_OPEN && !(c->flags & F_CLOSE_SENT)) {
    size_t rlen = strlen(reason);
    if (rlen > 123) {
      rlen = 123;
    }
    (void)queue_close(c, herald_err_close_code(err), reason, rlen);
  } else if (c->state == HERALD_STATE_CONNECTING &&
             c->role == HERALD_ROLE_SERVER) {
    int status = err == HERALD_ERR_HEAD_TOO_BIG ? 431
                 : err == HERALD_ERR_NOMEM      ? 503
                                                : 400;
    (void)queue_http(c, status, reason, NULL, NULL, 0);
  }
  c->state = HERALD_STATE_CLOSED;
  return err;
}

/* ------------------------------------------------------------------------ */
/* Receiving: handshake                                                      */
/* ------------------------------------------------------------------------ */

static int read_request(herald_conn *c, uint8_t *in, size_t inlen,
                        herald_event *ev) {
  const char *why = NULL;
  int rv = hs_alloc(c);
  if (rv != 0) {
    return fail(c, rv, "out of memory");
  }
  handshake *hs = c->hs;
  /* RFC 9112 2.2: ignore empty lines before a request line (a client may
   * send a stray CRLF after a request body). A few are enough. */
  if (hs->last_len == 0 && inlen > 0 && (in[0] == '\r' || in[0] == '\n')) {
    size_t skip = 0;
    while (skip < inlen && skip < 4 && (in[skip] == '\r' || in[skip] == '\n')) {
      skip++;
    }
    if (skip == 4) {
      return fail(c, HERALD_ERR_HTTP, "empty lines before the request line");
    }
    return (int)skip;
  }
  memset(&hs->req, 0, sizeof(hs->req));
  rv = herald__http_parse_request((const char *)in, inlen, hs->last_len,
                                  c->cfg->max_head_bytes, &hs->req, hs->headers,
                                  c->cfg->max_headers, &why);
  if (rv == 0) {
    hs->last_len = inlen;
    return 0;
  }
  if (rv < 0) {
    return fail(c, rv, why);
  }
  int verdict = herald__hs_check_request(&hs->req, &why);
  if (verdict > 1) {
    c->err = HERALD_ERR_HANDSHAKE;
    c->reason = why;
    c->reader = RD_FAILED;
    c->state = HERALD_STATE_CLOSED;
    (void)queue_http(c, verdict, why,
                     verdict == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL,
                     NULL, 0);
    return HERALD_ERR_HANDSHAKE;
  }
  if (verdict == 0) {
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host; the upgrade
     * check above enforces this for WebSocket requests. */
    size_t nhost = 0;
    for (size_t i = 0; i < hs->req.nheaders; i++) {
      const herald_str *name = &hs->headers[i].name;
      nhost += name->len == 4 && strncasecmp(name->ptr, "host", 4) == 0;
    }
    if (nhost > 1 || (nhost == 0 && hs->req.version_minor >= 1)) {
      return fail(c, HERALD_ERR_HTTP,
                  "missing or repeated Host header (RFC 9112 3.2)");
    }
  }
  hs->last_len = 0;
  c->reader = RD_DECIDE;
  ev->type = HERALD_EV_REQUEST;
  ev->request = &hs->req;
  return rv;
}

static int read_response(herald_conn *c, uint8_t *in, size_t inlen,
                         herald_event *ev) {
  const char *why = NULL;
  handshake *hs = c->hs;
  memset(&hs->resp, 0, sizeof(hs->resp));
  int rv = herald__http_parse_response((const char *)in, inlen, hs->last_len,
                                       c->cfg->max_head_bytes, &hs->resp,
                                       hs->headers, c->cfg->max_headers, &why);
  if (rv == 0) {
    hs->last_len = inlen;
    return 0;
  }
  if (rv < 0) {
    return fail(c, rv, why);
  }
  const herald_deflate_config *dc = &c->cfg->deflate;
  if (herald__hs_check_response(&hs->resp, hs->key,
                                (const char *const *)hs->offered, hs->noffered,
                                dc->enabled, &why) != 0) {
    return fail(c, HERALD_ERR_HANDSHAKE, why);
  }
  if (dc->enabled) {
    herald__pmd agreed;
    int pmd = herald__pmd_check_response(dc, hs->resp.headers,
                                         hs->resp.nheaders, &agreed, &why);
    if (pmd < 0) {
      return fail(c, HERALD_ERR_EXTENSION, why);
    }
    if (pmd && pmd_agree(c, &agreed) != 0) {
      return fail(c, HERALD_ERR_NOMEM, "out of memory");
    }
  }
  c->state = HERALD_STATE_OPEN;
  c->reader = RD_HEAD;
  c->flags |= F_HS_STALE; /* ev->response points into hs until next call */
  ev->type = HERALD_EV_OPEN;
  ev->response = &hs->resp;
  return rv;
}

/* ------------------------------------------------------------------------ */
/* Receiving: frames                                                         */
/* ------------------------------------------------------------------------ */

static int is_valid_opcode(unsigned op) {
  return op <= 2 || (op >= 8 && op <= 10);
}

/* Appends n payload bytes to the reassembly buffer, growing it to hold at
 * least the rest of the current frame (bounded by max_message_size, already
 * checked against the frame's declared length). */
static int mbuf_append(herald_conn *c, const uint8_t *p, size_t n) {
  if (c->mcap - c->mlen < n) {
    size_t need = c->mlen + n + (size_t)c->fremain;
    size_t ncap = c->mcap ? c->mcap : 256;
    while (ncap < need) {
      ncap *= 2;
    }
    if (ncap > c->cfg->max_message_size && need <= c->cfg->max_message_size) {
      ncap = (size_t)c->cfg->max_message_size;
    }
    uint8_t *nb = mem_realloc(c, c->mbuf, ncap);
    if (nb == NULL) {
      return HERALD_ERR_NOMEM;
    }
    c->mbuf = nb;
    c->mcap = ncap;
  }
  memcpy(c->mbuf + c->mlen, p, n);
  c->mlen += n;
  return 0;
}

/* ---- compressed messages (RFC 7692 7.2.2) ------------------------------- */

#define ZCHUNK 16384 /* streaming: inflated bytes per event */

static herald_event_type msg_event(const herald_conn *c) {
  return c->mop == HERALD_OP_TEXT ? HERALD_EV_TEXT : HERALD_EV_BINARY;
}

/* Checks and counts n freshly inflated bytes at p. */
static int inflated(herald_conn *c, const uint8_t *p, size_t n) {
  if (n > c->cfg->max_message_size - c->msize) {
    return fail(c, HERALD_ERR_TOO_BIG,
                "inflated message larger than max_message_size");
  }
  c->msize += n;
  if (c->mop == HERALD_OP_TEXT && herald__utf8_validate(&c->utf8, p, n) != 0) {
    return fail(c, HERALD_ERR_BAD_UTF8, "invalid UTF-8 in text (RFC 6455 8.1)");
  }
  return 0;
}

/*
 * Inflates from *in (*n bytes) until the input is used up and zlib holds
 * nothing more, or the output is full: in whole mode the message buffer, grown
 * in steps and never past max_message_size; in streaming mode the chunk zbuf
 * (*have bytes of it are already filled). Each step's output is counted and
 * validated before the next, so a bomb fails as soon as it passes the
 * limit. Returns 1 when the output filled up (more may be pending), 0 when
 * drained, or an error (the connection has failed).
 */
static int inflate_run(herald_conn *c, const uint8_t **in, size_t *n,
                       size_t *have) {
  int stream = (c->flags & F_STREAM) != 0;
  for (;;) {
    if (c->z->zend) {
      /* After a final block the rest of the message is ignored. */
      *in += *n;
      *n = 0;
      return 0;
    }
    uint8_t *dst;
    size_t room;
    uint8_t probe;
    uint64_t max = c->cfg->max_message_size;
    if (stream) {
      if (c->z->zbuf == NULL && (c->z->zbuf = mem_alloc(c, ZCHUNK)) == NULL) {
        return fail(c, HERALD_ERR_NOMEM, "out of memory");
      }
      if (*have == ZCHUNK) {
        return 1;
      }
      dst = c->z->zbuf + *have;
      room = ZCHUNK - *have;
    } else if (c->mlen >= max) {
      /* At the limit: one more byte of output is one too many. */
      dst = &probe;
      room = 1;
    } else {
      if (c->mcap == c->mlen) {
        size_t ncap = c->mcap ? c->mcap * 2 : 4096;
        if (ncap > max) {
          ncap = (size_t)max;
        }
        uint8_t *nb = mem_realloc(c, c->mbuf, ncap);
        if (nb == NULL) {
          return fail(c, HERALD_ERR_NOMEM, "out of memory");
        }
        c->mbuf = nb;
        c->mcap = ncap;
      }
      dst = c->mbuf + c->mlen;
      room = c->mcap - c->mlen;
    }
    size_t before = *n, got;
    int rv = herald__zinflate(c->z->inf, in, n, dst, room, &got);
    /* What came out before a data error is checked first, so the error
     * reported does not depend on how the input was split. */
    if (inflated(c, dst, got) != 0) {
      return c->err;
    }
    if (rv < 0) {
      return fail(c, rv,
                  rv == HERALD_ERR_NOMEM
                      ? "out of memory"
                      : "invalid compressed data (RFC 7692 7.2.2)");
    }
    if (stream) {
      *have += got;
    } else {
      c->mlen += got;
    }
    if (rv == 1) {
      c->z->zend = 1;
      continue;
    }
    if (got < room && *n == 0) {
      return 0; /* zlib had room to spare: nothing is pending */
    }
    if (got == 0 && *n == before) {
      return fail(c, HERALD_ERR_INFLATE,
                  "invalid compressed data (RFC 7692 7.2.2)");
    }
  }
}

/* Feeds the rest of the 4-byte tail and drains the inflater. Returns 1 if
 * output is still pending (streaming: the chunk is full), 0 when the
 * message is complete, or an error. */
static int inflate_finish(herald_conn *c, size_t *have) {
  if (c->z->zend) {
    c->z->ztail = sizeof(pmd_tail);
  }
  const uint8_t *t = pmd_tail + c->z->ztail;
  size_t left = sizeof(pmd_tail) - c->z->ztail;
  int rv = inflate_run(c, &t, &left, have);
  c->z->ztail = (uint8_t)(sizeof(pmd_tail) - left);
  if (rv != 0) {
    return rv;
  }
  if (c->z->ztail < sizeof(pmd_tail)) {
    return 1;
  }
  if (c->mop == HERALD_OP_TEXT && c->utf8 != HERALD_UTF8_ACCEPT) {
    return fail(c, HERALD_ERR_BAD_UTF8,
                "text ends inside a UTF-8 sequence (RFC 6455 8.1)");
  }
  /* RFC 7692 7.1.1: without context takeover the next message starts from
   * an empty window; after a final block zlib must start over anyway. */
  if (c->z->rx_reset || c->z->zend) {
    herald__zstream_reset(c->z->inf);
  }
  return 0;
}

/* Fills *ev with what a compressed message produced: a chunk (streaming) or
 * the whole message; done: the message is complete. */
static void inflate_event(herald_conn *c, size_t have, int done,
                          herald_event *ev) {
  if (c->flags & F_STREAM) {
    if (have == 0 && !done) {
      return;
    }
    ev->type = msg_event(c);
    ev->data = c->z->zbuf;
    ev->len = have;
    ev->first = (c->flags & F_MFIRST) != 0;
    ev->fin = done;
    c->flags &= (uint16_t)~F_MFIRST;
  } else if (done) {
    ev->type = msg_event(c);
    ev->data = c->mbuf;
    ev->len = c->mlen;
    ev->first = 1;
    ev->fin = 1;
    c->flags |= F_MSG_DELIVERED;
  }
  if (done) {
    c->mop = 0;
    c->reader = RD_HEAD;
  }
}

/* RD_INFLATE (streaming): all of the message's input is in; hands out the
 * next chunk of what the inflater still holds. Consumes no input. */
static int inflate_drain(herald_conn *c, herald_event *ev) {
  size_t have = 0;
  int rv = inflate_finish(c, &have);
  if (rv < 0) {
    return rv;
  }
  inflate_event(c, have, rv == 0, ev);
  return 0;
}

/* The compressed counterpart of read_payload: n unmasked payload bytes at
 * p. In streaming mode it may stop early with a full chunk; the bytes it
 * did not take are masked again and left to the next call. */
static int read_compressed(herald_conn *c, uint8_t *p, size_t n,
                           uint8_t mask_off, herald_event *ev) {
  const uint8_t *in = p;
  size_t left = n, have = 0;
  int rv = inflate_run(c, &in, &left, &have);
  if (rv < 0) {
    return rv;
  }
  size_t used = n - left;
  if (left > 0 && (c->flags & F_MASKED)) {
    /* Unmasking is its own inverse: the next call unmasks these again. */
    (void)herald__mask(p + used, left, c->mask, (mask_off + used) & 3);
    c->mask_off = (uint8_t)((mask_off + used) & 3);
  }
  c->fremain -= used;
  int done = 0;
  c->reader = c->fremain == 0 ? RD_HEAD : RD_PAYLOAD;
  if (c->fremain == 0 && (c->flags & F_FIN)) {
    rv = rv == 0 ? inflate_finish(c, &have) : 1;
    if (rv < 0) {
      return rv;
    }
    done = rv == 0;
    c->reader = done ? RD_HEAD : RD_INFLATE;
  }
  inflate_event(c, have, done, ev);
  return (int)used;
}

/*
 * Consumes up to avail bytes of the current data frame's payload at p.
 * whole: p holds this frame's entire payload and nothing of it was consumed
 * before, so a complete unfragmented message can be delivered in place.
 * Returns the bytes consumed or an error.
 */
static int read_payload(herald_conn *c, uint8_t *p, size_t avail, int whole,
                        herald_event *ev) {
  size_t n = avail < c->fremain ? avail : (size_t)c->fremain;
  uint8_t mask_off = c->mask_off;
  if ((c->flags & F_MASKED)) {
    c->mask_off = (uint8_t)herald__mask(p, n, c->mask, c->mask_off);
  }
  if (c->mcomp) {
    return read_compressed(c, p, n, mask_off, ev);
  }
  /* RFC 6455 8.1: text must be UTF-8; checked as it arrives so invalid text
   * fails on the chunk that holds the first bad byte. */
  if (c->mop == HERALD_OP_TEXT && herald__utf8_validate(&c->utf8, p, n) != 0) {
    return fail(c, HERALD_ERR_BAD_UTF8, "invalid UTF-8 in text (RFC 6455 8.1)");
  }
  c->fremain -= n;
  c->msize += n;
  int frame_done = c->fremain == 0;
  int msg_done = frame_done && (c->flags & F_FIN) != 0;
  if (msg_done && c->mop == HERALD_OP_TEXT && c->utf8 != HERALD_UTF8_ACCEPT) {
    return fail(c, HERALD_ERR_BAD_UTF8,
                "text ends inside a UTF-8 sequence (RFC 6455 8.1)");
  }
  c->reader = frame_done ? RD_HEAD : RD_PAYLOAD;

  if (c->flags & F_STREAM) {
    if (n > 0 || msg_done) {
      ev->type =
          (herald_event_type)(c->mop == HERALD_OP_TEXT ? HERALD_EV_TEXT
                                                       : HERALD_EV_BINARY);
      ev->data = p;
      ev->len = n;
      ev->first = (c->flags & F_MFIRST) != 0;
      ev->fin = msg_done;
      c->flags &= (uint16_t)~F_MFIRST;
    }
  } else if (msg_done && whole && c->mlen == 0) {
    ev->type = (herald_event_type)(c->mop == HERALD_OP_TEXT ? HERALD_EV_TEXT
                                                            : HERALD_EV_BINARY);
    ev->data = p;
    ev->len = n;
    ev->first = 1;
    ev->fin = 1;
  } else {
    if (n > 0) {
      int rv = mbuf_append(c, p, n);
      if (rv != 0) {
        return fail(c, rv, "out of memory");
      }
    }
    if (msg_done) {
      ev->type =
          (herald_event_type)(c->mop == HERALD_OP_TEXT ? HERALD_EV_TEXT
                                                       : HERALD_EV_BINARY);
      ev->data = c->mbuf;
      ev->len = c->mlen;
      ev->first = 1;
      ev->fin = 1;
      c->flags |= F_MSG_DELIVERED;
    }
  }
  if (msg_done) {
    c->mop = 0;
  }
  return (int)n;
}

/* Handles a complete control frame whose (unmasked) payload is p[0..len). */
static int read_control(herald_conn *c, unsigned op, uint8_t *p, size_t len,
                        herald_event *ev) {
  switch (op) {
  case HERALD_OP_PING:
    /* RFC 6455 5.5.2/5.5.3: answer with a pong carrying the same payload.
     * Only the latest unanswered ping needs an answer. After our close frame
     * nothing more may be sent, so no pong then. */
    if (!(c->flags & F_CLOSE_SENT)) {
      if (c->pongbuf == NULL) {
        c->pongbuf = mem_alloc(c, 126);
        if (c->pongbuf == NULL) {
          return fail(c, HERALD_ERR_NOMEM, "out of memory");
        }
      }
      c->pongbuf[0] = (uint8_t)len;
      memcpy(c->pongbuf + 1, p, len);
      c->flags |= F_PONG_PENDING;
    }
    ev->type = HERALD_EV_PING;
    break;
  case HERALD_OP_PONG:
    ev->type = HERALD_EV_PONG;
    break;
  default: { /* HERALD_OP_CLOSE */
    uint16_t code = HERALD_CLOSE_NO_STATUS;
    /* RFC 6455 5.5.1: a body, if any, starts with a 2-byte code. */
    if (len == 1) {
      return fail(c, HERALD_ERR_BAD_CLOSE,
                  "close payload of 1 byte (RFC 6455 5.5.1)");
    }
    if (len >= 2) {
      code = (uint16_t)(p[0] << 8 | p[1]);
      if (!herald_close_code_valid(code)) {
        return fail(c, HERALD_ERR_BAD_CLOSE,
                    "invalid close code (RFC 6455 7.4.1)");
      }
      if (!herald_utf8_valid(p + 2, len - 2)) {
        return fail(c, HERALD_ERR_BAD_UTF8,
                    "close reason is not UTF-8 (RFC 6455 5.5.1)");
      }
      p += 2;
      len -= 2;
    }
    c->flags |= F_CLOSE_RECEIVED;
    if (!(c->flags & F_CLOSE_SENT)) {
      /* Answer with the same code (RFC 6455 5.5.1), or an empty close. */
      int rv = queue_close(c, code == HERALD_CLOSE_NO_STATUS ? 0 : code, "", 0);
      if (rv != 0) {
        return fail(c, rv, "out of memory");
      }
    }
    c->state = HERALD_STATE_CLOSED;
    c->reader = RD_DISCARD;
    c->flags &= (uint16_t)~F_PONG_PENDING;
    ev->type = HERALD_EV_CLOSE;
    ev->code = code;
    break;
  }
  }
  ev->data = p;
  ev->len = len;
  return 0;
}

/*
 * Parses one frame header at in[0..inlen). Each check fails as soon as the
 * bytes that decide it are present. Data frames continue straight into their
 * payload; control frames are handled whole.
 */
static int read_frame(herald_conn *c, uint8_t *in, size_t inlen,
                      herald_event *ev) {
  if (inlen < 2) {
    return 0;
  }
  unsigned b0 = in[0], b1 = in[1];
  unsigned fin = b0 >> 7, rsv = b0 & 0x70, op = b0 & 0x0f;
  unsigned masked = b1 >> 7, len7 = b1 & 0x7f;

  /* RFC 6455 5.2: RSV bits must be 0 unless an extension defines them.
   * permessage-deflate defines RSV1, on the first frame of a data message
   * only (RFC 7692 6.1). */
  if (rsv & 0x30) {
    return fail(c, HERALD_ERR_PROTO,
                "reserved bits set without an extension (RFC 6455 5.2)");
  }
  if (rsv) {
    if (c->z == NULL) {
      return fail(c, HERALD_ERR_PROTO,
                  "RSV1 set without permessage-deflate (RFC 6455 5.2)");
    }
    if (op >= 8) {
      return fail(c, HERALD_ERR_PROTO,
                  "RSV1 set on a control frame (RFC 7692 6.1)");
    }
    if (op == HERALD_OP_CONT) {
      return fail(c, HERALD_ERR_PROTO,
                  "RSV1 set on a continuation frame (RFC 7692 6.1)");
    }
  }
  if (!is_valid_opcode(op)) {
    return fail(c, HERALD_ERR_PROTO, "reserved opcode (RFC 6455 5.2)");
  }
  if (op >= 8) {
    /* RFC 6455 5.5: control frames are short and never fragmented. */
    if (!fin) {
      return fail(c, HERALD_ERR_PROTO,
                  "fragmented control frame (RFC 6455 5.5)");
    }
    if (len7 > 125) {
      return fail(c, HERALD_ERR_PROTO,
                  "control frame payload over 125 bytes (RFC 6455 5.5)");
    }
  } else if (op == HERALD_OP_CONT) {
    if (c->mop == 0) {
      return fail(c, HERALD_ERR_PROTO,
                  "continuation frame with no message started (RFC 6455 "
                  "5.4)");
    }
  } else if (c->mop != 0) {
    return fail(c, HERALD_ERR_PROTO,
                "new message inside a fragmented one (RFC 6455 5.4)");
  }
  /* RFC 6455 5.1: clients mask every frame, servers none. */
  if (c->role == HERALD_ROLE_SERVER && !masked) {
    return fail(c, HERALD_ERR_PROTO,
                "unmasked frame from client (RFC 6455 "
                "5.1)");
  }
  if (c->role == HERALD_ROLE_CLIENT && masked) {
    return fail(c, HERALD_ERR_PROTO, "masked frame from server (RFC 6455 5.1)");
  }

  size_t hlen = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0);
  if (inlen < hlen) {
    return 0;
  }
  uint64_t len = len7;
  if (len7 == 126) {
    len = (uint64_t)in[2] << 8 | in[3];
    if (len < 126) {
      return fail(c, HERALD_ERR_PROTO,
                  "length not minimally encoded (RFC 6455 5.2)");
    }
  } else if (len7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) {
      len = len << 8 | in[2 + i];
    }
    if (len >> 63) {
      return fail(c, HERALD_ERR_PROTO,
                  "64-bit length with the top bit set (RFC 6455 5.2)");
    }
    if (len <= 0xffff) {
      return fail(c, HERALD_ERR_PROTO,
                  "length not minimally encoded (RFC 6455 5.2)");
    }
  }
  const uint8_t *key = masked ? in + hlen - 4 : NULL;

  if (op >= 8) {
    if (inlen - hlen < len) {
      return 0; /* wait for the whole control frame */
    }
    uint8_t *p = in + hlen;
    if (key) {
      herald__mask(p, (size_t)len, key, 0);
    }
    int rv = read_control(c, op, p, (size_t)len, ev);
    return rv < 0 ? rv : (int)(hlen + len);
  }

  /* Data frame: limits first, before any payload is accepted. */
  if (len > c->cfg->max_frame_size) {
    return fail(c, HERALD_ERR_TOO_BIG, "frame larger than max_frame_size");
  }
  int comp = op == HERALD_OP_CONT ? c->mcomp : rsv != 0;
  if (comp) {
    /* The inflated size is checked while inflating; here only the
     * compressed bytes are bounded, generously. */
    uint64_t max = c->cfg->max_message_size;
    uint64_t wire = max + max / 8 + 65536;
    wire = wire < max ? UINT64_MAX : wire;
    uint64_t before = op == HERALD_OP_CONT ? c->z->mwire : 0;
    if (len > wire - before) {
      return fail(c, HERALD_ERR_TOO_BIG,
                  "compressed message larger than max_message_size allows");
    }
  } else {
    uint64_t before = op == HERALD_OP_CONT ? c->msize : 0;
    if (len > c->cfg->max_message_size - before) {
      return fail(c, HERALD_ERR_TOO_BIG,
                  "message larger than max_message_size");
    }
  }
  if (op != HERALD_OP_CONT) {
    c->flags = (uint16_t)((c->flags & ~F_STREAM) |
                          ((c->flags & F_STREAM_NEXT) ? F_STREAM : 0));
    c->mop = (uint8_t)op;
    c->flags |= F_MFIRST;
    c->nfrags = 0;
    c->msize = 0;
    c->utf8 = HERALD_UTF8_ACCEPT;
    c->mcomp = (uint8_t)comp;
    if (c->z) {
      c->z->mwire = 0;
      c->z->zend = 0;
      c->z->ztail = 0;
    }
    if (comp && c->z->inf == NULL) {
      int rv = herald__zinflate_new(&c->z->inf, conn_mem(c), c->z->rx_bits);
      if (rv != 0) {
        return fail(c, rv, "out of memory");
      }
    }
  }
  if (comp) {
    c->z->mwire += len;
  }
  if (++c->nfrags > c->cfg->max_fragments) {
    return fail(c, HERALD_ERR_POLICY, "more fragments than max_fragments");
  }
  c->flags = (uint16_t)((c->flags & ~(F_FIN | F_MASKED)) | (fin ? F_FIN : 0) |
                        (masked ? F_MASKED : 0));
  if (key) {
    memcpy(c->mask, key, 4);
  }
  c->mask_off = 0;
  c->fremain = len;
  size_t avail = inlen - hlen;
  int rv = read_payload(c, in + hlen, avail, avail >= len, ev);
  return rv < 0 ? rv : (int)(hlen + (size_t)rv);
}

/* One step of the reader: consumes what it can of in[0..inlen) for the
 * current state and returns the bytes consumed (0: needs more input), with
 * at most one event in *ev, or an error. */
static int step(herald_conn *c, uint8_t *in, size_t inlen, herald_event *ev) {
  switch ((enum reader)c->reader) {
  case RD_REQUEST:
    return read_request(c, in, inlen, ev);
  case RD_DECIDE:
  case RD_IDLE:
    return HERALD_ERR_BAD_STATE;
  case RD_RESPONSE:
    return read_response(c, in, inlen, ev);
  case RD_HEAD:
    return read_frame(c, in, inlen, ev);
  case RD_PAYLOAD:
    return read_payload(c, in, inlen, 0, ev);
  case RD_INFLATE:
    return inflate_drain(c, ev);
  case RD_DISCARD:
    return (int)inlen;
  case RD_FAILED:
    return c->err;
  }
  return HERALD_ERR_INTERNAL;
}

HERALD_API int herald_conn_recv(herald_conn *c, uint8_t *in, size_t inlen,
                                herald_event *ev) {
  memset(ev, 0, sizeof(*ev));
  if (c->flags & F_MSG_DELIVERED) {
    c->flags &= (uint16_t)~F_MSG_DELIVERED;
    c->mlen = 0;
    if (c->mcap > 65536) {
      mem_free(c, c->mbuf);
      c->mbuf = NULL;
      c->mcap = 0;
    }
  }
  if (c->flags & F_HS_STALE) {
    hs_free(c);
  }
  /* The count returned is an int: take at most 1 GiB per call. */
  if (inlen > (size_t)1 << 30) {
    inlen = (size_t)1 << 30;
  }
  /* The commonest input in a few steps: a whole, short, unfragmented,
   * uncompressed text or binary message from a client, entirely in the
   * buffer, between messages, in whole mode. It has the same effects, event
   * and errors as read_frame() and read_payload() below (which the byte-at-
   * a-time tests compare it against); anything else goes that way. */
  if (c->reader == RD_HEAD && c->role == HERALD_ROLE_SERVER && inlen >= 6 &&
      (in[0] == (0x80 | HERALD_OP_TEXT) ||
       in[0] == (0x80 | HERALD_OP_BINARY)) &&
      (in[1] & 0x80) && (in[1] & 0x7f) < 126 &&
      inlen - 6 >= (size_t)(in[1] & 0x7f) && c->mop == 0 && c->mlen == 0 &&
      !(c->flags & F_STREAM_NEXT) && (in[1] & 0x7f) <= c->cfg->max_frame_size &&
      (in[1] & 0x7f) <= c->cfg->max_message_size &&
      c->cfg->max_fragments >= 1) {
    unsigned op = in[0] & 0x0f;
    size_t len = in[1] & 0x7f;
    uint8_t *p = in + 6;
    c->flags = (uint16_t)((c->flags & ~F_STREAM) | F_MFIRST | F_FIN | F_MASKED);
    c->nfrags = 1;
    c->mcomp = 0;
    if (c->z) {
      c->z->mwire = 0;
      c->z->zend = 0;
      c->z->ztail = 0;
    }
    memcpy(c->mask, in + 2, 4);
    c->mask_off = (uint8_t)herald__mask(p, len, c->mask, 0);
    /* RFC 6455 8.1, as in read_payload. */
    if (op == HERALD_OP_TEXT) {
      c->mop = (uint8_t)op;
      c->utf8 = HERALD_UTF8_ACCEPT;
      if (herald__utf8_validate(&c->utf8, p, len) != 0) {
        return fail(c, HERALD_ERR_BAD_UTF8,
                    "invalid UTF-8 in text (RFC 6455 8.1)");
      }
      if (c->utf8 != HERALD_UTF8_ACCEPT) {
        c->fremain = 0;
        c->msize = len;
        return fail(c, HERALD_ERR_BAD_UTF8,
                    "text ends inside a UTF-8 sequence (RFC 6455 8.1)");
      }
    } else {
      c->utf8 = HERALD_UTF8_ACCEPT;
    }
    c->mop = 0;
    c->fremain = 0;
    c->msize = len;
    ev->type = op == HERALD_OP_TEXT ? HERALD_EV_TEXT : HERALD_EV_BINARY;
    ev->data = p;
    ev->len = len;
    ev->first = 1;
    ev->fin = 1;
    return (int)(6 + len);
  }
  /* Steps that consume bytes without completing an event (a data frame's
   * header, an empty fragment, part of a message being reassembled) are
   * followed by more steps, so NONE always means "all consumed, or the rest
   * is an incomplete unit". */
  size_t off = 0;
  for (;;) {
    int rv = step(c, in + off, inlen - off, ev);
    if (rv < 0) {
      return rv;
    }
    off += (size_t)rv;
    if (ev->type != HERALD_EV_NONE || rv == 0 || off == inlen) {
      return (int)off;
    }
  }
}

HERALD_API int herald_conn_recv_eof(herald_conn *c, herald_event *ev) {
  memset(ev, 0, sizeof(*ev));
  /* Only a WebSocket connection that was open and not yet closed by either
   * side's close handshake or by a failure ends "abnormally". */
  int report =
      c->state == HERALD_STATE_OPEN || c->state == HERALD_STATE_CLOSING;
  if (c->reader != RD_FAILED) {
    c->reader = RD_DISCARD;
  }
  c->state = HERALD_STATE_CLOSED;
  c->flags &= (uint16_t)~F_PONG_PENDING;
  if (!report) {
    return 0;
  }
  /* RFC 6455 7.1.5: closed without a close frame: 1006. */
  ev->type = HERALD_EV_CLOSE;
  ev->code = HERALD_CLOSE_ABNORMAL;
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Opening handshake: answers and requests                                   */
/* ------------------------------------------------------------------------ */

/* A header value or token we put on the wire must not smuggle a line. */
static int safe_text(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '\r' || ch == '\n' || ch == 0) {
      return 0;
    }
  }
  return 1;
}

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch));
}

static int is_token(const char *s, size_t n) {
  if (n == 0) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!is_tchar((unsigned char)s[i])) {
      return 0;
    }
  }
  return 1;
}

static int headers_safe(const herald_header *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!is_token(h[i].name.ptr, h[i].name.len) ||
        !safe_text(h[i].value.ptr, h[i].value.len)) {
      return 0;
    }
  }
  return 1;
}

/* A growing text written into the output queue in two passes: first every
 * piece is measured, then copied, so the response is one allocation. */
typedef struct text {
  uint8_t *p; /* NULL while measuring */
  size_t len;
} text;

static void text_put(text *t, const char *s, size_t n) {
  if (t->p) {
    memcpy(t->p + t->len, s, n);
  }
  t->len += n;
}
static void text_puts(text *t, const char *s) {
  text_put(t, s, strlen(s));
}
static void text_headers(text *t, const herald_header *h, size_t n) {
  for (size_t i = 0; i < n; i++) {
    text_put(t, h[i].name.ptr, h[i].name.len);
    text_put(t, ": ", 2);
    text_put(t, h[i].value.ptr, h[i].value.len);
    text_put(t, "\r\n", 2);
  }
}

static void build_101(text *t, const char *accept, const herald_accept *o,
                      const char *ext, size_t extlen) {
  text_puts(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
  text_put(t, accept, 28);
  text_put(t, "\r\n", 2);
  if (extlen > 0) {
    text_puts(t, "Sec-WebSocket-Extensions: ");
    text_put(t, ext, extlen);
    text_put(t, "\r\n", 2);
  }
  if (o && o->subprotocol) {
    text_puts(t, "Sec-WebSocket-Protocol: ");
    text_puts(t, o->subprotocol);
    text_put(t, "\r\n", 2);
  }
  if (o) {
    text_headers(t, o->headers, o->nheaders);
  }
  text_put(t, "\r\n", 2);
}

HERALD_API int herald_conn_accept(herald_conn *c, const herald_accept *opts) {
  if (c->reader != RD_DECIDE || !c->hs->req.websocket) {
    return HERALD_ERR_BAD_STATE;
  }
  const herald_request *req = &c->hs->req;
  if (opts && opts->subprotocol) {
    /* RFC 6455 4.2.2: the chosen subprotocol must be one the client sent. */
    size_t pos = 0, want = strlen(opts->subprotocol);
    herald_str tok;
    int found = 0;
    while (!found && herald_list_next(req->protocols, &pos, &tok)) {
      found = tok.len == want && memcmp(tok.ptr, opts->subprotocol, want) == 0;
    }
    if (!found) {
      return HERALD_ERR_INVALID_ARG;
    }
  }
  if (opts && !headers_safe(opts->headers, opts->nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  char accept[29];
  herald_accept_key(req->key.ptr, req->key.len, accept);
  /* RFC 7692 5: the first acceptable permessage-deflate offer, if any. */
  char ext[HERALD__PMD_TEXT_MAX];
  size_t extlen = 0;
  herald__pmd agreed;
  int pmd = c->cfg->deflate.enabled && !(opts && opts->no_deflate) &&
            herald__pmd_accept(&c->cfg->deflate, req->headers, req->nheaders,
                               &agreed, ext, &extlen);
  if (pmd && pmd_agree(c, &agreed) != 0) {
    return HERALD_ERR_NOMEM;
  }
  text t = {NULL, 0};
  build_101(&t, accept, opts, ext, extlen);
  t.p = out_append(c, t.len, 1);
  if (t.p == NULL) {
    mem_free(c, c->z);
    c->z = NULL;
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  build_101(&t, accept, opts, ext, extlen);
  hs_free(c);
  c->state = HERALD_STATE_OPEN;
  c->reader = RD_HEAD;
  return 0;
}

HERALD_API int herald_conn_reject(herald_conn *c, int status,
                                  const char *reason,
                                  const herald_header *headers,
                                  size_t nheaders) {
  if (c->reader != RD_DECIDE) {
    return HERALD_ERR_BAD_STATE;
  }
  if (status < 400 || status > 599 || !headers_safe(headers, nheaders) ||
      (reason && !safe_text(reason, strlen(reason)))) {
    return HERALD_ERR_INVALID_ARG;
  }
  int rv = queue_http(c, status, reason, NULL, headers, nheaders);
  if (rv != 0) {
    return rv;
  }
  hs_free(c);
  c->state = HERALD_STATE_CLOSED;
  c->reader = RD_DISCARD;
  return 0;
}

static void build_response(text *t, int status, const herald_header *h,
                           size_t n, size_t bodylen, int keep_alive) {
  char line[96];
  int len = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status,
                     herald__http_status_text(status));
  text_put(t, line, (size_t)len);
  text_headers(t, h, n);
  len = snprintf(line, sizeof(line), "Content-Length: %zu\r\n%s\r\n", bodylen,
                 keep_alive ? "" : "Connection: close\r\n");
  text_put(t, line, (size_t)len);
}

HERALD_API int herald_conn_respond(herald_conn *c, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen, int keep_alive) {
  if (c->reader != RD_DECIDE || c->hs->req.websocket) {
    return HERALD_ERR_BAD_STATE;
  }
  if (status < 100 || status > 599 || status == 101 ||
      !headers_safe(headers, nheaders) || (body == NULL && bodylen > 0)) {
    return HERALD_ERR_INVALID_ARG;
  }
  text t = {NULL, 0};
  build_response(&t, status, headers, nheaders, bodylen, keep_alive);
  size_t headlen = t.len;
  t.p = out_append(c, headlen + bodylen, 1);
  if (t.p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  build_response(&t, status, headers, nheaders, bodylen, keep_alive);
  if (bodylen > 0) {
    memcpy(t.p + headlen, body, bodylen);
  }
  if (keep_alive) {
    c->hs->last_len = 0;
    c->reader = RD_REQUEST;
  } else {
    hs_free(c);
    c->state = HERALD_STATE_CLOSED;
    c->reader = RD_DISCARD;
  }
  return 0;
}

HERALD_API int herald_conn_reset(herald_conn *c) {
  if (c->reader != RD_DECIDE || c->hs->req.websocket) {
    return HERALD_ERR_BAD_STATE;
  }
  c->hs->last_len = 0;
  c->reader = RD_REQUEST;
  return 0;
}

static void build_request(text *t, const herald_client_opts *o, const char *key,
                          const char *ext) {
  text_puts(t, "GET ");
  text_puts(t, o->path ? o->path : "/");
  text_puts(t, " HTTP/1.1\r\nHost: ");
  text_puts(t, o->host);
  text_puts(t, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: ");
  text_put(t, key, 24);
  text_puts(t, "\r\nSec-WebSocket-Version: 13\r\n");
  if (o->origin) {
    text_puts(t, "Origin: ");
    text_puts(t, o->origin);
    text_put(t, "\r\n", 2);
  }
  if (o->nsubprotocols > 0) {
    text_puts(t, "Sec-WebSocket-Protocol: ");
    for (size_t i = 0; i < o->nsubprotocols; i++) {
      if (i > 0) {
        text_put(t, ", ", 2);
      }
      text_puts(t, o->subprotocols[i]);
    }
    text_put(t, "\r\n", 2);
  }
  if (ext) {
    text_puts(t, "Sec-WebSocket-Extensions: ");
    text_puts(t, ext);
    text_put(t, "\r\n", 2);
  }
  text_headers(t, o->headers, o->nheaders);
  text_put(t, "\r\n", 2);
}

HERALD_API int herald_conn_client_start(herald_conn *c,
                                        const herald_client_opts *o) {
  if (c->reader != RD_IDLE) {
    return HERALD_ERR_BAD_STATE;
  }
  if (o == NULL || o->host == NULL || o->host[0] == 0 ||
      !safe_text(o->host, strlen(o->host)) ||
      (o->path && (o->path[0] == 0 || strchr(o->path, ' ') ||
                   !safe_text(o->path, strlen(o->path)))) ||
      (o->origin && !safe_text(o->origin, strlen(o->origin))) ||
      !headers_safe(o->headers, o->nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  for (size_t i = 0; i < o->nsubprotocols; i++) {
    const char *s = o->subprotocols[i];
    if (s == NULL || !is_token(s, strlen(s))) {
      return HERALD_ERR_INVALID_ARG;
    }
  }
  int rv = hs_alloc(c);
  if (rv != 0) {
    return rv;
  }
  handshake *hs = c->hs;
  if (o->nsubprotocols > 0) {
    hs->offered = mem_alloc(c, o->nsubprotocols * sizeof(char *));
    if (hs->offered == NULL) {
      hs_free(c);
      return HERALD_ERR_NOMEM;
    }
    for (size_t i = 0; i < o->nsubprotocols; i++) {
      size_t n = strlen(o->subprotocols[i]) + 1;
      hs->offered[i] = mem_alloc(c, n);
      if (hs->offered[i] == NULL) {
        hs_free(c);
        return HERALD_ERR_NOMEM;
      }
      memcpy(hs->offered[i], o->subprotocols[i], n);
      hs->noffered++;
    }
  }
  /* RFC 6455 4.1: a nonce of 16 random bytes, base64-encoded. */
  uint8_t nonce[16];
  if (get_random(c, nonce, sizeof(nonce)) != 0) {
    hs_free(c);
    return HERALD_ERR_INTERNAL;
  }
  herald__base64_encode(hs->key, nonce, sizeof(nonce));
  hs->key[24] = 0;
  char ext[HERALD__PMD_TEXT_MAX + 1];
  if (c->cfg->deflate.enabled) {
    ext[herald__pmd_offer(&c->cfg->deflate, ext)] = 0;
  }
  const char *offer = c->cfg->deflate.enabled ? ext : NULL;
  text t = {NULL, 0};
  build_request(&t, o, hs->key, offer);
  t.p = out_append(c, t.len, 1);
  if (t.p == NULL) {
    hs_free(c);
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  build_request(&t, o, hs->key, offer);
  c->reader = RD_RESPONSE;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                   */
/* ------------------------------------------------------------------------ */

static int send_allowed(const herald_conn *c) {
  if (c->flags & F_CLOSE_SENT || c->state == HERALD_STATE_CLOSED) {
    return HERALD_ERR_CLOSED;
  }
  if (c->state != HERALD_STATE_OPEN && c->state != HERALD_STATE_CLOSING) {
    return HERALD_ERR_BAD_STATE;
  }
  return 0;
}

HERALD_API int herald_conn_send(herald_conn *c, herald_opcode op,
                                const void *data, size_t len, unsigned flags,
                                herald_release_fn release, void *ctx) {
  /* The most common send in a few steps: a whole, short, uncompressed
   * message from a server on an open connection, copied (it is below
   * copy_threshold, or nothing asks to reference it). Exactly what the
   * general path below does for it; anything else goes that way. */
  if (c->state == HERALD_STATE_OPEN && c->role == HERALD_ROLE_SERVER &&
      !(c->flags & (F_CLOSE_SENT | F_FRAG_SENDING)) && c->z == NULL &&
      (op == HERALD_OP_TEXT || op == HERALD_OP_BINARY) && len < 126 &&
      (data != NULL || len == 0) && release == NULL &&
      !(flags & ~(unsigned)(HERALD_SEND_NO_COMPRESS | HERALD_SEND_BORROW)) &&
      (!(flags & HERALD_SEND_BORROW) || len < c->cfg->copy_threshold)) {
    size_t hlen = frame_header_len(len, 0);
    uint8_t *p = out_append(c, hlen + len, 1);
    if (p == NULL) {
      return HERALD_ERR_NOMEM;
    }
    frame_header(p, op, 1, 0, len, NULL);
    if (len > 0) {
      memcpy(p + hlen, data, len);
    }
    return 0;
  }
  int rv = send_allowed(c);
  if (rv != 0) {
    return rv;
  }
  if ((op != HERALD_OP_TEXT && op != HERALD_OP_BINARY) ||
      (data == NULL && len > 0) ||
      (flags & ~(unsigned)(HERALD_SEND_MORE | HERALD_SEND_NO_COMPRESS |
                           HERALD_SEND_BORROW))) {
    return HERALD_ERR_INVALID_ARG;
  }
  if ((c->flags & F_FRAG_SENDING) && c->sop != op) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_opcode wire = (c->flags & F_FRAG_SENDING) ? HERALD_OP_CONT : op;
  int fin = !(flags & HERALD_SEND_MORE);
  /* RFC 7692 6: compression is per message; a fragmented message goes out
   * uncompressed, as do short ones and those the caller opts out. */
  if (c->z != NULL && c->z->tx_bits != 0 && fin && wire != HERALD_OP_CONT &&
      !(flags & HERALD_SEND_NO_COMPRESS) && len >= c->cfg->deflate.threshold) {
    rv = out_frame_deflate(c, op, data, len);
    if (rv == 0 && release) {
      release(ctx);
    }
    return rv;
  }
  int borrow = (flags & HERALD_SEND_BORROW) && release == NULL;
  if ((release == NULL && !borrow) || len < c->cfg->copy_threshold ||
      c->role == HERALD_ROLE_CLIENT) {
    rv = out_frame_copy(c, wire, fin, data, len);
    if (rv != 0) {
      return rv;
    }
    if (release) {
      release(ctx);
    }
  } else {
    uint8_t hdr[HERALD_MAX_FRAME_HEADER];
    size_t hlen = herald_frame_header(hdr, wire, fin, 0, len, NULL);
    /* Reserve both pieces first so a failure leaves nothing queued. */
    if (out_reserve_bytes(c, hlen) != 0 || out_reserve_entry(c) != 0) {
      return HERALD_ERR_NOMEM;
    }
    uint32_t save_count = c->o->ocount;
    size_t save_len = c->o->olen, save_total = c->ototal;
    oentry *last =
        c->o->ocount ? &c->o->ent[c->o->ohead + c->o->ocount - 1] : NULL;
    oentry save_last = last ? *last : (oentry){0};
    uint8_t *p = out_append(c, hlen, 0);
    memcpy(p, hdr, hlen);
    if (out_append_ext(c, data, len, release, ctx) != 0) {
      c->o->ocount = save_count;
      c->o->olen = save_len;
      c->ototal = save_total;
      if (last) {
        *last = save_last;
      }
      return HERALD_ERR_NOMEM;
    }
    if (borrow) {
      c->o->ent[c->o->ohead + c->o->ocount - 1].borrowed = 1;
      c->flags |= F_BORROWED;
    }
  }
  if (fin) {
    c->flags &= (uint16_t)~F_FRAG_SENDING;
  } else {
    c->flags |= F_FRAG_SENDING;
    c->sop = (uint8_t)op;
  }
  return 0;
}

static int send_control(herald_conn *c, herald_opcode op, const void *data,
                        size_t len) {
  int rv = send_allowed(c);
  if (rv != 0) {
    return rv;
  }
  if (len > 125 || (data == NULL && len > 0)) {
    return HERALD_ERR_INVALID_ARG;
  }
  return out_frame_copy(c, op, 1, data, len);
}

HERALD_API int herald_conn_ping(herald_conn *c, const void *data, size_t len) {
  return send_control(c, HERALD_OP_PING, data, len);
}

HERALD_API int herald_conn_pong(herald_conn *c, const void *data, size_t len) {
  return send_control(c, HERALD_OP_PONG, data, len);
}

HERALD_API int herald_conn_close(herald_conn *c, uint16_t code,
                                 const char *reason, size_t reasonlen) {
  if (c->state == HERALD_STATE_CONNECTING) {
    return HERALD_ERR_BAD_STATE;
  }
  if (c->flags & F_CLOSE_SENT || c->state == HERALD_STATE_CLOSED) {
    return HERALD_ERR_CLOSED;
  }
  if ((code != 0 && !herald_close_code_valid(code)) ||
      (code == 0 && reasonlen > 0) || reasonlen > 123 ||
      (reasonlen > 0 &&
       (reason == NULL || !herald_utf8_valid(reason, reasonlen)))) {
    return HERALD_ERR_INVALID_ARG;
  }
  int rv = queue_close(c, code, reason, reasonlen);
  if (rv != 0) {
    return rv;
  }
  c->state = (c->flags & F_CLOSE_RECEIVED) ? HERALD_STATE_CLOSED
                                           : HERALD_STATE_CLOSING;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Encode once, send to many                                                 */
/* ------------------------------------------------------------------------ */

HERALD_API int herald_frame_prepare(herald_opcode op, const void *data,
                                    size_t len, int window_bits, int level,
                                    const herald_mem *mem, uint8_t **frame,
                                    size_t *framelen, int *compressed) {
  if ((op != HERALD_OP_TEXT && op != HERALD_OP_BINARY) ||
      (data == NULL && len > 0) || frame == NULL || framelen == NULL ||
      (window_bits != 0 && (window_bits < 9 || window_bits > 15)) ||
      level < -1 || level > 9) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (mem == NULL) {
    mem = &libc_mem;
  }
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  if (window_bits != 0) {
    /* A fresh stream per message: no context, so any connection whose
     * agreed window is at least window_bits can take it (RFC 7692 7.1.1). */
    herald__zstream *z;
    int rv = herald__zdeflate_new(&z, mem, window_bits, level, 8);
    if (rv != 0) {
      return rv;
    }
    size_t bound = herald__zdeflate_bound(z, len);
    uint8_t *out = mem->malloc(HERALD_MAX_FRAME_HEADER + bound, mem->user_data);
    if (out == NULL) {
      herald__zstream_del(z);
      return HERALD_ERR_NOMEM;
    }
    uint8_t *zp = out + HERALD_MAX_FRAME_HEADER;
    int64_t zlen = herald__zdeflate(z, data, len, zp, bound);
    herald__zstream_del(z);
    if (zlen < 4) {
      mem->free(out, mem->user_data);
      return HERALD_ERR_INTERNAL;
    }
    size_t clen = (size_t)zlen - 4;
    if (clen < len) {
      size_t hlen = herald_frame_header(hdr, op, 1, 0x40, clen, NULL);
      memmove(out + hlen, zp, clen);
      memcpy(out, hdr, hlen);
      *frame = out;
      *framelen = hlen + clen;
      if (compressed) {
        *compressed = window_bits;
      }
      return 0;
    }
    mem->free(out, mem->user_data); /* did not shrink: send it plain */
  }
  size_t hlen = herald_frame_header(hdr, op, 1, 0, len, NULL);
  uint8_t *out = mem->malloc(hlen + len, mem->user_data);
  if (out == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memcpy(out, hdr, hlen);
  if (len > 0) {
    memcpy(out + hlen, data, len);
  }
  *frame = out;
  *framelen = hlen + len;
  if (compressed) {
    *compressed = 0;
  }
  return 0;
}

HERALD_API void herald_frame_free(const herald_mem *mem, uint8_t *frame) {
  if (frame != NULL) {
    if (mem == NULL) {
      mem = &libc_mem;
    }
    mem->free(frame, mem->user_data);
  }
}

/* Checks that frame[0..len) is exactly one unmasked, final text or binary
 * frame with RSV1 set iff compressed. */
static int frame_well_formed(const uint8_t *f, size_t len, int compressed) {
  if (len < 2) {
    return 0;
  }
  unsigned op = f[0] & 0x0f, rsv = f[0] & 0x70;
  if (!(f[0] & 0x80) || (op != HERALD_OP_TEXT && op != HERALD_OP_BINARY) ||
      rsv != (compressed ? 0x40u : 0u) || (f[1] & 0x80)) {
    return 0;
  }
  uint64_t plen = f[1] & 0x7f;
  size_t hlen = 2;
  if (plen >= 126) {
    hlen = plen == 126 ? 4 : 10;
    if (len < hlen) {
      return 0;
    }
    plen = 0;
    for (size_t i = 2; i < hlen; i++) {
      plen = plen << 8 | f[i];
    }
  }
  return len - hlen == plen;
}

HERALD_API int herald_conn_send_frame(herald_conn *c, const uint8_t *frame,
                                      size_t len, int compressed,
                                      herald_release_fn release, void *ctx) {
  if (c->role != HERALD_ROLE_SERVER) {
    return HERALD_ERR_BAD_STATE; /* client frames are masked per frame */
  }
  int rv = send_allowed(c);
  if (rv != 0) {
    return rv;
  }
  if (frame == NULL ||
      (compressed != 0 && (compressed < 9 || compressed > 15)) ||
      !frame_well_formed(frame, len, compressed)) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (c->flags & F_FRAG_SENDING) {
    return HERALD_ERR_BAD_STATE;
  }
  /* RFC 7692 7.1.1.1, 7.1.2.1: a message compressed without context fits
   * only a connection whose own compressor keeps none, within its window. */
  if (compressed && (c->z == NULL || !c->z->tx_reset ||
                     c->z->tx_bits < (unsigned)compressed)) {
    return HERALD_ERR_BAD_STATE;
  }
  if (release == NULL || len < c->cfg->copy_threshold) {
    uint8_t *p = out_append(c, len, 1);
    if (p == NULL) {
      return HERALD_ERR_NOMEM;
    }
    memcpy(p, frame, len);
    if (release) {
      release(ctx);
    }
    return 0;
  }
  return out_append_ext(c, frame, len, release, ctx);
}

/* ------------------------------------------------------------------------ */
/* Streaming HTTP responses (Server-Sent Events)                             */
/* ------------------------------------------------------------------------ */

/* A streaming response keeps the connection in CONNECTING with input
 * discarded: the one combination no other path produces, so it needs no
 * state of its own. It ends in CLOSED. */
static int streaming(const herald_conn *c) {
  return c->reader == RD_DISCARD && c->state == HERALD_STATE_CONNECTING;
}

HERALD_API int herald_conn_stream_start(herald_conn *c, int status,
                                        const herald_header *headers,
                                        size_t nheaders) {
  if (c->reader != RD_DECIDE || c->hs->req.websocket) {
    return HERALD_ERR_BAD_STATE;
  }
  if (status < 200 || status > 599 || !headers_safe(headers, nheaders)) {
    return HERALD_ERR_INVALID_ARG;
  }
  char line[96];
  int len = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status,
                     herald__http_status_text(status));
  static const char tail[] = "Connection: close\r\n\r\n";
  text t = {NULL, 0};
  text_put(&t, line, (size_t)len);
  text_headers(&t, headers, nheaders);
  text_put(&t, tail, sizeof(tail) - 1);
  t.p = out_append(c, t.len, 1);
  if (t.p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  text_put(&t, line, (size_t)len);
  text_headers(&t, headers, nheaders);
  text_put(&t, tail, sizeof(tail) - 1);
  hs_free(c);
  c->reader = RD_DISCARD;
  return 0;
}

HERALD_API int herald_conn_stream_write(herald_conn *c, const void *data,
                                        size_t len) {
  if (!streaming(c)) {
    return HERALD_ERR_BAD_STATE;
  }
  if (len == 0) {
    return 0;
  }
  if (data == NULL) {
    return HERALD_ERR_INVALID_ARG;
  }
  uint8_t *p = out_append(c, len, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memcpy(p, data, len);
  return 0;
}

HERALD_API int herald_conn_stream_end(herald_conn *c) {
  if (!streaming(c)) {
    return HERALD_ERR_BAD_STATE;
  }
  c->state = HERALD_STATE_CLOSED;
  return 0;
}
