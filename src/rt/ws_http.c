/*
 * ws_http.c - plain HTTP requests on a server's port. ws.c hands over each
 * request that is not an upgrade; here it meets the server's handler (or a
 * 426 when there is none), its body is collected, across reads if need be
 * and within max_http_body, and the handler is called. The answer comes
 * now or later, whole (herald_http_respond) or streamed
 * (herald_http_stream, _write, _end); "Connection: close" or HTTP/1.0 ends
 * the connection after it, and the connection takes the next request
 * otherwise.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rt/internal.h"

/* ---- requests ----------------------------------------------------------- */

/* Returns 1 if the request wants the connection closed after the answer. */
static int wants_close(const herald_request *req) {
  herald_str v;
  if (herald_header_find(req->headers, req->nheaders, "connection", &v)) {
    size_t pos = 0;
    herald_str tok;
    while (herald_list_next(v, &pos, &tok)) {
      if (tok.len == 5 && strncasecmp(tok.ptr, "close", 5) == 0) {
        return 1;
      }
      if (tok.len == 10 && strncasecmp(tok.ptr, "keep-alive", 10) == 0) {
        return 0;
      }
    }
  }
  return req->version_minor == 0;
}

/* The plain-HTTP handler of the connection's owner (a server's); 0 when
 * there is none. */
static int ws_http_handler(herald_ws *ws, herald_http_fn *fn, void **ud) {
  ws_cold *k = ws->cold;
  return k && k->owner && k->owner->http && k->owner->http(ws, fn, ud);
}

/* A request was answered and the connection stays open for the next one:
 * that one gets the whole handshake timeout (slowloris), counted from now,
 * whether this answer came inside the handler or later. */
static void next_request_deadline(herald_ws *ws) {
  uint32_t t = ws->ep->limits->handshake_timeout_ms;
  if (t && !(ws->flags & WS_DEAD) &&
      herald_conn_state(ws->conn) == HERALD_STATE_CONNECTING) {
    herald__wheel_set(ws, herald__now(ws->loop) + t);
  }
}

/* Calls the handler (herald__ws_http_request made sure there is one). */
static void ws_call_http(herald_ws *ws, const herald_request *req,
                         const uint8_t *body, size_t bodylen) {
  herald_http_fn fn = NULL;
  void *ud = NULL;
  (void)ws_http_handler(ws, &fn, &ud);
  herald_http *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    herald_conn_respond(ws->conn, 503, NULL, 0, NULL, 0, 0);
    return;
  }
  h->ws = ws;
  h->keep_alive = !wants_close(req);
  ws->cold->http = h;
  h->in_call = 1;
  fn(h, req, body, bodylen, ud);
  h->in_call = 0;
  if (h->ended) {
    free(h); /* herald_http_end() ran inside the handler */
    return;
  }
  if (h->streaming) {
    return; /* h lives until herald_http_end() */
  }
  if (h->responded) {
    free(h);
  } else if (ws->cold && ws->cold->http == h) {
    h->responded = -1; /* answered later: herald_http_respond frees it */
    ws->flags |= WS_READ_PAUSED;
    herald__ws_update_events(ws);
  } else {
    /* The connection died inside the handler. */
    h->responded = -1;
  }
}

long herald__ws_http_request(herald_ws *ws, const herald_request *req,
                             uint8_t *buf, size_t avail) {
  herald_http_fn fn = NULL;
  void *ud = NULL;
  if (!ws_http_handler(ws, &fn, &ud)) {
    static const char msg[] = "this endpoint speaks WebSocket only\n";
    herald_header h = {{"Upgrade", 7}, {"websocket", 9}};
    herald_conn_respond(ws->conn, 426, &h, 1, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  /* The head parser has already refused every framing but one valid
   * Content-Length (RFC 9112 6.3: repeated or invalid Content-Length,
   * Transfer-Encoding), so the body is exactly content_length bytes, or
   * none when it is absent. The check below only guards that contract. */
  uint64_t clen = 0;
  if (req->content_length.len > 0 &&
      herald_http_content_length(req->content_length, &clen) != 0) {
    static const char msg[] = "invalid Content-Length\n";
    herald_conn_respond(ws->conn, 400, NULL, 0, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  if (clen > ws->ep->limits->max_http_body) {
    static const char msg[] = "request body too large\n";
    herald_conn_respond(ws->conn, 413, NULL, 0, msg, sizeof(msg) - 1, 0);
    return -1;
  }
  if (clen <= avail) {
    ws_call_http(ws, req, buf, (size_t)clen);
    if (!(ws->flags & WS_READ_PAUSED)) {
      next_request_deadline(ws); /* answered inside the handler */
    }
    return (long)clen;
  }
  /* The body spans reads: keep head and body together in one buffer, and
   * parse the head again from there once the body is complete. */
  size_t head = req->head_len;
  ws_cold *k = ws->cold;
  k->body = malloc(head + (size_t)clen);
  if (k->body == NULL) {
    herald_conn_respond(ws->conn, 503, NULL, 0, NULL, 0, 0);
    return -1;
  }
  memcpy(k->body, buf - head, head + avail);
  k->body_len = head + avail;
  k->body_need = head + (size_t)clen;
  return (long)avail;
}

/* The body is complete in cold->body: replay the head, call the handler. */
static void ws_body_complete(herald_ws *ws) {
  herald_event ev;
  ws_cold *k = ws->cold;
  uint8_t *body = k->body;
  size_t total = k->body_need;
  k->body = NULL;
  k->body_len = k->body_need = 0;
  if (herald_conn_reset(ws->conn) == 0 &&
      herald_conn_recv(ws->conn, body, total, &ev) > 0 &&
      ev.type == HERALD_EV_REQUEST) {
    size_t head = ev.request->head_len;
    ws_call_http(ws, ev.request, body + head, total - head);
    if (!(ws->flags & WS_READ_PAUSED)) {
      next_request_deadline(ws);
    }
  }
  free(body);
}

long herald__ws_http_body(herald_ws *ws, const uint8_t *buf, size_t len) {
  ws_cold *k = ws->cold;
  size_t take = k->body_need - k->body_len;
  if (take > len) {
    take = len;
  }
  memcpy(k->body + k->body_len, buf, take);
  k->body_len += take;
  if (k->body_len < k->body_need) {
    return -1;
  }
  ws_body_complete(ws);
  return (long)take;
}

void herald__ws_http_gone(herald_ws *ws) {
  ws_cold *k = ws->cold;
  herald_http *h = k->http;
  h->ws = NULL; /* a late herald_http_respond() is discarded */
  k->http = NULL;
  if (h->streaming && h->on_gone) {
    h->on_gone(h, h->gone_ud);
  }
}

/* ---- answers ------------------------------------------------------------ */

HERALD_API int herald_http_respond(herald_http *h, int status,
                                   const herald_header *headers,
                                   size_t nheaders, const void *body,
                                   size_t bodylen) {
  if (h->responded > 0) {
    return HERALD_ERR_BAD_STATE;
  }
  int later = h->responded < 0;
  herald_ws *ws = h->ws;
  if (ws == NULL) {
    free(h);
    return 0;
  }
  int rv = herald_conn_respond(ws->conn, status, headers, nheaders, body,
                               bodylen, h->keep_alive);
  if (rv != 0) {
    return rv;
  }
  ws->cold->http = NULL;
  herald__mark_dirty(ws);
  if (later) {
    free(h);
    next_request_deadline(ws);
    herald__ws_mark_resume(ws);
  } else {
    h->responded = 1;
  }
  return 0;
}

/* ---- streamed HTTP responses -------------------------------------------- */

HERALD_API int herald_http_stream(herald_http *h, int status,
                                  const herald_header *headers, size_t nheaders,
                                  void (*on_gone)(herald_http *h, void *ud),
                                  void *ud) {
  if (h->responded > 0 || h->streaming) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_ws *ws = h->ws;
  if (ws == NULL) {
    return HERALD_ERR_CLOSED;
  }
  int rv = herald_conn_stream_start(ws->conn, status, headers, nheaders);
  if (rv != 0) {
    return rv;
  }
  int later = h->responded < 0;
  h->streaming = 1;
  h->responded = 1;
  h->on_gone = on_gone;
  h->gone_ud = ud;
  /* The stream has no deadline of its own: the handshake timer must not cut
   * it. Keepalive is the application's (SSE comments). */
  herald__wheel_set(ws, 0);
  if (later) {
    herald__ws_mark_resume(ws);
  }
  herald__mark_dirty(ws);
  return 0;
}

HERALD_API int herald_http_write(herald_http *h, const void *data, size_t len) {
  if (!h->streaming) {
    return HERALD_ERR_BAD_STATE;
  }
  herald_ws *ws = h->ws;
  if (ws == NULL || (ws->flags & WS_DEAD)) {
    return HERALD_ERR_CLOSED;
  }
  size_t buffered = herald_ws_buffered(ws);
  if (buffered + len > ws->ep->limits->send_hard_cap) {
    return HERALD_SEND_DROPPED;
  }
  int rv = herald_conn_stream_write(ws->conn, data, len);
  if (rv != 0) {
    return rv;
  }
  herald__mark_dirty(ws);
  return buffered + len > ws->ep->limits->send_high_water
             ? HERALD_SEND_BACKPRESSURE
             : HERALD_SEND_OK;
}

HERALD_API void herald_http_end(herald_http *h) {
  herald_ws *ws = h->ws;
  if (ws != NULL && h->streaming) {
    ws->cold->http = NULL;
    if (herald_conn_stream_end(ws->conn) == 0) {
      herald__mark_dirty(ws);
      uint32_t grace = ws->ep->limits->close_timeout_ms;
      herald__wheel_set(ws, herald__now(ws->loop) + (grace ? grace : 1000));
    }
  } else if (ws != NULL) {
    ws->cold->http = NULL;
  }
  h->ws = NULL;
  if (h->in_call) {
    h->ended = 1; /* freed when the handler returns */
    return;
  }
  free(h);
}
