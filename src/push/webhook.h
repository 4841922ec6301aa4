/* webhook.h - a webhook sender: events (small JSON objects) go to one URL in
 * signed batches, in order, retried while the receiver is down.
 *
 * One sender per receiver. Events wait in a bounded queue of their own
 * (max_queue events, max_queue_bytes bytes): an event that does not fit is
 * dropped, counted and logged, and the events already queued are kept, so
 * a receiver that comes back gets everything up to the moment the queue
 * filled. The events added during one loop pass leave together, at most
 * max_batch per request; one request is in flight at a time, so batches
 * arrive in the order their events were added.
 *
 * A batch is answered by a 2xx status. A connection error, a timeout, a
 * 5xx, 408 or 429 is retried with exponential backoff (backoff_min_ms
 * doubling to backoff_max_ms, +-25% jitter) until it succeeds, or until
 * max_attempts when that is not 0; any other status (the receiver refused
 * the batch for good) drops the batch at once. Dropped batches count their
 * events in failed_events.
 *
 * The body of a request comes from a body function: the two given here
 * write herald's {"events":[...]} and Pusher's {"time_ms":T,"events":[...]}.
 * The body is signed with HMAC-SHA256 under secret, as lowercase hex, in the
 * header signature_header; extra headers (a Pusher app key) are added as
 * given.
 *
 * Runs on one libuv loop, through an http_client (http_client.h) that the
 * caller owns and that must outlive the sender.
 */
#ifndef HERALD_PUSH_WEBHOOK_H
#define HERALD_PUSH_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "push/http_client.h"
#include "push/push.h"

/* Writes the body of one batch into out: events[0..n) are the JSON objects
 * given to push_webhook_add, each events[i] lens[i] bytes. now_ms: the wall
 * clock. Returns 0, or -1 when out of memory. */
typedef int (*push_webhook_body_fn)(push_buf *out, const char *const *events,
                                    const size_t *lens, size_t n,
                                    int64_t now_ms, void *ud);

/* {"events":[e1,e2,...]} */
int push_webhook_body_herald(push_buf *out, const char *const *events,
                             const size_t *lens, size_t n, int64_t now_ms,
                             void *ud);
/* {"time_ms":T,"events":[e1,e2,...]} (Pusher's WebHooks) */
int push_webhook_body_pusher(push_buf *out, const char *const *events,
                             const size_t *lens, size_t n, int64_t now_ms,
                             void *ud);

typedef struct push_webhook_config {
  const char *name;   /* for the log: "webhooks", "pusher" */
  const char *url;    /* http:// or https:// */
  const char *secret; /* HMAC-SHA256 key; NULL: requests are not signed */
  const char *signature_header; /* "X-Herald-Signature" */
  const char *const *headers;   /* more "Name: value" lines, or NULL */
  size_t nheaders;
  push_webhook_body_fn body; /* NULL: push_webhook_body_herald */
  void *body_ud;
  size_t max_queue;                        /* events waiting; default 10000 */
  size_t max_queue_bytes;                  /* their bytes; default 64 MiB */
  size_t max_batch;                        /* events per request; default 100 */
  uint32_t timeout_ms;                     /* per request; default 5000 */
  uint32_t backoff_min_ms, backoff_max_ms; /* default 100, 30000 */
  uint32_t max_attempts; /* per batch; 0 (default): until it succeeds */
} push_webhook_config;

/* Fills the defaults above (url and secret NULL, herald's body). */
void push_webhook_config_init(push_webhook_config *cfg);

typedef struct push_webhook_stats {
  uint64_t sent_events;        /* events a receiver acknowledged (2xx) */
  uint64_t requests;           /* requests made, retries included */
  uint64_t failed;             /* requests that failed (no 2xx) */
  uint64_t retries;            /* requests that were a retry */
  uint64_t dropped;            /* events refused: the queue was full */
  uint64_t failed_events;      /* events given up: refused for good, or
                                  max_attempts reached */
  size_t queued, queued_bytes; /* waiting now, the batch in flight included */
} push_webhook_stats;

typedef struct push_webhook push_webhook;

/* Creates a sender. Strings in cfg are copied. Returns NULL with a message
 * in err (no url, a url that is not http(s), out of memory). */
push_webhook *push_webhook_new(uv_loop_t *loop, push_http_client *http,
                               const push_webhook_config *cfg, char *err,
                               size_t errlen);

/* Drops what is queued (counted as dropped) and frees the sender once its
 * handles are closed; a request in flight is abandoned (its answer is
 * ignored). NULL is allowed. */
void push_webhook_del(push_webhook *w);

/* Queues one event: json[0..len) must be one JSON object (copied; not
 * checked). Returns 0, or -1 when it was dropped (queue full, or out of
 * memory): counted, and logged at most once a second. */
int push_webhook_add(push_webhook *w, const char *json, size_t len);

void push_webhook_get_stats(const push_webhook *w, push_webhook_stats *st);

/* HMAC-SHA256 of p[0..n) under key, as 64 lowercase hex digits and a NUL.
 * Returns 0 or -1. */
int push_webhook_sign(const char *key, const char *p, size_t n, char out[65]);

#endif
