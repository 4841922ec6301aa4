/* http_client.h - outgoing HTTP requests of `herald serve`: the backend
 * proxy (proxy.c) and webhooks (webhook.c).
 *
 * libcurl's multi-socket interface, driven by the server's libuv loop: curl
 * tells which sockets to watch (one uv_poll_t each) and when to wake it (one
 * uv_timer_t); nothing blocks and no thread is started by us (curl's
 * threaded resolver may start its own). Connections to the same host are
 * kept alive and reused between requests.
 *
 * Only http:// and https:// URLs are followed, redirects are not, and a
 * response body larger than the request's max_response is cut off and
 * reported as PUSH_HTTP_TOO_BIG. Every request ends with its callback
 * exactly once, on the loop's thread: with the response, or with the
 * reason there is none (timeout, connection refused, cancelled).
 *
 * Everything runs on one loop; no function may be called from another
 * thread.
 */
#ifndef HERALD_PUSH_HTTP_CLIENT_H
#define HERALD_PUSH_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct push_http_client push_http_client;

/* Why a request got no usable response. */
typedef enum push_http_status {
  PUSH_HTTP_OK = 0,        /* a response arrived: see status */
  PUSH_HTTP_TIMEOUT = -1,  /* no complete response within timeout_ms */
  PUSH_HTTP_CONNECT = -2,  /* could not connect (refused, DNS, TLS) */
  PUSH_HTTP_TOO_BIG = -3,  /* the body passed max_response */
  PUSH_HTTP_FAILED = -4,   /* any other transfer error */
  PUSH_HTTP_CANCELLED = -5 /* the client was deleted first */
} push_http_status;

typedef struct push_http_response {
  push_http_status outcome;
  int status;       /* the HTTP status code; 0 without a response */
  const char *body; /* the response body (valid during the callback) */
  size_t len;
  const char *why; /* curl's error text, "" when outcome is OK */
  uint64_t elapsed_us;
} push_http_response;

typedef void (*push_http_cb)(void *ud, const push_http_response *res);

/* One request to make. Strings are copied by push_http_post. */
typedef struct push_http_request {
  const char *url;
  /* Header lines "Name: value". A "Content-Type: application/json" is
   * added unless one is given. */
  const char *const *headers;
  size_t nheaders;
  const char *body;
  size_t len;
  uint32_t timeout_ms; /* the whole request, connecting included */
  size_t max_response; /* body bytes kept; more is PUSH_HTTP_TOO_BIG */
} push_http_request;

/* Creates a client on loop. Returns NULL with a message in err. */
push_http_client *push_http_client_new(uv_loop_t *loop, char *err,
                                       size_t errlen);

/* Calls every pending request's callback with PUSH_HTTP_CANCELLED, then
 * closes the handles; the memory goes once libuv has closed them. NULL is
 * allowed. */
void push_http_client_del(push_http_client *hc);

/* Starts a POST. Returns 0 (cb will be called once, never before this
 * returns), or -1 when out of memory or the client is being deleted (cb is
 * not called). */
int push_http_post(push_http_client *hc, const push_http_request *req,
                   push_http_cb cb, void *ud);

/* Requests started and not yet answered. */
size_t push_http_in_flight(const push_http_client *hc);

/* A name for an outcome, for logs: "ok", "timeout", "connect", ... */
const char *push_http_outcome_name(push_http_status s);

#endif
