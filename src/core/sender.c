/*
 * sender.c - frames out: data, control and close frames, compression on
 * send, and encode-once frames shared by many connections.
 *
 * Every frame is built straight into the output queue (outq.c): its header
 * in place in front of the payload, which is copied (and masked, for a
 * client), compressed into the buffer, or referenced in place when the
 * caller lends it or it is the message just received (an echo: the queue
 * takes that message's buffer over). Whole messages at or above the deflate
 * threshold are compressed (RFC 7692 7.2.1) when permessage-deflate was agreed.
 *
 * The checks here are the caller's misuse (HERALD_ERR_INVALID_ARG,
 * HERALD_ERR_BAD_STATE, HERALD_ERR_CLOSED): nothing is sent after our close
 * frame (RFC 6455 5.5.1), control payloads fit 125 bytes (5.5), a
 * fragmented message keeps its opcode (5.4).
 */
#include <string.h>

#include "core/conn_int.h"
#include "core/deflate.h"
#include "core/mask.h"

HERALD_API size_t herald_frame_header(uint8_t *out, herald_opcode op, int fin,
                                      unsigned rsv, uint64_t len,
                                      const uint8_t *mask) {
  return herald__frame_header(out, op, fin, rsv, len, mask);
}

int herald__queue_frame(herald_conn *c, herald_opcode op, int fin, unsigned rsv,
                        const void *data, size_t len) {
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (herald__random(c, key, 4) != 0) {
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  /* The header is written in place: its size follows from len alone. */
  size_t hlen = herald__frame_header_len(len, mask != NULL);
  uint8_t *p = herald__out_append(c, hlen + len, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  herald__frame_header(p, op, fin, rsv, len, mask);
  if (len > 0) {
    if (mask) {
      herald__mask_copy(p + hlen, data, len, key, 0);
    } else {
      memcpy(p + hlen, data, len);
    }
  }
  return 0;
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
static int queue_deflated(herald_conn *c, herald_opcode op, const void *data,
                          size_t len) {
  const herald_deflate_config *dc = &c->cfg->deflate;
  if (len == 0) {
    /* RFC 7692 7.2.3.6: an empty stored block, 0x00 once the tail is gone
     * (zlib refuses a second sync flush with no input in between). */
    uint8_t z = 0;
    return herald__queue_frame(c, op, 1, 0x40, &z, 1);
  }
  if (c->z->def == NULL) {
    int rv = herald__zdeflate_new(&c->z->def, herald__mem(c), c->z->tx_bits,
                                  dc->level, dc->mem_level, dc->fast_min_size,
                                  c->z->tx_reset, dc->budget);
    if (rv != 0) {
      return rv;
    }
  }
  size_t bound = herald__zdeflate_bound(c->z->def, len);
  size_t room = HERALD_MAX_FRAME_HEADER + bound;
  uint8_t *p = herald__out_append(c, room, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  uint8_t *z = p + HERALD_MAX_FRAME_HEADER;
  int64_t zlen = herald__zdeflate(c->z->def, data, len, z, bound);
  if (zlen < 4 || memcmp(z + zlen - 4, herald__pmd_tail, 4) != 0) {
    /* The compressor may hold part of this message: start it over. */
    herald__zstream_reset(c->z->def);
    herald__out_truncate(c, room);
    return HERALD_ERR_INTERNAL;
  }
  size_t clen = (size_t)zlen - 4;
  if (c->z->tx_reset) {
    herald__zstream_reset(c->z->def);
    if (clen >= len) {
      herald__out_truncate(c, room);
      return herald__queue_frame(c, op, 1, 0, data, len);
    }
  }
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (herald__random(c, key, 4) != 0) {
      herald__out_truncate(c, room);
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  size_t hlen = herald__frame_header(hdr, op, 1, 0x40, clen, mask);
  memmove(p + hlen, z, clen);
  memcpy(p, hdr, hlen);
  if (mask) {
    herald__mask(p + hlen, clen, key, 0);
  }
  herald__out_truncate(c, room - hlen - clen);
  return 0;
}

/* Queues the header of a frame whose payload data[0..len) is referenced in
 * place (server role, so unmasked), with release(ctx) once written, or with
 * no release as a borrowed payload. Both pieces or neither. */
static int queue_referenced(herald_conn *c, herald_opcode wire, int fin,
                            const void *data, size_t len,
                            herald_release_fn release, void *ctx, int borrow) {
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  size_t hlen = herald__frame_header(hdr, wire, fin, 0, len, NULL);
  /* Reserve both pieces first so a failure leaves nothing queued. */
  if (herald__out_reserve_bytes(c, hlen) != 0 ||
      herald__out_reserve_entry(c) != 0) {
    return HERALD_ERR_NOMEM;
  }
  outq *o = c->o;
  uint32_t save_count = o->ocount;
  size_t save_len = o->olen, save_total = o->ototal;
  oentry *last = o->ocount ? &o->ent[o->ohead + o->ocount - 1] : NULL;
  oentry save_last = last ? *last : (oentry){0};
  uint8_t *p = herald__out_append(c, hlen, 0);
  memcpy(p, hdr, hlen);
  if (herald__out_append_ext(c, data, len, release, ctx) != 0) {
    o->ocount = save_count;
    o->olen = save_len;
    o->ototal = save_total;
    if (last) {
      *last = save_last;
    }
    return HERALD_ERR_NOMEM;
  }
  if (borrow) {
    o->ent[o->ohead + o->ocount - 1].borrowed = 1;
    c->flags |= F_BORROWED;
  }
  return 0;
}

/* data[0..len) lies in the message buffer of the message just delivered
 * (an echo, or a reply quoting it). */
static int delivered_message(const herald_conn *c, const void *data,
                             size_t len) {
  uintptr_t lo = (uintptr_t)c->mbuf, p = (uintptr_t)data;
  return (c->flags & F_MSG_DELIVERED) && c->mbuf != NULL && p >= lo &&
         len <= c->mlen && p - lo <= c->mlen - len;
}

/* Sends data[0..len), which lies in the delivered message's buffer, without
 * a copy: the output queue takes the buffer over (an owned entry, freed once
 * written) and the next message gets another. The delivered bytes stay where
 * they are, so ev.data is still valid until the next call. */
static int adopt_message(herald_conn *c, herald_opcode wire, int fin,
                         const void *data, size_t len) {
  int rv = queue_referenced(c, wire, fin, data, len, NULL, c->mbuf, 0);
  if (rv != 0) {
    return rv;
  }
  c->o->ent[c->o->ohead + c->o->ocount - 1].owned = 1;
  c->mbuf = NULL;
  c->mlen = c->mcap = 0;
  return 0;
}

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
    size_t hlen = herald__frame_header_len(len, 0);
    uint8_t *p = herald__out_append(c, hlen + len, 1);
    if (p == NULL) {
      return HERALD_ERR_NOMEM;
    }
    herald__frame_header(p, op, 1, 0, len, NULL);
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
  /* RFC 6455 5.4: the fragments of a message share its opcode. */
  if ((c->flags & F_FRAG_SENDING) && c->sop != op) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_opcode wire = (c->flags & F_FRAG_SENDING) ? HERALD_OP_CONT : op;
  int fin = !(flags & HERALD_SEND_MORE);
  /* RFC 7692 6: compression is per message; a fragmented message goes out
   * uncompressed, as do short ones and those the caller opts out. */
  if (c->z != NULL && c->z->tx_bits != 0 && fin && wire != HERALD_OP_CONT &&
      !(flags & HERALD_SEND_NO_COMPRESS) && len >= c->cfg->deflate.threshold) {
    rv = queue_deflated(c, op, data, len);
    if (rv == 0 && release) {
      release(ctx);
    }
    return rv;
  }
  int borrow = (flags & HERALD_SEND_BORROW) && release == NULL;
  if (release == NULL && len >= c->cfg->copy_threshold &&
      c->role == HERALD_ROLE_SERVER && delivered_message(c, data, len)) {
    rv = adopt_message(c, wire, fin, data, len);
    if (rv != 0) {
      return rv;
    }
  } else if ((release == NULL && !borrow) || len < c->cfg->copy_threshold ||
             c->role == HERALD_ROLE_CLIENT) {
    rv = herald__queue_frame(c, wire, fin, 0, data, len);
    if (rv != 0) {
      return rv;
    }
    if (release) {
      release(ctx);
    }
  } else {
    rv = queue_referenced(c, wire, fin, data, len, release, ctx, borrow);
    if (rv != 0) {
      return rv;
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
  /* RFC 6455 5.5: a control payload is at most 125 bytes. */
  if (len > 125 || (data == NULL && len > 0)) {
    return HERALD_ERR_INVALID_ARG;
  }
  return herald__queue_frame(c, op, 1, 0, data, len);
}

HERALD_API int herald_conn_ping(herald_conn *c, const void *data, size_t len) {
  return send_control(c, HERALD_OP_PING, data, len);
}

HERALD_API int herald_conn_pong(herald_conn *c, const void *data, size_t len) {
  return send_control(c, HERALD_OP_PONG, data, len);
}

int herald__queue_close(herald_conn *c, uint16_t code, const char *reason,
                        size_t reasonlen) {
  uint8_t payload[125];
  size_t len = 0;
  /* RFC 6455 5.5.1: the body, if any, is a 2-byte code and a reason. */
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
    (void)herald__out_flush_pong(c, 1);
    c->flags &= (uint16_t)~F_PONG_PENDING;
  }
  int rv = herald__queue_frame(c, HERALD_OP_CLOSE, 1, 0, payload, len);
  if (rv == 0) {
    c->flags |= F_CLOSE_SENT;
  }
  return rv;
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
    mem = &herald__libc_mem;
  }
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  if (window_bits != 0) {
    /* A fresh stream per message: no context, so any connection whose
     * agreed window is at least window_bits can take it (RFC 7692 7.1.1). */
    herald__zstream *z;
    int rv = herald__zdeflate_new(&z, mem, window_bits, level, 8, 0, 1, NULL);
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
      size_t hlen = herald__frame_header(hdr, op, 1, 0x40, clen, NULL);
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
  size_t hlen = herald__frame_header(hdr, op, 1, 0, len, NULL);
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
      mem = &herald__libc_mem;
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
    uint8_t *p = herald__out_append(c, len, 1);
    if (p == NULL) {
      return HERALD_ERR_NOMEM;
    }
    memcpy(p, frame, len);
    if (release) {
      release(ctx);
    }
    return 0;
  }
  return herald__out_append_ext(c, frame, len, release, ctx);
}
