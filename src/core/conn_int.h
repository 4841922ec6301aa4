/*
 * conn_int.h - the connection struct and what the files of a connection
 * share. Internal to src/core.
 *
 * A herald_conn is one struct worked on by five files, each with one job:
 *
 *   conn.c       the state machines: every transition of herald_state and of
 *                enum reader (but a frame's own HEAD -> PAYLOAD -> INFLATE
 *                steps), failing, closing, the public entry points that
 *                change state, herald_conn_recv()
 *   handshake.c  the opening handshake of both roles and the plain HTTP
 *                answers: reads request and response heads, writes 101,
 *                refusals, responses, the client's request, the
 *                permessage-deflate agreement
 *   reader.c     frames in: header checks, payload unmasking, UTF-8, message
 *                reassembly or streaming, inflating, control frames
 *   sender.c     frames out: frame headers, data/control/close frames,
 *                compression on send, encode-once frames
 *   outq.c       the output queue: entries and bytes, pongs ahead of data,
 *                iovecs out, written bytes back, borrowed payloads
 *
 * Functions one file lends another are named herald__* and declared here;
 * the few on the per-message path are static inline here.
 */
#ifndef HERALD_CONN_INT_H
#define HERALD_CONN_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/deflate.h"
#include "herald/core.h"

/* Keeps a function out of line: a cold or looping path then costs the hot
 * path that calls it nothing (no registers to save, a tail call). */
#if defined(__GNUC__)
#define HERALD__NOINLINE __attribute__((noinline))
#else
#define HERALD__NOINLINE
#endif

/* What the input side waits for next (transitions: conn.c).
 *   RD_REQUEST      server: an HTTP request head
 *   RD_DECIDE       server: the application must accept/reject/reset
 *   RD_IDLE         client: herald_conn_client_start() not called yet
 *   RD_RESPONSE     client: the HTTP response head
 *   RD_HEAD         a frame header (and, for a control frame, its payload)
 *   RD_PAYLOAD      the rest of a data frame's payload
 *   RD_INFLATE      streaming: a compressed message's input is all in, its
 *                   inflated tail is still being handed out in chunks
 *   RD_DISCARD      after the peer's close frame: input is ignored
 *   RD_FAILED       sticky error: every call returns conn->err */
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
  F_PONG_PENDING = 1 << 3,   /* pongbuf holds a pong to queue (overflow) */
  F_HEAD_MID_FRAME = 1 << 4, /* the head output entry continues a frame */
  F_FRAG_SENDING = 1 << 5,   /* a fragmented message is being sent */
  F_HS_STALE = 1 << 6,       /* hs may be freed on the next call */
  F_STREAM = 1 << 7,         /* this message is delivered in chunks */
  F_STREAM_NEXT = 1 << 8,    /* messages from the next one on are streamed */
  F_FIN = 1 << 9,            /* the frame being received is final */
  F_MASKED = 1 << 10,        /* the frame being received is masked */
  F_MFIRST = 1 << 11,        /* the next chunk delivered is the first */
  F_BORROWED = 1 << 12,      /* a borrowed payload may be queued */
  F_CHARGED = 1 << 13        /* mbuf's capacity is drawn on cfg->budget */
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
  uint8_t owned;    /* ext lies in the block ctx, a message buffer the queue
                       took over (sender.c): freed once written */
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
  uint64_t zcharge;    /* client: drawn on cfg->deflate.budget for the offer */
  uint8_t pmd_offered; /* client: permessage-deflate was offered */
  herald_header headers[]; /* cfg->max_headers entries */
} handshake;

/* The output queue, allocated with the first output and freed by
 * herald_conn_trim() once empty (and no pong is held): an idle connection
 * holds none. What only a connection with output needs lives here, not in
 * herald_conn (the total, the held pong). */
typedef struct outq {
  oentry *ent; /* entries [ohead, ohead + ocount) are pending */
  uint32_t ohead, ocount, ocap;
  uint32_t npongs; /* entries with pong set: pongs waiting to be written */
  size_t odone;    /* bytes of ent[ohead] already written */
  uint8_t *obuf;
  size_t olen, ocap_bytes;
  size_t ototal;    /* pending output bytes in all entries */
  uint8_t *pongbuf; /* F_PONG_PENDING: [0] = length, then up to 125 bytes */
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
  uint8_t *zbuf;   /* streaming: one chunk of inflated output */
  uint64_t charge; /* drawn on cfg->deflate.budget for the zlib streams */
} zstate;

/* Frees c->z with its streams and gives back what it drew on
 * cfg->deflate.budget (conn.c). NULL is fine; c->z is NULL after. */
void herald__z_free(herald_conn *c);

/* Laid out to fit 104 bytes, which malloc serves from a 112-byte chunk:
 * what an idle, open connection holds is this struct alone (docs/design.md,
 * "Memory per connection"). */
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

  zstate *z; /* NULL: no permessage-deflate */
  outq *o;   /* NULL: no output since the last trim (nor a held pong) */
  handshake *hs;
};

#if UINTPTR_MAX == UINT64_MAX
/* An idle connection's cost must not grow (see above). */
_Static_assert(sizeof(struct herald_conn) == 104, "herald_conn grew");
#endif

/* ------------------------------------------------------------------------ */
/* Memory and randomness (conn.c)                                            */
/* ------------------------------------------------------------------------ */

/* malloc/realloc/free, for a config whose mem is NULL. */
extern const herald_mem herald__libc_mem;

static inline const herald_mem *herald__mem(const herald_conn *c) {
  return c->cfg->mem ? c->cfg->mem : &herald__libc_mem;
}
static inline void *herald__alloc(herald_conn *c, size_t n) {
  const herald_mem *m = herald__mem(c);
  return m->malloc(n, m->user_data);
}
static inline void *herald__realloc(herald_conn *c, void *p, size_t n) {
  const herald_mem *m = herald__mem(c);
  return m->realloc(p, n, m->user_data);
}
static inline void herald__free(herald_conn *c, void *p) {
  if (p != NULL) {
    const herald_mem *m = herald__mem(c);
    m->free(p, m->user_data);
  }
}

/* Fills buf with len random bytes from cfg->random or the core's own
 * source (client role: keys and masks). Returns 0 or nonzero on failure. */
int herald__random(herald_conn *c, void *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* The shared budget for unfinished messages (budget.c)                      */
/* ------------------------------------------------------------------------ */

struct herald_budget {
  _Atomic uint64_t used;
  _Atomic uint64_t refused;
  uint64_t limit; /* 0: none */
  herald_mem mem;
};

/* Draws n bytes on b: returns 1, or 0 (and counts a refusal) when that would
 * pass the limit, leaving it unchanged. A compare-and-swap loop, so two
 * threads racing near the limit are not both refused when one of them
 * fits. */
static inline int herald__budget_take(herald_budget *b, uint64_t n) {
  uint64_t cur = atomic_load_explicit(&b->used, memory_order_relaxed);
  do {
    if (b->limit != 0 && (n > b->limit || cur > b->limit - n)) {
      atomic_fetch_add_explicit(&b->refused, 1, memory_order_relaxed);
      return 0;
    }
  } while (!atomic_compare_exchange_weak_explicit(
      &b->used, &cur, cur + n, memory_order_relaxed, memory_order_relaxed));
  return 1;
}

/* Gives n bytes drawn with herald__budget_take() back. */
static inline void herald__budget_give(herald_budget *b, uint64_t n) {
  atomic_fetch_sub_explicit(&b->used, n, memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* State transitions called from the other files (conn.c)                    */
/* ------------------------------------------------------------------------ */

/* Fails the connection (RFC 6455 7.1.7): records the sticky error and its
 * static reason, queues the answer the peer is owed (a close frame, or an
 * HTTP refusal during a server's handshake) and moves to CLOSED. Returns err,
 * so callers can `return herald__fail(...)`. */
int herald__fail(herald_conn *c, int err, const char *reason);

/* Server: refuses an invalid upgrade request with an HTTP status (400, or
 * 426 with the version we speak, RFC 6455 4.2.2 and 4.4), the same way:
 * sticky HERALD_ERR_HANDSHAKE, CLOSED. Returns HERALD_ERR_HANDSHAKE. */
int herald__refuse(herald_conn *c, int status, const char *reason);

/* ------------------------------------------------------------------------ */
/* Opening handshake (handshake.c)                                           */
/* ------------------------------------------------------------------------ */

/* RD_REQUEST / RD_RESPONSE: read a head from in[0..inlen). Return the bytes
 * consumed (0: the head is incomplete) and fill *ev with HERALD_EV_REQUEST or
 * HERALD_EV_OPEN once a head is complete and valid, or fail the connection.
 * The caller makes the transition that follows the event. */
int herald__hs_read_request(herald_conn *c, uint8_t *in, size_t inlen,
                            herald_event *ev);
int herald__hs_read_response(herald_conn *c, uint8_t *in, size_t inlen,
                             herald_event *ev);

/* Frees the handshake state (NULL is fine) and clears F_HS_STALE. */
void herald__hs_free(herald_conn *c);

/* The answers and the client's request: each checks its arguments and queues
 * its text, or returns an error with nothing queued and nothing changed. The
 * state checks and transitions are the callers', in conn.c. */
int herald__hs_accept(herald_conn *c, const herald_accept *opts);
int herald__hs_respond(herald_conn *c, int status, const herald_header *h,
                       size_t nheaders, const void *body, size_t bodylen,
                       int keep_alive);
int herald__hs_stream_head(herald_conn *c, int status, const herald_header *h,
                           size_t nheaders);
int herald__hs_request(herald_conn *c, const herald_client_opts *o);

/* Checks reason and headers (no CR/LF, header names are tokens) of a
 * refusal, then queues it; see herald__queue_http. */
int herald__hs_reject(herald_conn *c, int status, const char *reason,
                      const herald_header *h, size_t nheaders);

/* Queues a complete HTTP response with a plain-text body (reason and a
 * newline) and "Connection: close". extra: raw header lines ("Name:
 * value\r\n"), or NULL. No argument checks. */
int herald__queue_http(herald_conn *c, int status, const char *reason,
                       const char *extra, const herald_header *h,
                       size_t nheaders);

/* ------------------------------------------------------------------------ */
/* Frames in (reader.c)                                                      */
/* ------------------------------------------------------------------------ */

/* RD_HEAD: one frame header, then a data frame's payload as far as it is in
 * the buffer, or a whole control frame. RD_PAYLOAD: more of a data frame's
 * payload. RD_INFLATE: the next inflated chunk, no input consumed. Each
 * returns the bytes consumed (0: needs more input) with at most one event in
 * *ev, or an error (the connection has failed). A close frame is reported as
 * HERALD_EV_CLOSE and the caller makes the transition. */
int herald__read_frame(herald_conn *c, uint8_t *in, size_t inlen,
                       herald_event *ev);
int herald__read_payload(herald_conn *c, uint8_t *in, size_t inlen,
                         herald_event *ev);
int herald__read_inflate(herald_conn *c, herald_event *ev);

/* RD_PAYLOAD of a whole-mode, uncompressed message whose buffer has room
 * for the rest of the frame: that rest (the bytes a caller may read in
 * place at mbuf + mlen, herald_conn_recv_room), else 0. */
size_t herald__placed_room(const herald_conn *c);
/* Takes n (1..herald__placed_room) payload bytes read in place at mbuf +
 * mlen. Returns as herald__read_payload(). */
int herald__read_placed(herald_conn *c, size_t n, herald_event *ev);

/* Frees the message buffer and gives its bytes back to the budget: between
 * messages, or when the message in it will never be delivered. */
void herald__mbuf_free(herald_conn *c);

/*
 * The commonest input: a whole short message from a client in one frame,
 * entirely in the buffer, between messages. Its shape passes the structural
 * checks of herald__read_frame() by construction, so they are skipped: FIN
 * with no RSV bit and a text or binary opcode (RFC 6455 5.2), masked as a
 * client's frames must be (5.1), no fragmented message in progress (5.4), a
 * 7-bit length (nothing to check for minimal encoding). Everything else a
 * frame is checked for (the limits, UTF-8) herald__read_short() checks with
 * the same code as herald__read_frame(), with the same effects and errors.
 */
static inline int herald__frame_is_short(const herald_conn *c,
                                         const uint8_t *in, size_t inlen) {
  return c->reader == RD_HEAD && c->role == HERALD_ROLE_SERVER && inlen >= 6 &&
         (in[0] == (0x80 | HERALD_OP_TEXT) ||
          in[0] == (0x80 | HERALD_OP_BINARY)) &&
         (in[1] & 0x80) && (in[1] & 0x7f) < 126 &&
         inlen - 6 >= (size_t)(in[1] & 0x7f) && c->mop == 0;
}

/* RD_HEAD with herald__frame_is_short(c, in, inlen): reads that frame.
 * Returns as herald__read_frame(). */
int herald__read_short(herald_conn *c, uint8_t *in, herald_event *ev);

/* ------------------------------------------------------------------------ */
/* Frames out (sender.c)                                                     */
/* ------------------------------------------------------------------------ */

/* The size herald_frame_header() writes for a payload of len bytes. */
static inline size_t herald__frame_header_len(uint64_t len, int masked) {
  return 2 + (len < 126 ? 0 : len <= 0xffff ? 2 : 8) + (masked ? 4 : 0);
}

/* herald_frame_header(), inlined into the send paths (where a constant fin,
 * rsv and mask reduce it to a few stores). */
static inline size_t herald__frame_header(uint8_t *out, herald_opcode op,
                                          int fin, unsigned rsv, uint64_t len,
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

/* Queues one complete frame (RSV bits rsv) whose payload is copied, and
 * masked when we are the client. Returns 0, HERALD_ERR_NOMEM or
 * HERALD_ERR_INTERNAL (no random key), with nothing queued on error. */
int herald__queue_frame(herald_conn *c, herald_opcode op, int fin, unsigned rsv,
                        const void *data, size_t len);

/* Queues a close frame with code and reason (code 0: an empty close), after
 * a pong the peer is still owed, and sets F_CLOSE_SENT. No checks of code or
 * reason. Returns 0 or an error with no close queued. */
int herald__queue_close(herald_conn *c, uint16_t code, const char *reason,
                        size_t reasonlen);

/* ------------------------------------------------------------------------ */
/* Output queue (outq.c)                                                     */
/* ------------------------------------------------------------------------ */

/* Room for one more entry, or n more bytes at the end of obuf. Return 0 or
 * HERALD_ERR_NOMEM. Reserving bytes may move the inline bytes (never the
 * external ones) and drops the written part of an inline head entry. */
int herald__out_reserve_entry(herald_conn *c);
int herald__out_reserve_bytes(herald_conn *c, size_t n);

/* herald__out_append() when its short case does not apply. */
uint8_t *herald__out_append_slow(herald_conn *c, size_t n, int ends_frame);

/* Returns a pointer to n fresh bytes at the end of the output, which the
 * caller fills at once, or NULL (out of memory). ends_frame: the bytes end a
 * frame (or an HTTP text). Complete frames are merged into the previous entry
 * when it also ends on a frame boundary and is contiguous, so many small
 * frames make one iovec. The common cases (the bytes fit, and extend the last
 * entry, as every frame after the first of a burst does, or start a drained
 * queue again, as each reply of a ping-pong does) cost a few
 * instructions. */
static inline uint8_t *herald__out_append(herald_conn *c, size_t n,
                                          int ends_frame) {
  outq *o = c->o;
  if (o != NULL && o->ocap_bytes - o->olen >= n) {
    if (o->ocount > 0) {
      oentry *last = &o->ent[o->ohead + o->ocount - 1];
      if (last->ext == NULL && last->ends_frame && !last->pong &&
          last->off + last->len == o->olen) {
        uint8_t *p = o->obuf + o->olen;
        last->len += n;
        last->ends_frame = (uint8_t)ends_frame;
        o->olen += n;
        o->ototal += n;
        return p;
      }
    } else if (o->ohead < o->ocap) {
      uint8_t *p = o->obuf + o->olen;
      o->ent[o->ohead] =
          (oentry){NULL, o->olen, n, NULL, NULL, (uint8_t)ends_frame, 0, 0, 0};
      o->ocount = 1;
      o->olen += n;
      o->ototal += n;
      return p;
    }
  }
  return herald__out_append_slow(c, n, ends_frame);
}

/* Queues the caller's bytes p[0..n) in place, as a frame's end; release(ctx)
 * once written. Returns 0 or HERALD_ERR_NOMEM (nothing queued). */
int herald__out_append_ext(herald_conn *c, const uint8_t *p, size_t n,
                           herald_release_fn release, void *ctx);

/* Takes back the last n bytes appended with herald__out_append(). */
void herald__out_truncate(herald_conn *c, size_t n);

/* Answers a ping whose payload is p[0..len) (RFC 6455 5.5.2): queues its
 * pong at the first frame boundary not yet written (a pong never waits
 * behind queued data) while fewer than cfg->max_pending_pongs pongs wait
 * unwritten and none is held. Otherwise holds it in pongbuf
 * (F_PONG_PENDING), replacing a pong held for an earlier ping (5.5.3): what
 * a peer's pings can make the core hold is max_pending_pongs + 1 pongs.
 * Returns 0 or an error (HERALD_ERR_NOMEM, or HERALD_ERR_INTERNAL when a
 * client has no masking key), nothing queued or held. */
int herald__out_pong(herald_conn *c, const uint8_t *p, size_t len);

/* Queues the held pong (F_PONG_PENDING) once fewer than max_pending_pongs
 * wait, or at once when force is set (before our close frame). Returns 0 or
 * an error (the pong stays held). */
int herald__out_flush_pong(herald_conn *c, int force);

/* Calls the release callbacks of every queued entry and frees the queue. */
void herald__out_del(herald_conn *c);

#endif
