/*
 * ws_send.c - what the application queues on a connection: messages,
 * fragments, encode-once frames, pings and the close frame, each handed to
 * the core within the send limits (the hard cap and its slow-consumer
 * policy, the high-water mark and backpressure), and how many bytes are
 * still waiting. A server's graceful shutdown closes here too. Writing the
 * queued bytes to the socket is ws.c's (herald__ws_flush).
 */
#include <stddef.h>
#include <stdint.h>

#include "rt/internal.h"
#include "rt/tls.h"

/* The part of every send around the core's queueing: refuse on a dead
 * connection or past the hard cap, then mark the connection for the flush
 * and report backpressure. queue() is the core call; release(ctx) is called
 * exactly once on every failure (the core calls it itself on success). */
static int ws_send_with(herald_ws *ws, size_t len, herald_release_fn release,
                        void *ctx, int (*queue)(herald_ws *, const void *),
                        const void *arg) {
  if (ws->flags & WS_DEAD) {
    if (release) {
      release(ctx);
    }
    return HERALD_ERR_CLOSED;
  }
  size_t buffered = herald_conn_output_size(ws->conn);
  if (buffered + len > ws->ep->limits->send_hard_cap) {
    if (release) {
      release(ctx);
    }
    if (ws->ep->limits->slow_policy == HERALD_SLOW_CLOSE) {
      herald__ws_record_error(ws, "slow consumer");
      herald_ws_close(ws, HERALD_CLOSE_POLICY, "slow consumer", 13);
    }
    return HERALD_SEND_DROPPED;
  }
  int rv = queue(ws, arg);
  if (rv != 0) {
    if (release) {
      release(ctx);
    }
    return rv;
  }
  herald__mark_dirty(ws);
  if (buffered + len > ws->ep->limits->send_high_water) {
    ws->flags |= WS_BACKPRESSURE;
    return HERALD_SEND_BACKPRESSURE;
  }
  return HERALD_SEND_OK;
}

typedef struct send_args {
  herald_opcode op;
  const void *data;
  size_t len;
  int fin, compressed;
  herald_release_fn release;
  void *ctx;
} send_args;

static int queue_message(herald_ws *ws, const void *arg) {
  const send_args *a = arg;
  unsigned flags = a->fin ? 0 : HERALD_SEND_MORE;
  /* A payload in the read buffer, sent back on the connection being read
   * (an echo, a reply quoting the request): the core references it, the
   * write right after the read sends most of it, and ws_read makes the
   * core copy what is left before the buffer is read into again. */
  herald_loop *loop = ws->loop;
  uintptr_t lo = (uintptr_t)loop->rin, p = (uintptr_t)a->data;
  if (loop->reading == ws && a->release == NULL && p >= lo &&
      a->len <= loop->rin_len && p - lo <= loop->rin_len - a->len) {
    flags |= HERALD_SEND_BORROW;
  }
  return herald_conn_send(ws->conn, a->op, a->data, a->len, flags, a->release,
                          a->ctx);
}

static int queue_frame(herald_ws *ws, const void *arg) {
  const send_args *a = arg;
  return herald_conn_send_frame(ws->conn, a->data, a->len, a->compressed,
                                a->release, a->ctx);
}

static int ws_send(herald_ws *ws, herald_opcode op, const void *data,
                   size_t len, int fin, herald_release_fn release, void *ctx) {
  send_args a = {op, data, len, fin, 0, release, ctx};
  return ws_send_with(ws, len, release, ctx, queue_message, &a);
}

HERALD_API int herald_ws_send(herald_ws *ws, herald_opcode op, const void *data,
                              size_t len) {
  return ws_send(ws, op, data, len, 1, NULL, NULL);
}

HERALD_API int herald_ws_send_ref(herald_ws *ws, herald_opcode op,
                                  const void *data, size_t len,
                                  herald_release_fn release, void *ctx) {
  return ws_send(ws, op, data, len, 1, release, ctx);
}

HERALD_API int herald_ws_send_frame(herald_ws *ws, const uint8_t *frame,
                                    size_t len, int compressed,
                                    herald_release_fn release, void *ctx) {
  send_args a = {HERALD_OP_TEXT, frame, len, 1, compressed, release, ctx};
  return ws_send_with(ws, len, release, ctx, queue_frame, &a);
}

HERALD_API int herald_ws_send_fragment(herald_ws *ws, herald_opcode op,
                                       const void *data, size_t len, int fin) {
  return ws_send(ws, op, data, len, fin, NULL, NULL);
}

HERALD_API int herald_ws_ping(herald_ws *ws, const void *data, size_t len) {
  if (ws->flags & WS_DEAD) {
    return HERALD_ERR_CLOSED;
  }
  int rv = herald_conn_ping(ws->conn, data, len);
  if (rv == 0) {
    herald__mark_dirty(ws);
  }
  return rv;
}

HERALD_API int herald_ws_close(herald_ws *ws, uint16_t code, const char *reason,
                               size_t reasonlen) {
  if (ws->flags & WS_DEAD) {
    return HERALD_ERR_CLOSED;
  }
  int rv = herald_conn_close(ws->conn, code, reason, reasonlen);
  if (rv != 0) {
    return rv;
  }
  if (!(ws->flags & WS_CLOSE_REMOTE)) {
    ws->close_code = code ? code : HERALD_CLOSE_NO_STATUS;
  }
  herald__mark_dirty(ws);
  uint32_t grace = ws->ep->limits->close_timeout_ms;
  herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
  return 0;
}

/* Graceful server shutdown: open connections get 1001, the rest end now. */
void herald__ws_shutdown(herald_ws *ws) {
  if (ws->flags & WS_DEAD) {
    return;
  }
  herald_state st = herald_conn_state(ws->conn);
  if (st == HERALD_STATE_OPEN) {
    herald_ws_close(ws, HERALD_CLOSE_GOING_AWAY, "server shutting down", 20);
  } else if (st == HERALD_STATE_CONNECTING || (ws->flags & WS_SHUTDOWN)) {
    herald__ws_abort(ws, "server shutting down");
  }
}

HERALD_API size_t herald_ws_buffered(const herald_ws *ws) {
  return herald_conn_output_size(ws->conn) +
         (ws->tls ? herald__tls_pending(ws) : 0);
}
