/*
 * conn.c - the WebSocket connection state machine (RFC 6455).
 *
 * There are two machines, each one enum (conn_int.h), and every transition
 * of either is made in this file; the one exception is a data frame's own
 * progress through RD_HEAD -> RD_PAYLOAD (-> RD_INFLATE) -> RD_HEAD, which
 * reader.c advances as the frame's bytes arrive. The other files parse and
 * build bytes and report what they found; this file decides what it means
 * for the connection.
 *
 *   herald_state (public, RFC 6455 section 7), as seen from this endpoint:
 *
 *     CONNECTING --accept / 101 received--> OPEN --close()--> CLOSING
 *     OPEN, CLOSING --peer's close frame--> CLOSED (we answer at once)
 *     CLOSING --close() after the peer's close--> CLOSED
 *     any --failure, refusal, recv_eof, plain HTTP done--> CLOSED
 *
 *   enum reader (private): what the input side waits for next.
 *
 *     server: RD_REQUEST --head--> RD_DECIDE --accept--> RD_HEAD
 *                                  RD_DECIDE --reset, respond keep-alive-->
 *                                    RD_REQUEST
 *                                  RD_DECIDE --reject, respond, stream-->
 *                                    RD_DISCARD
 *     client: RD_IDLE --client_start--> RD_RESPONSE --101--> RD_HEAD
 *     frames: RD_HEAD <-> RD_PAYLOAD <-> RD_INFLATE (reader.c)
 *             RD_HEAD --peer's close frame--> RD_DISCARD
 *     any --failure--> RD_FAILED (sticky: every call returns conn->err)
 *     any but RD_FAILED --recv_eof--> RD_DISCARD
 *
 * step() is the one switch over the reader. A failure anywhere goes through
 * herald__fail(), which records the error and its reason (citing the RFC
 * section the peer broke) once and for all.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/conn_int.h"
#include "core/deflate.h"

/* ------------------------------------------------------------------------ */
/* Memory and randomness                                                     */
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
const herald_mem herald__libc_mem = {libc_malloc, libc_realloc, libc_free,
                                     NULL};

/* The default source reads getrandom(2) 256 bytes at a time into a
 * thread-local pool, so masking a frame costs no syscall in the common case.
 * The kernel's CSPRNG output is used as is (RFC 6455 10.3 asks for a strong
 * source of entropy for masking keys). */
static int default_random(void *buf, size_t len) {
  static _Thread_local uint8_t pool[256];
  static _Thread_local size_t avail;
  uint8_t *out = buf;
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

int herald__random(herald_conn *c, void *buf, size_t len) {
  if (c->cfg->random != NULL) {
    return c->cfg->random(buf, len, c->cfg->random_user_data);
  }
  return default_random(buf, len);
}

/* ------------------------------------------------------------------------ */
/* Config                                                                    */
/* ------------------------------------------------------------------------ */

HERALD_API void herald_config_init(herald_config *cfg, herald_role role) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->role = role;
  cfg->max_head_bytes = 8192;
  cfg->max_headers = 64;
  cfg->max_frame_size = 16u << 20;
  cfg->max_message_size = 16u << 20;
  cfg->max_fragments = 65536;
  cfg->max_pending_pongs = 64;
  cfg->copy_threshold = 1024;
  cfg->deflate.server_max_window_bits = 15;
  cfg->deflate.client_max_window_bits = 15;
  cfg->deflate.threshold = 64;
  cfg->deflate.level = 3;
  cfg->deflate.mem_level = 8;
  cfg->deflate.fast_min_size = 4096;
}

HERALD_API int herald_close_code_valid(uint32_t code) {
  /* RFC 6455 7.4.1 and 7.4.2; 1012-1014 are registered with IANA. 1004 is
   * reserved, 1005/1006/1015 must never be sent. */
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */
/* ------------------------------------------------------------------------ */

HERALD_API int herald_conn_new(herald_conn **pconn, const herald_config *cfg) {
  if (pconn == NULL || cfg == NULL ||
      (cfg->role != HERALD_ROLE_SERVER && cfg->role != HERALD_ROLE_CLIENT) ||
      cfg->max_headers == 0 || cfg->max_head_bytes == 0 ||
      cfg->max_pending_pongs == 0) {
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
  const herald_mem *mem = cfg->mem ? cfg->mem : &herald__libc_mem;
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
  herald__out_del(c);
  herald__hs_free(c);
  herald__mbuf_free(c);
  herald__z_free(c);
  herald__free(c, c);
}

void herald__z_free(herald_conn *c) {
  if (c->z == NULL) {
    return;
  }
  herald__free(c, c->z->zbuf);
  herald__zstream_del(c->z->inf);
  herald__zstream_del(c->z->def);
  if (c->z->charge) {
    herald__budget_give(c->cfg->deflate.budget, c->z->charge);
  }
  herald__free(c, c->z);
  c->z = NULL;
}

HERALD_API void herald_conn_trim(herald_conn *c) {
  /* A held pong lives in the queue (outq.pongbuf): it stays. */
  if (c->o && c->o->ocount == 0 && !(c->flags & F_PONG_PENDING)) {
    herald__out_del(c);
  }
  if (c->mop == 0 || (c->flags & F_MSG_DELIVERED)) {
    herald__mbuf_free(c);
    c->flags &= (uint16_t)~F_MSG_DELIVERED;
    if (c->z) {
      herald__free(c, c->z->zbuf);
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

HERALD_API int herald_conn_done(const herald_conn *c) {
  return c->state == HERALD_STATE_CLOSED && herald_conn_output_size(c) == 0;
}

/* ------------------------------------------------------------------------ */
/* Failing                                                                   */
/* ------------------------------------------------------------------------ */

/* The HTTP status that answers a failed request head. */
static int http_status(int err) {
  return err == HERALD_ERR_HEAD_TOO_BIG ? 431
         : err == HERALD_ERR_NOMEM      ? 503
                                        : 400;
}

int herald__fail(herald_conn *c, int err, const char *reason) {
  c->err = (int16_t)err;
  c->reason = reason;
  c->reader = RD_FAILED;
  herald__mbuf_free(c); /* no message will be delivered */
  if (c->state == HERALD_STATE_OPEN && !(c->flags & F_CLOSE_SENT)) {
    /* RFC 6455 7.1.7: a close frame with the code that names the fault
     * (7.4.1), and the reason, which is short static ASCII text. */
    size_t rlen = strlen(reason);
    if (rlen > 123) {
      rlen = 123;
    }
    (void)herald__queue_close(c, herald_err_close_code(err), reason, rlen);
  } else if (c->state == HERALD_STATE_CONNECTING &&
             c->role == HERALD_ROLE_SERVER) {
    (void)herald__queue_http(c, http_status(err), reason, NULL, NULL, 0);
  }
  c->state = HERALD_STATE_CLOSED;
  return err;
}

int herald__refuse(herald_conn *c, int status, const char *reason) {
  c->err = HERALD_ERR_HANDSHAKE;
  c->reason = reason;
  c->reader = RD_FAILED;
  c->state = HERALD_STATE_CLOSED;
  (void)herald__queue_http(
      c, status, reason, status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL,
      NULL, 0);
  return HERALD_ERR_HANDSHAKE;
}

/* ------------------------------------------------------------------------ */
/* Receiving                                                                 */
/* ------------------------------------------------------------------------ */

/* The peer's close frame arrived (its code in the event, already checked).
 * RFC 6455 5.5.1: answer with a close frame, echoing the code, unless ours
 * went out first; either way the close handshake is done (7.1.3, 7.1.4):
 * CLOSED, later input ignored, no pong owed any more. */
static int peer_closed(herald_conn *c, uint16_t code) {
  c->flags |= F_CLOSE_RECEIVED;
  if (!(c->flags & F_CLOSE_SENT)) {
    int rv = herald__queue_close(c, code == HERALD_CLOSE_NO_STATUS ? 0 : code,
                                 "", 0);
    if (rv != 0) {
      return herald__fail(c, rv, "out of memory");
    }
  }
  c->state = HERALD_STATE_CLOSED;
  c->reader = RD_DISCARD;
  c->flags &= (uint16_t)~F_PONG_PENDING;
  return 0;
}

/* One step of the reader: consumes what it can of in[0..inlen) for the
 * current state and returns the bytes consumed (0: needs more input), with
 * at most one event in *ev, or an error. */
static int step(herald_conn *c, uint8_t *in, size_t inlen, herald_event *ev) {
  int rv;
  switch ((enum reader)c->reader) {
  case RD_REQUEST:
    rv = herald__hs_read_request(c, in, inlen, ev);
    if (ev->type == HERALD_EV_REQUEST) {
      c->reader = RD_DECIDE; /* the application answers it */
    }
    return rv;
  case RD_DECIDE:
  case RD_IDLE:
    return HERALD_ERR_BAD_STATE;
  case RD_RESPONSE:
    rv = herald__hs_read_response(c, in, inlen, ev);
    if (ev->type == HERALD_EV_OPEN) {
      c->state = HERALD_STATE_OPEN;
      c->reader = RD_HEAD;
      c->flags |= F_HS_STALE; /* ev->response points into hs until then */
    }
    return rv;
  case RD_HEAD:
    rv = herald__read_frame(c, in, inlen, ev);
    if (ev->type == HERALD_EV_CLOSE) {
      int err = peer_closed(c, ev->code);
      if (err != 0) {
        memset(ev, 0, sizeof(*ev));
        return err;
      }
    }
    return rv;
  case RD_PAYLOAD:
    return herald__read_payload(c, in, inlen, ev);
  case RD_INFLATE:
    return herald__read_inflate(c, ev);
  case RD_DISCARD:
    return (int)inlen;
  case RD_FAILED:
    return c->err;
  }
  return HERALD_ERR_INTERNAL;
}

/* Frees what the previous call's event lent the caller: a delivered
 * message's reassembly bytes (big buffers go back) and the handshake
 * state. */
HERALD__NOINLINE static void release_lent(herald_conn *c) {
  if (c->flags & F_MSG_DELIVERED) {
    c->flags &= (uint16_t)~F_MSG_DELIVERED;
    c->mlen = 0;
    if (c->mcap > 65536) {
      herald__mbuf_free(c);
    }
  }
  if (c->flags & F_HS_STALE) {
    herald__hs_free(c);
  }
}

/* Steps that consume bytes without completing an event (a data frame's
 * header, an empty fragment, part of a message being reassembled) are
 * followed by more steps, so NONE always means "all consumed, or the rest is
 * an incomplete unit". */
HERALD__NOINLINE static int steps(herald_conn *c, uint8_t *in, size_t inlen,
                                  herald_event *ev) {
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

HERALD_API int herald_conn_recv(herald_conn *c, uint8_t *in, size_t inlen,
                                herald_event *ev) {
  memset(ev, 0, sizeof(*ev));
  if (c->flags & (F_MSG_DELIVERED | F_HS_STALE)) {
    release_lent(c);
  }
  /* The count returned is an int: take at most 1 GiB per call. */
  if (inlen > (size_t)1 << 30) {
    inlen = (size_t)1 << 30;
  }
  /* The commonest input, a whole short message in one frame, in a few
   * steps (conn_int.h says which and why that is safe). */
  if (herald__frame_is_short(c, in, inlen)) {
    return herald__read_short(c, in, ev);
  }
  return steps(c, in, inlen, ev);
}

HERALD_API uint8_t *herald_conn_recv_room(herald_conn *c, size_t *room) {
  /* In RD_PAYLOAD nothing lent is pending: a delivery or an open event
   * left the reader at RD_HEAD, and the next call released it. */
  size_t n = herald__placed_room(c);
  if (n > (size_t)1 << 30) {
    n = (size_t)1 << 30; /* the count returned is an int */
  }
  *room = n;
  return n ? c->mbuf + c->mlen : NULL;
}

HERALD_API int herald_conn_recv_placed(herald_conn *c, size_t n,
                                       herald_event *ev) {
  memset(ev, 0, sizeof(*ev));
  size_t room = herald__placed_room(c);
  if (n == 0 || n > room || n > (size_t)1 << 30) {
    return HERALD_ERR_INVALID_ARG;
  }
  return herald__read_placed(c, n, ev);
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
  herald__mbuf_free(c); /* a message cut short is never delivered */
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
/* Answering a request, starting a client                                    */
/* ------------------------------------------------------------------------ */

/* The application owes an answer to a request head (HERALD_EV_REQUEST);
 * websocket: 1 for an upgrade request, 0 for a plain one. */
static int deciding(const herald_conn *c, int websocket) {
  return c->reader == RD_DECIDE && c->hs->req.websocket == websocket;
}

/* A plain HTTP answer was queued: the connection ends once it is written
 * (or, streaming, once the body is: then only the state waits). */
static void http_done(herald_conn *c, int closed) {
  herald__hs_free(c);
  if (closed) {
    c->state = HERALD_STATE_CLOSED;
  }
  c->reader = RD_DISCARD;
}

HERALD_API int herald_conn_accept(herald_conn *c, const herald_accept *opts) {
  if (!deciding(c, 1)) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald__hs_accept(c, opts);
  if (rv != 0) {
    return rv;
  }
  herald__hs_free(c);
  c->state = HERALD_STATE_OPEN; /* RFC 6455 4.2.2: once the 101 is sent */
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
  int rv = herald__hs_reject(c, status, reason, headers, nheaders);
  if (rv != 0) {
    return rv;
  }
  http_done(c, 1);
  return 0;
}

HERALD_API int herald_conn_respond(herald_conn *c, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen, int keep_alive) {
  if (!deciding(c, 0)) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald__hs_respond(c, status, headers, nheaders, body, bodylen,
                              keep_alive);
  if (rv != 0) {
    return rv;
  }
  if (keep_alive) {
    c->reader = RD_REQUEST;
  } else {
    http_done(c, 1);
  }
  return 0;
}

HERALD_API int herald_conn_reset(herald_conn *c) {
  if (!deciding(c, 0)) {
    return HERALD_ERR_BAD_STATE;
  }
  c->reader = RD_REQUEST;
  return 0;
}

/* A streaming response keeps the connection in CONNECTING with input
 * discarded: the one combination no other path produces, so it needs no
 * state of its own. It ends in CLOSED. */
static int streaming(const herald_conn *c) {
  return c->reader == RD_DISCARD && c->state == HERALD_STATE_CONNECTING;
}

HERALD_API int herald_conn_stream_start(herald_conn *c, int status,
                                        const herald_header *headers,
                                        size_t nheaders) {
  if (!deciding(c, 0)) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald__hs_stream_head(c, status, headers, nheaders);
  if (rv != 0) {
    return rv;
  }
  http_done(c, 0);
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
  uint8_t *p = herald__out_append(c, len, 1);
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

HERALD_API int herald_conn_client_start(herald_conn *c,
                                        const herald_client_opts *o) {
  if (c->reader != RD_IDLE) {
    return HERALD_ERR_BAD_STATE;
  }
  int rv = herald__hs_request(c, o);
  if (rv != 0) {
    return rv;
  }
  c->reader = RD_RESPONSE;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Closing                                                                   */
/* ------------------------------------------------------------------------ */

HERALD_API int herald_conn_close(herald_conn *c, uint16_t code,
                                 const char *reason, size_t reasonlen) {
  if (c->state == HERALD_STATE_CONNECTING) {
    return HERALD_ERR_BAD_STATE;
  }
  if (c->flags & F_CLOSE_SENT || c->state == HERALD_STATE_CLOSED) {
    return HERALD_ERR_CLOSED;
  }
  /* RFC 6455 5.5.1, 7.4: a code we may send, and a UTF-8 reason that fits
   * a control frame with it. */
  if ((code != 0 && !herald_close_code_valid(code)) ||
      (code == 0 && reasonlen > 0) || reasonlen > 123 ||
      (reasonlen > 0 &&
       (reason == NULL || !herald_utf8_valid(reason, reasonlen)))) {
    return HERALD_ERR_INVALID_ARG;
  }
  int rv = herald__queue_close(c, code, reason, reasonlen);
  if (rv != 0) {
    return rv;
  }
  /* RFC 6455 7.1.3: the close handshake is done once both closes crossed. */
  c->state = (c->flags & F_CLOSE_RECEIVED) ? HERALD_STATE_CLOSED
                                           : HERALD_STATE_CLOSING;
  return 0;
}
