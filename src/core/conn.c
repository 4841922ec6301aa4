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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "core/base64.h"
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
  F_STREAM_NEXT = 1 << 8     /* messages from the next one on are streamed */
};

/* One output entry. ext == NULL: bytes [off, off+len) of obuf. */
typedef struct oentry {
  const uint8_t *ext;
  size_t off;
  size_t len;
  herald_release_fn release;
  void *ctx;
  int ends_frame;
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

struct herald_conn {
  const herald_config *cfg;
  const herald_mem *mem;
  uint8_t role;
  uint8_t state;  /* herald_state */
  uint8_t reader; /* enum reader */
  uint16_t flags;
  int err;            /* sticky error once RD_FAILED */
  const char *reason; /* static text for err */

  /* Frame being received. */
  uint8_t fop; /* opcode of the current data frame */
  uint8_t ffin;
  uint8_t fmasked;
  uint8_t mask_off;
  uint8_t mask[4];
  uint64_t fremain; /* payload bytes still to come in this frame */

  /* Message being received. mop == 0: none in progress. */
  uint8_t mop;
  uint8_t mfirst; /* streaming: the next chunk is the message's first */
  uint32_t nfrags;
  uint32_t utf8;
  uint64_t msize;
  uint8_t *mbuf; /* whole mode: reassembly buffer */
  size_t mlen, mcap;

  /* Output. */
  oentry *ent; /* entries [ohead, ohead + ocount) are pending */
  uint32_t ohead, ocount, ocap;
  size_t odone;  /* bytes of ent[ohead] already written */
  size_t ototal; /* pending bytes in all entries */
  uint8_t *obuf;
  size_t olen, ocap_bytes;
  uint8_t sop;      /* opcode of the message being sent in fragments */
  uint8_t *pongbuf; /* [0] = length, then up to 125 payload bytes */

  handshake *hs;
};

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

static void *mem_alloc(herald_conn *c, size_t n) {
  return c->mem->malloc(n, c->mem->user_data);
}
static void *mem_realloc(herald_conn *c, void *p, size_t n) {
  return c->mem->realloc(p, n, c->mem->user_data);
}
static void mem_free(herald_conn *c, void *p) {
  if (p != NULL) {
    c->mem->free(p, c->mem->user_data);
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
}

HERALD_API int herald_close_code_valid(uint32_t code) {
  /* RFC 6455 7.4.1 and 7.4.2; 1012-1014 are registered with IANA. 1004 is
   * reserved, 1005/1006/1015 must never be sent. */
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

HERALD_API size_t herald_frame_header(uint8_t *out, herald_opcode op, int fin,
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

/* ------------------------------------------------------------------------ */
/* Output queue                                                              */
/* ------------------------------------------------------------------------ */

/* Makes room for one more entry at the end of the pending range. */
static int out_reserve_entry(herald_conn *c) {
  if (c->ohead > 0 && c->ohead + c->ocount == c->ocap) {
    memmove(c->ent, c->ent + c->ohead, c->ocount * sizeof(oentry));
    c->ohead = 0;
  }
  if (c->ohead + c->ocount < c->ocap) {
    return 0;
  }
  uint32_t ncap = c->ocap ? c->ocap * 2 : 8;
  oentry *n = mem_realloc(c, c->ent, ncap * sizeof(oentry));
  if (n == NULL) {
    return HERALD_ERR_NOMEM;
  }
  c->ent = n;
  c->ocap = ncap;
  return 0;
}

/* Makes room for n more bytes at the end of obuf. When growing, first
 * slides the live bytes down over what was already written. */
static int out_reserve_bytes(herald_conn *c, size_t n) {
  if (c->ocap_bytes - c->olen >= n) {
    return 0;
  }
  size_t lo = c->olen;
  for (uint32_t i = c->ohead; i < c->ohead + c->ocount; i++) {
    if (c->ent[i].ext == NULL) {
      size_t start = c->ent[i].off + (i == c->ohead ? c->odone : 0);
      if (start < lo) {
        lo = start;
      }
    }
  }
  if (lo > 0) {
    memmove(c->obuf, c->obuf + lo, c->olen - lo);
    c->olen -= lo;
    for (uint32_t i = c->ohead; i < c->ohead + c->ocount; i++) {
      if (c->ent[i].ext == NULL) {
        if (i == c->ohead) {
          /* The written part of the head entry is gone: drop it. */
          c->ent[i].off += c->odone;
          c->ent[i].len -= c->odone;
          c->odone = 0;
        }
        c->ent[i].off -= lo;
      }
    }
    if (c->ocap_bytes - c->olen >= n) {
      return 0;
    }
  }
  size_t need = c->olen + n;
  size_t ncap = c->ocap_bytes ? c->ocap_bytes : 256;
  while (ncap < need) {
    ncap *= 2;
  }
  uint8_t *nb = mem_realloc(c, c->obuf, ncap);
  if (nb == NULL) {
    return HERALD_ERR_NOMEM;
  }
  c->obuf = nb;
  c->ocap_bytes = ncap;
  return 0;
}

/* Returns a pointer to n fresh bytes at the end of the output, which the
 * caller fills at once. ends_frame: the bytes end a frame (or a handshake).
 * Complete frames are merged into the previous entry when it also ends on a
 * frame boundary and is contiguous, so many small frames make one iovec. */
static uint8_t *out_append(herald_conn *c, size_t n, int ends_frame) {
  if (out_reserve_bytes(c, n) != 0 || out_reserve_entry(c) != 0) {
    return NULL;
  }
  uint8_t *p = c->obuf + c->olen;
  oentry *last = c->ocount ? &c->ent[c->ohead + c->ocount - 1] : NULL;
  if (last && last->ext == NULL && last->ends_frame &&
      last->off + last->len == c->olen) {
    last->len += n;
    last->ends_frame = ends_frame;
  } else {
    c->ent[c->ohead + c->ocount] =
        (oentry){NULL, c->olen, n, NULL, NULL, ends_frame};
    c->ocount++;
  }
  c->olen += n;
  c->ototal += n;
  return p;
}

static int out_append_ext(herald_conn *c, const uint8_t *p, size_t n,
                          herald_release_fn release, void *ctx) {
  int rv = out_reserve_entry(c);
  if (rv != 0) {
    return rv;
  }
  c->ent[c->ohead + c->ocount] = (oentry){p, 0, n, release, ctx, 1};
  c->ocount++;
  c->ototal += n;
  return 0;
}

/* Queues one complete frame whose payload is copied (and masked when we are
 * the client). */
static int out_frame_copy(herald_conn *c, herald_opcode op, int fin,
                          const void *data, size_t len) {
  uint8_t key[4];
  const uint8_t *mask = NULL;
  if (c->role == HERALD_ROLE_CLIENT) {
    if (get_random(c, key, 4) != 0) {
      return HERALD_ERR_INTERNAL;
    }
    mask = key;
  }
  uint8_t hdr[HERALD_MAX_FRAME_HEADER];
  size_t hlen = herald_frame_header(hdr, op, fin, 0, len, mask);
  uint8_t *p = out_append(c, hlen + len, 1);
  if (p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memcpy(p, hdr, hlen);
  if (len > 0) {
    if (mask) {
      herald__mask_copy(p + hlen, data, len, key, 0);
    } else {
      memcpy(p + hlen, data, len);
    }
  }
  return 0;
}

static void out_release_all(herald_conn *c) {
  for (uint32_t i = c->ohead; i < c->ohead + c->ocount; i++) {
    if (c->ent[i].release) {
      c->ent[i].release(c->ent[i].ctx);
    }
  }
  c->ohead = c->ocount = 0;
  c->ototal = c->olen = c->odone = 0;
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
  uint32_t k = c->ohead;
  if (c->ocount > 0 && (c->odone > 0 || (c->flags & F_HEAD_MID_FRAME))) {
    while (k < c->ohead + c->ocount && !c->ent[k].ends_frame) {
      k++;
    }
    k++; /* after the entry that ends the frame in progress */
  }
  uint8_t *p = c->obuf + c->olen;
  memcpy(p, hdr, hlen);
  if (mask) {
    herald__mask_copy(p + hlen, c->pongbuf + 1, len, key, 0);
  } else {
    memcpy(p + hlen, c->pongbuf + 1, len);
  }
  uint32_t end = c->ohead + c->ocount;
  memmove(&c->ent[k + 1], &c->ent[k], (end - k) * sizeof(oentry));
  c->ent[k] = (oentry){NULL, c->olen, hlen + len, NULL, NULL, 1};
  c->ocount++;
  c->olen += hlen + len;
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
  int n = 0;
  for (uint32_t i = c->ohead; i < c->ohead + c->ocount && n < iovcnt; i++) {
    const oentry *e = &c->ent[i];
    size_t skip = i == c->ohead ? c->odone : 0;
    const uint8_t *base = e->ext ? e->ext : c->obuf + e->off;
    iov[n].iov_base = (void *)(base + skip);
    iov[n].iov_len = e->len - skip;
    n++;
  }
  return n;
}

HERALD_API int herald_conn_output_consumed(herald_conn *c, size_t n) {
  if (n > c->ototal) {
    return HERALD_ERR_INVALID_ARG;
  }
  c->ototal -= n;
  while (n > 0) {
    oentry *e = &c->ent[c->ohead];
    size_t left = e->len - c->odone;
    if (n < left) {
      c->odone += n;
      break;
    }
    n -= left;
    c->odone = 0;
    if (e->ends_frame) {
      c->flags &= (uint16_t)~F_HEAD_MID_FRAME;
    } else {
      c->flags |= F_HEAD_MID_FRAME;
    }
    if (e->release) {
      e->release(e->ctx);
    }
    c->ohead++;
    c->ocount--;
  }
  if (c->ocount == 0) {
    c->ohead = 0;
    c->olen = 0;
    c->odone = 0;
    /* Keep small buffers for the next burst; return big ones. */
    if (c->ocap_bytes > 16384) {
      mem_free(c, c->obuf);
      c->obuf = NULL;
      c->ocap_bytes = 0;
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
  if (c->ocount == 0) {
    mem_free(c, c->obuf);
    c->obuf = NULL;
    c->ocap_bytes = 0;
    mem_free(c, c->ent);
    c->ent = NULL;
    c->ocap = 0;
  }
  if (c->mop == 0 || (c->flags & F_MSG_DELIVERED)) {
    mem_free(c, c->mbuf);
    c->mbuf = NULL;
    c->mlen = c->mcap = 0;
    c->flags &= (uint16_t)~F_MSG_DELIVERED;
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
  const herald_mem *mem = cfg->mem ? cfg->mem : &libc_mem;
  herald_conn *c = mem->malloc(sizeof(*c), mem->user_data);
  if (c == NULL) {
    return HERALD_ERR_NOMEM;
  }
  memset(c, 0, sizeof(*c));
  c->cfg = cfg;
  c->mem = mem;
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
  mem_free(c, c->ent);
  mem_free(c, c->obuf);
  mem_free(c, c->mbuf);
  mem_free(c, c->pongbuf);
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
  if (herald__hs_check_response(&hs->resp, hs->key,
                                (const char *const *)hs->offered, hs->noffered,
                                0, &why) != 0) {
    return fail(c, HERALD_ERR_HANDSHAKE, why);
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

/*
 * Consumes up to avail bytes of the current data frame's payload at p.
 * whole: p holds this frame's entire payload and nothing of it was consumed
 * before, so a complete unfragmented message can be delivered in place.
 * Returns the bytes consumed or an error.
 */
static int read_payload(herald_conn *c, uint8_t *p, size_t avail, int whole,
                        herald_event *ev) {
  size_t n = avail < c->fremain ? avail : (size_t)c->fremain;
  if (c->fmasked) {
    c->mask_off = (uint8_t)herald__mask(p, n, c->mask, c->mask_off);
  }
  /* RFC 6455 8.1: text must be UTF-8; checked as it arrives so invalid text
   * fails on the chunk that holds the first bad byte. */
  if (c->mop == HERALD_OP_TEXT && herald__utf8_validate(&c->utf8, p, n) != 0) {
    return fail(c, HERALD_ERR_BAD_UTF8, "invalid UTF-8 in text (RFC 6455 8.1)");
  }
  c->fremain -= n;
  c->msize += n;
  int frame_done = c->fremain == 0;
  int msg_done = frame_done && c->ffin;
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
      ev->first = c->mfirst;
      ev->fin = msg_done;
      c->mfirst = 0;
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

  /* RFC 6455 5.2: RSV bits must be 0 unless an extension defines them. */
  if (rsv != 0) {
    return fail(c, HERALD_ERR_PROTO,
                "reserved bits set without an extension (RFC 6455 5.2)");
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
  uint64_t before = op == HERALD_OP_CONT ? c->msize : 0;
  if (len > c->cfg->max_message_size - before) {
    return fail(c, HERALD_ERR_TOO_BIG, "message larger than max_message_size");
  }
  if (op != HERALD_OP_CONT) {
    c->flags = (uint16_t)((c->flags & ~F_STREAM) |
                          ((c->flags & F_STREAM_NEXT) ? F_STREAM : 0));
    c->mop = (uint8_t)op;
    c->mfirst = 1;
    c->nfrags = 0;
    c->msize = 0;
    c->utf8 = HERALD_UTF8_ACCEPT;
  }
  if (++c->nfrags > c->cfg->max_fragments) {
    return fail(c, HERALD_ERR_POLICY, "more fragments than max_fragments");
  }
  c->ffin = (uint8_t)fin;
  c->fmasked = (uint8_t)masked;
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

static void build_101(text *t, const char *accept, const herald_accept *o) {
  text_puts(t, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: ");
  text_put(t, accept, 28);
  text_put(t, "\r\n", 2);
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
  text t = {NULL, 0};
  build_101(&t, accept, opts);
  t.p = out_append(c, t.len, 1);
  if (t.p == NULL) {
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  build_101(&t, accept, opts);
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

static void build_request(text *t, const herald_client_opts *o,
                          const char *key) {
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
  text t = {NULL, 0};
  build_request(&t, o, hs->key);
  t.p = out_append(c, t.len, 1);
  if (t.p == NULL) {
    hs_free(c);
    return HERALD_ERR_NOMEM;
  }
  t.len = 0;
  build_request(&t, o, hs->key);
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
  int rv = send_allowed(c);
  if (rv != 0) {
    return rv;
  }
  if ((op != HERALD_OP_TEXT && op != HERALD_OP_BINARY) ||
      (data == NULL && len > 0) || (flags & ~(unsigned)HERALD_SEND_MORE)) {
    return HERALD_ERR_INVALID_ARG;
  }
  if ((c->flags & F_FRAG_SENDING) && c->sop != op) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_opcode wire = (c->flags & F_FRAG_SENDING) ? HERALD_OP_CONT : op;
  int fin = !(flags & HERALD_SEND_MORE);
  if (release == NULL || len < c->cfg->copy_threshold ||
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
    uint32_t save_count = c->ocount;
    size_t save_len = c->olen, save_total = c->ototal;
    oentry *last = c->ocount ? &c->ent[c->ohead + c->ocount - 1] : NULL;
    oentry save_last = last ? *last : (oentry){0};
    uint8_t *p = out_append(c, hlen, 0);
    memcpy(p, hdr, hlen);
    if (out_append_ext(c, data, len, release, ctx) != 0) {
      c->ocount = save_count;
      c->olen = save_len;
      c->ototal = save_total;
      if (last) {
        *last = save_last;
      }
      return HERALD_ERR_NOMEM;
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
