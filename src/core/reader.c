/*
 * reader.c - frames in: the frame header checks, payloads, UTF-8, message
 * reassembly or streaming, inflating compressed messages, control frames.
 *
 * Input is never copied to be parsed. An incomplete frame header or control
 * frame is left unconsumed in the caller's buffer (the caller presents it
 * again with more bytes); data payloads are consumed as they arrive,
 * unmasked in place, validated, and either delivered directly (zero-copy: a
 * whole unfragmented message in one buffer, or any chunk in streaming mode)
 * or appended to the message buffer.
 *
 * permessage-deflate (RFC 7692; negotiation and zlib in deflate.c): a
 * compressed message's payload is unmasked in place and inflated, in bounded
 * steps, into the message buffer (whole mode, never past max_message_size)
 * or into one 16 KiB chunk at a time (streaming mode; the rest of the input
 * is left unconsumed, masked again, for the next call). The inflated bytes
 * are what UTF-8 validation and max_message_size see.
 *
 * Each check exists once: check_limits() holds the limits of a data frame,
 * start_message() starts every message, text_check() gives every UTF-8
 * verdict and deliver() makes every message event. The short path
 * (herald__read_short) uses the same four, and skips only the header checks
 * its shape makes redundant (conn_int.h).
 *
 * The reader moves itself between RD_HEAD, RD_PAYLOAD and RD_INFLATE as a
 * frame's bytes arrive; every other transition is conn.c's.
 */
#include <string.h>

#include "core/conn_int.h"
#include "core/deflate.h"
#include "core/mask.h"
#include "core/utf8.h"

#define ZCHUNK 16384 /* streaming: inflated bytes per event */

/* ------------------------------------------------------------------------ */
/* Shared by every path                                                      */
/* ------------------------------------------------------------------------ */

/* RFC 6455 8.1: text is UTF-8. Checked as it arrives, so invalid text fails
 * on the chunk that holds the first bad byte. p[0..n) continues the message;
 * last: the message ends there. Returns 0 or an error. */
static inline int text_check(herald_conn *c, const uint8_t *p, size_t n,
                             int last) {
  if (c->mop != HERALD_OP_TEXT) {
    return 0;
  }
  if (n > 0 && herald__utf8_validate(&c->utf8, p, n) != 0) {
    return herald__fail(c, HERALD_ERR_BAD_UTF8,
                        "invalid UTF-8 in text (RFC 6455 8.1)");
  }
  if (last && c->utf8 != HERALD_UTF8_ACCEPT) {
    return herald__fail(c, HERALD_ERR_BAD_UTF8,
                        "text ends inside a UTF-8 sequence (RFC 6455 8.1)");
  }
  return 0;
}

/* Fills *ev with the message in progress, or in streaming mode a chunk of
 * it: data[0..len); fin: the last chunk, which ends the message. */
static inline void deliver(herald_conn *c, herald_event *ev, uint8_t *data,
                           size_t len, int fin) {
  ev->type = c->mop == HERALD_OP_TEXT ? HERALD_EV_TEXT : HERALD_EV_BINARY;
  ev->data = data;
  ev->len = len;
  ev->first = (c->flags & F_MFIRST) != 0; /* always 1 in whole mode */
  ev->fin = fin;
  c->flags &= (uint16_t)~F_MFIRST;
  if (fin) {
    c->mop = 0;
  }
}

/* ---- the message buffer ------------------------------------------------ */

/* Whole mode reassembles a message in mbuf. With a budget, while a message
 * is in it, the buffer counts at its full capacity against cfg->budget
 * (F_CHARGED), from the first byte put there until the message is delivered
 * or never will be (herald__mbuf_free). Without one, none of this costs more
 * than a test. */

/* Gives the buffer's bytes back: its message was delivered. */
static inline void mbuf_uncharge(herald_conn *c) {
  if (c->flags & F_CHARGED) {
    c->flags &= (uint16_t)~F_CHARGED;
    herald__budget_give(c->cfg->budget, c->mcap);
  }
}

void herald__mbuf_free(herald_conn *c) {
  mbuf_uncharge(c);
  herald__free(c, c->mbuf);
  c->mbuf = NULL;
  c->mlen = c->mcap = 0;
}

/* Makes the buffer hold at least ncap bytes and draws on the budget for
 * them. Returns 0, or HERALD_ERR_BUSY / HERALD_ERR_NOMEM with nothing
 * changed. */
static int mbuf_reserve(herald_conn *c, size_t ncap) {
  herald_budget *b = c->cfg->budget;
  if (ncap < c->mcap) {
    ncap = c->mcap;
  }
  size_t draw = b ? ncap - ((c->flags & F_CHARGED) ? c->mcap : 0) : 0;
  if (draw > 0 && !herald__budget_take(b, draw)) {
    return HERALD_ERR_BUSY;
  }
  if (ncap > c->mcap) {
    uint8_t *nb = herald__realloc(c, c->mbuf, ncap);
    if (nb == NULL) {
      if (draw > 0) {
        herald__budget_give(b, draw);
      }
      return HERALD_ERR_NOMEM;
    }
    c->mbuf = nb;
    c->mcap = ncap;
  }
  if (b) {
    c->flags |= F_CHARGED;
  }
  return 0;
}

/* Fails the connection for an error of mbuf_reserve(). */
static int mbuf_fail(herald_conn *c, int err) {
  return herald__fail(c, err,
                      err == HERALD_ERR_BUSY
                          ? "unfinished messages over the shared budget"
                          : "out of memory");
}

/* Makes room for n more payload bytes at mbuf + mlen, growing the buffer to
 * hold at least the rest of the current frame (bounded by
 * max_message_size, already checked against the frame's declared length).
 * Returns 0 or an error of mbuf_reserve(). */
static inline int mbuf_room(herald_conn *c, size_t n) {
  /* Room for the whole rest of the frame at once, so that it can be read in
   * place (herald__placed_room), even in a buffer kept from before. */
  if (c->mcap - c->mlen < n + c->fremain ||
      (!(c->flags & F_CHARGED) && c->cfg->budget != NULL)) {
    size_t ncap = c->mcap;
    if (ncap - c->mlen < n + c->fremain) {
      size_t need = c->mlen + n + (size_t)c->fremain;
      ncap = ncap ? ncap : 256;
      while (ncap < need) {
        ncap *= 2;
      }
      if (ncap > c->cfg->max_message_size && need <= c->cfg->max_message_size) {
        ncap = (size_t)c->cfg->max_message_size;
      }
    }
    return mbuf_reserve(c, ncap);
  }
  return 0;
}

/* Fills *ev with the message reassembled in the buffer, which stays the
 * caller's until the next call, and gives its bytes back. */
static inline void deliver_buffered(herald_conn *c, herald_event *ev) {
  deliver(c, ev, c->mbuf, c->mlen, 1);
  c->flags |= F_MSG_DELIVERED;
  mbuf_uncharge(c);
}

/* ------------------------------------------------------------------------ */
/* Compressed messages (RFC 7692 7.2.2)                                      */
/* ------------------------------------------------------------------------ */

/* Checks and counts n freshly inflated bytes at p. */
static int inflated(herald_conn *c, const uint8_t *p, size_t n) {
  if (n > c->cfg->max_message_size - c->msize) {
    return herald__fail(c, HERALD_ERR_TOO_BIG,
                        "inflated message larger than max_message_size");
  }
  c->msize += n;
  return text_check(c, p, n, 0);
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
      if (c->z->zbuf == NULL &&
          (c->z->zbuf = herald__alloc(c, ZCHUNK)) == NULL) {
        return herald__fail(c, HERALD_ERR_NOMEM, "out of memory");
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
      if (c->mcap == c->mlen ||
          (!(c->flags & F_CHARGED) && c->cfg->budget != NULL)) {
        size_t ncap = c->mcap;
        if (ncap == c->mlen) {
          ncap = ncap ? ncap * 2 : 4096;
          if (ncap > max) {
            ncap = (size_t)max;
          }
        }
        int rv = mbuf_reserve(c, ncap);
        if (rv != 0) {
          return mbuf_fail(c, rv);
        }
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
      return herald__fail(c, rv,
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
      return herald__fail(c, HERALD_ERR_INFLATE,
                          "invalid compressed data (RFC 7692 7.2.2)");
    }
  }
}

/* Feeds the rest of the 4-byte tail and drains the inflater. Returns 1 if
 * output is still pending (streaming: the chunk is full), 0 when the
 * message is complete, or an error. */
static int inflate_finish(herald_conn *c, size_t *have) {
  if (c->z->zend) {
    c->z->ztail = sizeof(herald__pmd_tail);
  }
  const uint8_t *t = herald__pmd_tail + c->z->ztail;
  size_t left = sizeof(herald__pmd_tail) - c->z->ztail;
  int rv = inflate_run(c, &t, &left, have);
  c->z->ztail = (uint8_t)(sizeof(herald__pmd_tail) - left);
  if (rv != 0) {
    return rv;
  }
  if (c->z->ztail < sizeof(herald__pmd_tail)) {
    return 1;
  }
  rv = text_check(c, NULL, 0, 1);
  if (rv != 0) {
    return rv;
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
    if (have > 0 || done) {
      deliver(c, ev, c->z->zbuf, have, done);
    }
  } else if (done) {
    deliver_buffered(c, ev);
  }
  if (done) {
    c->reader = RD_HEAD;
  }
}

int herald__read_inflate(herald_conn *c, herald_event *ev) {
  size_t have = 0;
  int rv = inflate_finish(c, &have);
  if (rv < 0) {
    return rv;
  }
  inflate_event(c, have, rv == 0, ev);
  return 0;
}

/* Unmasks n payload bytes at p in place (RFC 6455 5.3), continuing the
 * frame's key where the last chunk left it. */
static inline void unmask(herald_conn *c, uint8_t *p, size_t n) {
  if (c->flags & F_MASKED) {
    c->mask_off = (uint8_t)herald__mask(p, n, c->mask, c->mask_off);
  }
}

/* The compressed counterpart of read_payload: n payload bytes at p. In
 * streaming mode it may stop early with a full chunk; the bytes it did not
 * take are left masked for the next call. */
static int read_compressed(herald_conn *c, uint8_t *p, size_t n,
                           herald_event *ev) {
  uint8_t mask_off = c->mask_off;
  unmask(c, p, n);
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

/* ------------------------------------------------------------------------ */
/* Data frames                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Consumes up to avail bytes of the current data frame's payload at p.
 * whole: p holds this frame's entire payload and nothing of it was consumed
 * before, so a complete unfragmented message can be delivered in place.
 * Returns the bytes consumed or an error.
 */
static inline int read_payload(herald_conn *c, uint8_t *p, size_t avail,
                               int whole, herald_event *ev) {
  size_t n = avail < c->fremain ? avail : (size_t)c->fremain;
  if (c->mcomp) {
    return read_compressed(c, p, n, ev);
  }
  int frame_done = n == c->fremain;
  int msg_done = frame_done && (c->flags & F_FIN) != 0;
  c->fremain -= n;
  c->msize += n;
  int rv;
  if ((c->flags & F_STREAM) || (msg_done && whole && c->mlen == 0)) {
    /* Delivered where it lies: streamed, or a whole message here (zero
     * copy). */
    unmask(c, p, n);
    if ((rv = text_check(c, p, n, msg_done)) != 0) {
      return rv;
    }
    c->reader = frame_done ? RD_HEAD : RD_PAYLOAD;
    if (n > 0 || msg_done) {
      deliver(c, ev, p, n, msg_done);
    }
    return (int)n;
  }
  /* Into the message buffer, unmasked on the way: one pass over the bytes.
   * Bytes read in place (herald__read_placed) are already at its end. */
  if (n > 0) {
    if ((rv = mbuf_room(c, n)) != 0) {
      return mbuf_fail(c, rv);
    }
    uint8_t *dst = c->mbuf + c->mlen;
    if (c->flags & F_MASKED) {
      c->mask_off = (uint8_t)herald__mask_copy(dst, p, n, c->mask, c->mask_off);
    } else if (dst != p) {
      memcpy(dst, p, n);
    }
    p = dst;
  }
  if ((rv = text_check(c, p, n, msg_done)) != 0) {
    return rv;
  }
  c->mlen += n;
  c->reader = frame_done ? RD_HEAD : RD_PAYLOAD;
  if (msg_done) {
    deliver_buffered(c, ev);
  }
  return (int)n;
}

int herald__read_payload(herald_conn *c, uint8_t *in, size_t inlen,
                         herald_event *ev) {
  return read_payload(c, in, inlen, 0, ev);
}

size_t herald__placed_room(const herald_conn *c) {
  if (c->reader != RD_PAYLOAD || c->mcomp || (c->flags & F_STREAM) ||
      c->mbuf == NULL || c->fremain == 0 || c->mcap - c->mlen < c->fremain) {
    return 0;
  }
  return (size_t)c->fremain;
}

int herald__read_placed(herald_conn *c, size_t n, herald_event *ev) {
  /* The room is the rest of the frame and fits the buffer, so appending
   * the bytes where they lie moves nothing (mbuf_room has room, and
   * read_payload sees p at the buffer's end). */
  return read_payload(c, c->mbuf + c->mlen, n, 0, ev);
}

/*
 * The limits on a data frame of len bytes (RFC 6455 10.4), checked before
 * any of its payload is accepted: the frame, the message so far (compressed
 * bytes for a compressed message, whose inflated size is checked while
 * inflating), the number of frames. op CONT: the frame continues the
 * message in progress; comp: that message is compressed. Returns 0 or an
 * error.
 */
static inline int check_limits(herald_conn *c, unsigned op, int comp,
                               uint64_t len) {
  const herald_config *cfg = c->cfg;
  if (len > cfg->max_frame_size) {
    return herald__fail(c, HERALD_ERR_TOO_BIG,
                        "frame larger than max_frame_size");
  }
  if (comp) {
    /* Only the compressed bytes are bounded here, generously. */
    uint64_t max = cfg->max_message_size;
    uint64_t wire = max + max / 8 + 65536;
    wire = wire < max ? UINT64_MAX : wire;
    uint64_t before = op == HERALD_OP_CONT ? c->z->mwire : 0;
    if (len > wire - before) {
      return herald__fail(
          c, HERALD_ERR_TOO_BIG,
          "compressed message larger than max_message_size allows");
    }
  } else {
    uint64_t before = op == HERALD_OP_CONT ? c->msize : 0;
    if (len > cfg->max_message_size - before) {
      return herald__fail(c, HERALD_ERR_TOO_BIG,
                          "message larger than max_message_size");
    }
  }
  if ((op == HERALD_OP_CONT ? c->nfrags : 0) >= cfg->max_fragments) {
    return herald__fail(c, HERALD_ERR_POLICY,
                        "more fragments than max_fragments");
  }
  return 0;
}

/* Starts a message of opcode op (text or binary) with the frame just
 * checked; comp: it is compressed (RSV1 on its first frame, RFC 7692 6.1).
 * The message takes the delivery mode asked for last. Returns 0 or an error
 * (no memory for the inflater). */
static inline int start_message(herald_conn *c, unsigned op, int comp) {
  c->flags = (uint16_t)((c->flags & ~F_STREAM) |
                        ((c->flags & F_STREAM_NEXT) ? F_STREAM : 0) | F_MFIRST);
  c->mop = (uint8_t)op;
  c->nfrags = 0;
  c->msize = 0;
  c->utf8 = HERALD_UTF8_ACCEPT;
  c->mcomp = (uint8_t)comp;
  if (c->z) {
    c->z->mwire = 0;
    c->z->zend = 0;
    c->z->ztail = 0;
    if (comp && c->z->inf == NULL) {
      int rv = herald__zinflate_new(&c->z->inf, herald__mem(c), c->z->rx_bits);
      if (rv != 0) {
        return herald__fail(c, rv, "out of memory");
      }
    }
  }
  return 0;
}

/* A whole message in one short frame in the buffer: the same limits, message
 * start, UTF-8 check and event as herald__read_frame() and read_payload()
 * give it, without the frame state a frame read in parts needs. */
int herald__read_short(herald_conn *c, uint8_t *in, herald_event *ev) {
  unsigned op = in[0] & 0x0f;
  size_t len = in[1] & 0x7f;
  uint8_t *p = in + 6;
  int rv = check_limits(c, op, 0, len);
  if (rv != 0) {
    return rv;
  }
  (void)start_message(c, op, 0); /* cannot fail uncompressed */
  c->nfrags = 1;
  c->msize = len;
  herald__mask(p, len, in + 2, 0);
  rv = text_check(c, p, len, 1);
  if (rv != 0) {
    return rv;
  }
  deliver(c, ev, p, len, 1);
  return (int)(6 + len);
}

/* ------------------------------------------------------------------------ */
/* Control frames and frame headers                                          */
/* ------------------------------------------------------------------------ */

/* Handles a complete control frame whose (unmasked) payload is p[0..len). */
static int read_control(herald_conn *c, unsigned op, uint8_t *p, size_t len,
                        herald_event *ev) {
  switch (op) {
  case HERALD_OP_PING:
    /* RFC 6455 5.5.2: answer with a pong carrying the same payload, every
     * ping while fewer than max_pending_pongs wait; past that only the
     * latest (5.5.3). After our close frame nothing more may be sent, so no
     * pong then. */
    if (!(c->flags & F_CLOSE_SENT)) {
      int rv = herald__out_pong(c, p, len);
      if (rv != 0) {
        return herald__fail(c, rv,
                            rv == HERALD_ERR_NOMEM ? "out of memory"
                                                   : "no random masking key");
      }
    }
    ev->type = HERALD_EV_PING;
    break;
  case HERALD_OP_PONG:
    ev->type = HERALD_EV_PONG;
    break;
  default: { /* HERALD_OP_CLOSE; conn.c answers it */
    uint16_t code = HERALD_CLOSE_NO_STATUS;
    /* RFC 6455 5.5.1: a body, if any, starts with a 2-byte code. */
    if (len == 1) {
      return herald__fail(c, HERALD_ERR_BAD_CLOSE,
                          "close payload of 1 byte (RFC 6455 5.5.1)");
    }
    if (len >= 2) {
      code = (uint16_t)(p[0] << 8 | p[1]);
      if (!herald_close_code_valid(code)) {
        return herald__fail(c, HERALD_ERR_BAD_CLOSE,
                            "invalid close code (RFC 6455 7.4.1)");
      }
      if (!herald_utf8_valid(p + 2, len - 2)) {
        return herald__fail(c, HERALD_ERR_BAD_UTF8,
                            "close reason is not UTF-8 (RFC 6455 5.5.1)");
      }
      p += 2;
      len -= 2;
    }
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
int herald__read_frame(herald_conn *c, uint8_t *in, size_t inlen,
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
    return herald__fail(
        c, HERALD_ERR_PROTO,
        "reserved bits set without an extension (RFC 6455 5.2)");
  }
  if (rsv) {
    if (c->z == NULL) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "RSV1 set without permessage-deflate (RFC 6455 5.2)");
    }
    if (op >= 8) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "RSV1 set on a control frame (RFC 7692 6.1)");
    }
    if (op == HERALD_OP_CONT) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "RSV1 set on a continuation frame (RFC 7692 6.1)");
    }
  }
  /* RFC 6455 5.2: opcodes 3-7 and 11-15 are reserved. */
  if (!(op <= HERALD_OP_BINARY ||
        (op >= HERALD_OP_CLOSE && op <= HERALD_OP_PONG))) {
    return herald__fail(c, HERALD_ERR_PROTO, "reserved opcode (RFC 6455 5.2)");
  }
  if (op >= 8) {
    /* RFC 6455 5.5: control frames are short and never fragmented. */
    if (!fin) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "fragmented control frame (RFC 6455 5.5)");
    }
    if (len7 > 125) {
      return herald__fail(
          c, HERALD_ERR_PROTO,
          "control frame payload over 125 bytes (RFC 6455 5.5)");
    }
  } else if (op == HERALD_OP_CONT) {
    if (c->mop == 0) {
      return herald__fail(
          c, HERALD_ERR_PROTO,
          "continuation frame with no message started (RFC 6455 5.4)");
    }
  } else if (c->mop != 0) {
    return herald__fail(c, HERALD_ERR_PROTO,
                        "new message inside a fragmented one (RFC 6455 5.4)");
  }
  /* RFC 6455 5.1: clients mask every frame, servers none. */
  if (c->role == HERALD_ROLE_SERVER && !masked) {
    return herald__fail(c, HERALD_ERR_PROTO,
                        "unmasked frame from client (RFC 6455 5.1)");
  }
  if (c->role == HERALD_ROLE_CLIENT && masked) {
    return herald__fail(c, HERALD_ERR_PROTO,
                        "masked frame from server (RFC 6455 5.1)");
  }

  size_t hlen = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0);
  if (inlen < hlen) {
    return 0;
  }
  uint64_t len = len7;
  /* RFC 6455 5.2: the length in the fewest bytes, the top bit 0. */
  if (len7 == 126) {
    len = (uint64_t)in[2] << 8 | in[3];
    if (len < 126) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "length not minimally encoded (RFC 6455 5.2)");
    }
  } else if (len7 == 127) {
    len = 0;
    for (int i = 0; i < 8; i++) {
      len = len << 8 | in[2 + i];
    }
    if (len >> 63) {
      return herald__fail(c, HERALD_ERR_PROTO,
                          "64-bit length with the top bit set (RFC 6455 5.2)");
    }
    if (len <= 0xffff) {
      return herald__fail(c, HERALD_ERR_PROTO,
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

  /* Data frame: its limits, then the message it starts, then the frame. */
  int comp = op == HERALD_OP_CONT ? c->mcomp : rsv != 0;
  int rv = check_limits(c, op, comp, len);
  if (rv == 0 && op != HERALD_OP_CONT) {
    rv = start_message(c, op, comp);
  }
  if (rv != 0) {
    return rv;
  }
  if (comp) {
    c->z->mwire += len;
  }
  c->nfrags++;
  c->flags = (uint16_t)((c->flags & ~(F_FIN | F_MASKED)) | (fin ? F_FIN : 0) |
                        (masked ? F_MASKED : 0));
  if (key) {
    memcpy(c->mask, key, 4);
  }
  c->mask_off = 0;
  c->fremain = len;
  size_t avail = inlen - hlen;
  rv = read_payload(c, in + hlen, avail, avail >= len, ev);
  return rv < 0 ? rv : (int)(hlen + (size_t)rv);
}
