/*
 * ws_event.c - what the core makes of a connection's input, handed on: the
 * upgrade routed to its endpoint, messages, pings, pongs and the peer's
 * close frame into the endpoint's callbacks, a plain request to ws_http.c,
 * a protocol failure into the close that answers it, and the input the
 * core leaves unconsumed kept for the next read. Reading the socket is
 * ws.c's.
 */
#include <stdlib.h>
#include <string.h>

#include "rt/internal.h"

/* Keeps buf[0..len) for the next read. */
static int ws_keep_tail(herald_ws *ws, const uint8_t *buf, size_t len) {
  ws_cold *k = ws->cold;
  if (len == 0) {
    if (k) {
      if (k->tail_cap > 4096) {
        free(k->tail);
        k->tail = NULL;
        k->tail_cap = 0;
      }
      k->tail_len = 0;
    }
    return 0;
  }
  if ((k = herald__ws_cold(ws)) == NULL) {
    return -1;
  }
  if (len > k->tail_cap) {
    uint8_t *t = realloc(k->tail, len);
    if (t == NULL) {
      return -1;
    }
    k->tail = t;
    k->tail_cap = len;
  }
  memmove(k->tail, buf, len);
  k->tail_len = len;
  return 0;
}

static void ws_on_upgrade(herald_ws *ws, const herald_request *req) {
  ws_cold *k = ws->cold;
  const ws_endpoint *ep =
      k && k->owner && k->owner->route ? k->owner->route(ws, req->path) : NULL;
  if (ep == NULL) {
    herald_conn_reject(ws->conn, 404, "no WebSocket endpoint at this path",
                       NULL, 0);
    return;
  }
  ws->ep = ep;
  const herald_ws_callbacks *cb = &ep->cb;
  void *ud = ep->ud;
  herald_accept acc = {0};
  int status = cb->on_upgrade ? cb->on_upgrade(ws, req, &acc, ud) : 0;
  if (status != 0) {
    if (status < 400 || status > 599) {
      status = 403;
    }
    herald_conn_reject(ws->conn, status, NULL, NULL, 0);
    return;
  }
  if (herald_conn_accept(ws->conn, &acc) != 0) {
    herald_conn_reject(ws->conn, 500, "could not accept", NULL, 0);
    return;
  }
  if (acc.subprotocol) {
    ws->cold->subprotocol = strdup(acc.subprotocol);
  }
  if (cb->on_chunk) {
    herald_conn_set_streaming(ws->conn, 1);
  }
  ws->flags |= WS_OPEN | WS_TRIM;
  ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
  herald__ws_arm_timers(ws);
  if (cb->on_open) {
    cb->on_open(ws, ud);
  }
}

static void ws_on_ping(herald_ws *ws, const herald_event *ev) {
  uint16_t sec = (uint16_t)(herald__now(ws->loop) / 1000);
  if (sec != ws->ping_window) {
    ws->ping_window = sec;
    ws->pings_in_window = 0;
  }
  if (ws->pings_in_window < UINT16_MAX) {
    ws->pings_in_window++;
  }
  if (ws->ep->limits->max_pings_per_sec &&
      ws->pings_in_window > ws->ep->limits->max_pings_per_sec) {
    herald__ws_record_error(ws, "ping flood");
    herald_ws_close(ws, HERALD_CLOSE_POLICY, "ping flood", 10);
    return;
  }
  if (ws->ep->cb.on_ping) {
    ws->ep->cb.on_ping(ws, ev->data, ev->len, ws->ep->ud);
  }
}

static void ws_on_close_frame(herald_ws *ws, const herald_event *ev) {
  ws->close_code = ev->code;
  ws->flags |= WS_CLOSE_REMOTE;
  if (ev->len > 0) {
    ws_cold *k = herald__ws_cold(ws);
    /* Out of memory, on_close reports no reason. */
    if (k && k->close_reason == NULL && (k->close_reason = malloc(ev->len))) {
      memcpy(k->close_reason, ev->data, ev->len);
      k->close_reason_len = ev->len;
    }
  }
}

static void ws_dispatch(herald_ws *ws, const herald_event *ev) {
  switch (ev->type) {
  case HERALD_EV_OPEN:
    ws->flags |= WS_OPEN | WS_TRIM;
    ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
    if (herald_conn_state(ws->conn) == HERALD_STATE_OPEN) {
      herald__ws_arm_timers(ws);
    }
    if (ev->response->protocol.len) {
      ws->cold->subprotocol =
          strndup(ev->response->protocol.ptr, ev->response->protocol.len);
    }
    if (ws->ep->cb.on_chunk) {
      herald_conn_set_streaming(ws->conn, 1);
    }
    if (ws->ep->cb.on_open) {
      ws->ep->cb.on_open(ws, ws->ep->ud);
    }
    break;
  case HERALD_EV_TEXT:
  case HERALD_EV_BINARY: {
    herald_opcode op =
        ev->type == HERALD_EV_TEXT ? HERALD_OP_TEXT : HERALD_OP_BINARY;
    if (ws->ep->cb.on_chunk) {
      ws->ep->cb.on_chunk(ws, op, ev->data, ev->len, ev->first, ev->fin,
                          ws->ep->ud);
    } else if (ws->ep->cb.on_message) {
      ws->ep->cb.on_message(ws, op, ev->data, ev->len, ws->ep->ud);
    }
    break;
  }
  case HERALD_EV_PING:
    ws_on_ping(ws, ev);
    break;
  case HERALD_EV_PONG:
    if (ws->flags & WS_PING_SENT) {
      ws->flags &= (uint16_t)~WS_PING_SENT;
      ws->ping_sent_at = (uint32_t)herald__now(ws->loop);
      herald__ws_arm_timers(ws);
    }
    if (ws->ep->cb.on_pong) {
      ws->ep->cb.on_pong(ws, ev->data, ev->len, ws->ep->ud);
    }
    break;
  case HERALD_EV_CLOSE:
    ws_on_close_frame(ws, ev);
    break;
  default:
    break;
  }
}

/* The core failed the connection (rv < 0) and queued its answer (close
 * frame or HTTP error); flushing it ends the connection. */
static void ws_recv_failed(herald_ws *ws, int rv) {
  herald__ws_record_error(ws, herald_conn_error_reason(ws->conn));
  if (ws->close_code == 0) {
    uint16_t code = herald_err_close_code(rv);
    ws->close_code = code ? code : HERALD_CLOSE_ABNORMAL;
  }
  /* Bytes in a ring send (io_uring) are gone from the core's count but not
   * yet written: they are the answer too. */
  if (herald_conn_output_size(ws->conn) == 0 && !(ws->io.armed & IO_SENDING)) {
    herald__ws_abort(ws, herald_conn_error_reason(ws->conn));
  } else {
    uint32_t grace = ws->ep->limits->close_timeout_ms;
    herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
  }
}

/* Hands the core n payload bytes read in place (herald_conn_recv_room) and
 * delivers the message they complete, if they do. */
void herald__ws_process_placed(herald_ws *ws, size_t n) {
  herald_event ev;
  int rv = herald_conn_recv_placed(ws->conn, n, &ev);
  if (rv < 0) {
    ws_recv_failed(ws, rv);
  } else if (ev.type != HERALD_EV_NONE) {
    ws_dispatch(ws, &ev);
  }
}

/* Feeds buf[0..len) to the core and delivers the events. What the core
 * leaves unconsumed is kept as the tail for the next read. */
void herald__ws_process(herald_ws *ws, uint8_t *buf, size_t len) {
  size_t off = 0;
  while (!(ws->flags & (WS_DEAD | WS_READ_PAUSED))) {
    ws_cold *k = ws->cold;
    if (k && k->body) {
      long used = herald__ws_http_body(ws, buf + off, len - off);
      if (used < 0) {
        off = len; /* all of it went into the body, which needs more */
        break;
      }
      off += (size_t)used;
      continue;
    }
    herald_event ev;
    int rv = herald_conn_recv(ws->conn, buf + off, len - off, &ev);
    if (rv < 0) {
      ws_recv_failed(ws, rv);
      off = len;
      break;
    }
    off += (size_t)rv;
    if (ev.type == HERALD_EV_NONE) {
      break;
    }
    if (ev.type == HERALD_EV_REQUEST) {
      if (ev.request->websocket) {
        ws_on_upgrade(ws, ev.request);
      } else {
        long used =
            herald__ws_http_request(ws, ev.request, buf + off, len - off);
        if (used < 0) {
          off = len; /* refused with Connection: close */
          break;
        }
        off += (size_t)used;
      }
      continue;
    }
    ws_dispatch(ws, &ev);
  }
  if (!(ws->flags & WS_DEAD) && ws_keep_tail(ws, buf + off, len - off) != 0) {
    herald__ws_abort(ws, "out of memory");
  }
}
