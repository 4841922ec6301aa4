/* push_webhook_test.c - the HTTP client (libcurl on libuv) and the webhook
 * sender against a real receiver on loopback: a thread that accepts one
 * connection at a time, reads HTTP/1.1 requests (keep-alive) and answers
 * with the status the test sets. Delivery, signatures (herald's and
 * Pusher's), batching and its order, retries while the receiver is down
 * (connection refused), 5xx and timeouts retried, 4xx given up, the queue's
 * bounds, a response over max_response. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "push/http_client.h"
#include "push/log.h"
#include "push/webhook.h"
#include "test.h"

/* ---- the receiver ------------------------------------------------------ */

#define MAX_REQS 64

typedef struct receiver {
  int fd;
  int port;
  pthread_t thread;
  atomic_int listening;
  atomic_int stop;
  atomic_int status;   /* answer with this */
  atomic_int n503;     /* answer the next n requests 503 */
  atomic_int delay_ms; /* before answering */
  atomic_int big;      /* answer with a body of this many bytes */
  pthread_mutex_t mu;
  int nreqs;
  char *bodies[MAX_REQS];
  char *heads[MAX_REQS];
} receiver;

static void *serve(void *arg) {
  receiver *rc = arg;
  while (!atomic_load(&rc->stop)) {
    if (!atomic_load(&rc->listening)) {
      usleep(2000);
      continue;
    }
    int c = accept(rc->fd, NULL, NULL);
    if (c < 0) {
      continue;
    }
    struct timeval tv = {0, 200000};
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[1 << 16];
    size_t have = 0;
    while (!atomic_load(&rc->stop)) {
      ssize_t n = recv(c, buf + have, sizeof(buf) - 1 - have, 0);
      if (n == 0) {
        break;
      }
      if (n < 0) {
        continue; /* timeout: look at stop again */
      }
      have += (size_t)n;
      buf[have] = 0;
      char *end = strstr(buf, "\r\n\r\n");
      if (end == NULL) {
        continue;
      }
      size_t hlen = (size_t)(end - buf) + 4;
      char *cl = strcasestr(buf, "content-length:");
      size_t blen = cl ? strtoul(cl + 15, NULL, 10) : 0;
      if (have < hlen + blen) {
        continue;
      }
      pthread_mutex_lock(&rc->mu);
      if (rc->nreqs < MAX_REQS) {
        rc->heads[rc->nreqs] = strndup(buf, hlen);
        rc->bodies[rc->nreqs] = strndup(buf + hlen, blen);
        rc->nreqs++;
      }
      pthread_mutex_unlock(&rc->mu);
      memmove(buf, buf + hlen + blen, have - hlen - blen);
      have -= hlen + blen;
      usleep((useconds_t)atomic_load(&rc->delay_ms) * 1000);
      int st = atomic_load(&rc->status);
      if (atomic_load(&rc->n503) > 0) {
        atomic_fetch_sub(&rc->n503, 1);
        st = 503;
      }
      size_t big = (size_t)atomic_load(&rc->big);
      char head[128];
      int hl = snprintf(head, sizeof head,
                        "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n", st,
                        big ? big : 2);
      send(c, head, (size_t)hl, MSG_NOSIGNAL);
      if (big) {
        char *b = calloc(1, big);
        memset(b, 'x', big);
        send(c, b, big, MSG_NOSIGNAL);
        free(b);
      } else {
        send(c, "ok", 2, MSG_NOSIGNAL);
      }
    }
    close(c);
  }
  return NULL;
}

/* Bound, not listening yet: connections are refused until rc_listen. */
static void rc_start(receiver *rc) {
  memset(rc, 0, sizeof *rc);
  pthread_mutex_init(&rc->mu, NULL);
  atomic_store(&rc->status, 200);
  rc->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(rc->fd, (struct sockaddr *)&a, sizeof a);
  socklen_t al = sizeof a;
  getsockname(rc->fd, (struct sockaddr *)&a, &al);
  rc->port = ntohs(a.sin_port);
  struct timeval tv = {0, 100000};
  setsockopt(rc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  pthread_create(&rc->thread, NULL, serve, rc);
}

static void rc_listen(receiver *rc) {
  listen(rc->fd, 16);
  atomic_store(&rc->listening, 1);
}

static int rc_count(receiver *rc) {
  pthread_mutex_lock(&rc->mu);
  int n = rc->nreqs;
  pthread_mutex_unlock(&rc->mu);
  return n;
}

static void rc_stop(receiver *rc) {
  atomic_store(&rc->stop, 1);
  shutdown(rc->fd, SHUT_RDWR);
  pthread_join(rc->thread, NULL);
  close(rc->fd);
  for (int i = 0; i < rc->nreqs; i++) {
    free(rc->bodies[i]);
    free(rc->heads[i]);
  }
  pthread_mutex_destroy(&rc->mu);
}

/* ---- the loop ---------------------------------------------------------- */

static uv_loop_t loop;

static void on_tick(uv_timer_t *t) {
  (void)t;
}

/* Runs the loop for ms milliseconds, or until *until becomes nonzero. */
static void run_for(int ms, const int *until) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_tick, 5, 5);
  uint64_t end = uv_now(&loop) + (uint64_t)ms;
  while (uv_now(&loop) < end && !(until && *until)) {
    uv_run(&loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void run_until_requests(receiver *rc, int n, int ms) {
  uint64_t end = uv_now(&loop) + (uint64_t)ms;
  while (rc_count(rc) < n && uv_now(&loop) < end) {
    run_for(10, NULL);
  }
}

static void drain_loop(void) {
  for (int i = 0; i < 50 && uv_loop_alive(&loop); i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
}

static char url[64];

static void make_url(const receiver *rc) {
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hook", rc->port);
}

static push_webhook *new_sender(push_http_client *hc,
                                void (*tune)(push_webhook_config *)) {
  push_webhook_config cfg;
  push_webhook_config_init(&cfg);
  cfg.url = url;
  cfg.secret = "hook-secret";
  cfg.backoff_min_ms = 20;
  cfg.backoff_max_ms = 100;
  cfg.timeout_ms = 1000;
  if (tune) {
    tune(&cfg);
  }
  char err[128];
  push_webhook *w = push_webhook_new(&loop, hc, &cfg, err, sizeof err);
  CHECK(w != NULL);
  return w;
}

static void add(push_webhook *w, const char *ev) {
  CHECK_EQ(push_webhook_add(w, ev, strlen(ev)), 0);
}

/* ---- tests ------------------------------------------------------------- */

static void test_delivered_signed_batched(void) {
  receiver rc;
  rc_start(&rc);
  rc_listen(&rc);
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, NULL);
  add(w, "{\"event\":\"connect\",\"n\":1}");
  add(w, "{\"event\":\"connect\",\"n\":2}");
  add(w, "{\"event\":\"connect\",\"n\":3}");
  run_until_requests(&rc, 1, 3000);
  run_for(50, NULL);
  CHECK_EQ(rc_count(&rc), 1); /* one loop pass: one request */
  const char *want = "{\"events\":[{\"event\":\"connect\",\"n\":1},"
                     "{\"event\":\"connect\",\"n\":2},"
                     "{\"event\":\"connect\",\"n\":3}]}";
  CHECK(rc.bodies[0] && strcmp(rc.bodies[0], want) == 0);
  char sig[65], line[128];
  CHECK_EQ(push_webhook_sign("hook-secret", want, strlen(want), sig), 0);
  snprintf(line, sizeof line, "X-Herald-Signature: %s\r\n", sig);
  CHECK(rc.heads[0] && strstr(rc.heads[0], line) != NULL);
  CHECK(rc.heads[0] && strstr(rc.heads[0], "application/json") != NULL);
  /* A known vector: HMAC-SHA256("key", "The quick brown fox jumps over
   * the lazy dog"). */
  const char *fox = "The quick brown fox jumps over the lazy dog";
  CHECK_EQ(push_webhook_sign("key", fox, strlen(fox), sig), 0);
  CHECK(strcmp(sig, "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479d"
                    "bc2d1a3cd8") == 0);
  push_webhook_stats st;
  push_webhook_get_stats(w, &st);
  CHECK_EQ(st.sent_events, 3);
  CHECK_EQ(st.requests, 1);
  CHECK_EQ(st.failed, 0);
  CHECK_EQ(st.queued, 0);
  CHECK_EQ(st.queued_bytes, 0);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static void small_batches(push_webhook_config *c) {
  c->max_batch = 2;
}

static void test_batch_limit_and_order(void) {
  receiver rc;
  rc_start(&rc);
  rc_listen(&rc);
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, small_batches);
  const char *ev[] = {"{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":4}",
                      "{\"n\":5}"};
  for (int i = 0; i < 5; i++) {
    add(w, ev[i]);
  }
  run_until_requests(&rc, 3, 3000);
  run_for(50, NULL);
  CHECK_EQ(rc_count(&rc), 3);
  CHECK(strcmp(rc.bodies[0], "{\"events\":[{\"n\":1},{\"n\":2}]}") == 0);
  CHECK(strcmp(rc.bodies[1], "{\"events\":[{\"n\":3},{\"n\":4}]}") == 0);
  CHECK(strcmp(rc.bodies[2], "{\"events\":[{\"n\":5}]}") == 0);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static void test_retried_while_down(void) {
  receiver rc;
  rc_start(&rc); /* not listening: connection refused */
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, NULL);
  add(w, "{\"n\":1}");
  add(w, "{\"n\":2}");
  run_for(400, NULL);
  push_webhook_stats st;
  push_webhook_get_stats(w, &st);
  CHECK(st.failed >= 2);
  CHECK(st.retries >= 1);
  CHECK_EQ(st.sent_events, 0);
  CHECK_EQ(st.queued, 2);
  add(w, "{\"n\":3}"); /* waits behind the batch being retried */
  rc_listen(&rc);
  run_until_requests(&rc, 2, 3000);
  run_for(50, NULL);
  CHECK_EQ(rc_count(&rc), 2);
  CHECK(rc.bodies[0] &&
        strcmp(rc.bodies[0], "{\"events\":[{\"n\":1},{\"n\":2}]}") == 0);
  CHECK(rc.bodies[1] && strcmp(rc.bodies[1], "{\"events\":[{\"n\":3}]}") == 0);
  push_webhook_get_stats(w, &st);
  CHECK_EQ(st.sent_events, 3);
  CHECK_EQ(st.queued, 0);
  CHECK_EQ(st.dropped, 0);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static void test_5xx_retried_4xx_given_up(void) {
  receiver rc;
  rc_start(&rc);
  rc_listen(&rc);
  make_url(&rc);
  atomic_store(&rc.n503, 2);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, NULL);
  add(w, "{\"n\":1}");
  run_until_requests(&rc, 3, 3000);
  run_for(50, NULL);
  push_webhook_stats st;
  push_webhook_get_stats(w, &st);
  CHECK_EQ(rc_count(&rc), 3); /* 503, 503, 200: the same body each time */
  CHECK(strcmp(rc.bodies[0], rc.bodies[2]) == 0);
  CHECK_EQ(st.sent_events, 1);
  CHECK_EQ(st.retries, 2);
  CHECK_EQ(st.failed, 2);
  atomic_store(&rc.status, 400);
  add(w, "{\"n\":2}");
  run_until_requests(&rc, 4, 3000);
  run_for(200, NULL);
  push_webhook_get_stats(w, &st);
  CHECK_EQ(rc_count(&rc), 4); /* refused for good: not retried */
  CHECK_EQ(st.failed_events, 1);
  CHECK_EQ(st.queued, 0);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static void few_attempts(push_webhook_config *c) {
  c->max_attempts = 2;
  c->timeout_ms = 100;
}

static void test_timeout_and_max_attempts(void) {
  receiver rc;
  rc_start(&rc);
  rc_listen(&rc);
  make_url(&rc);
  atomic_store(&rc.delay_ms, 300);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, few_attempts);
  add(w, "{\"n\":1}");
  run_for(1500, NULL);
  push_webhook_stats st;
  push_webhook_get_stats(w, &st);
  CHECK_EQ(st.requests, 2);
  CHECK_EQ(st.failed, 2);
  CHECK_EQ(st.failed_events, 1);
  CHECK_EQ(st.queued, 0);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static void tiny_queue(push_webhook_config *c) {
  c->max_queue = 3;
  c->max_queue_bytes = 1000;
}

static void test_queue_bounds(void) {
  receiver rc;
  rc_start(&rc); /* down */
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, tiny_queue);
  add(w, "{\"n\":1}");
  add(w, "{\"n\":2}");
  add(w, "{\"n\":3}");
  CHECK_EQ(push_webhook_add(w, "{\"n\":4}", 7), -1);
  CHECK_EQ(push_webhook_add(w, "{\"n\":5}", 7), -1);
  push_webhook_stats st;
  push_webhook_get_stats(w, &st);
  CHECK_EQ(st.dropped, 2);
  CHECK_EQ(st.queued, 3);
  CHECK_EQ(st.queued_bytes, 21);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  /* The byte bound. */
  hc = push_http_client_new(&loop, err, sizeof err);
  w = new_sender(hc, tiny_queue);
  char big[900];
  memset(big, ' ', sizeof big);
  big[0] = '{';
  big[sizeof big - 1] = '}';
  CHECK_EQ(push_webhook_add(w, big, sizeof big), 0);
  CHECK_EQ(push_webhook_add(w, big, sizeof big), -1);
  push_webhook_get_stats(w, &st);
  CHECK_EQ(st.dropped, 1);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

static const char *pusher_headers[] = {"X-Pusher-Key: app-key"};

static void pusher_format(push_webhook_config *c) {
  c->body = push_webhook_body_pusher;
  c->signature_header = "X-Pusher-Signature";
  c->headers = pusher_headers;
  c->nheaders = 1;
}

static void test_pusher_format(void) {
  receiver rc;
  rc_start(&rc);
  rc_listen(&rc);
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook *w = new_sender(hc, pusher_format);
  add(w, "{\"name\":\"channel_occupied\",\"channel\":\"a\"}");
  run_until_requests(&rc, 1, 3000);
  CHECK_EQ(rc_count(&rc), 1);
  const char *b = rc.bodies[0];
  CHECK(b && strncmp(b, "{\"time_ms\":", 11) == 0);
  CHECK(b && strstr(b, ",\"events\":[{\"name\":\"channel_occupied\","
                       "\"channel\":\"a\"}]}") != NULL);
  char sig[65], line[128];
  push_webhook_sign("hook-secret", b, strlen(b), sig);
  snprintf(line, sizeof line, "X-Pusher-Signature: %s\r\n", sig);
  CHECK(strstr(rc.heads[0], line) != NULL);
  CHECK(strstr(rc.heads[0], "X-Pusher-Key: app-key\r\n") != NULL);
  push_webhook_del(w);
  push_http_client_del(hc);
  drain_loop();
  rc_stop(&rc);
}

/* ---- the HTTP client alone ---------------------------------------------- */

typedef struct got {
  int done;
  push_http_response res;
  char body[64];
} got;

static void on_got(void *ud, const push_http_response *res) {
  got *g = ud;
  g->done = 1;
  g->res = *res;
  snprintf(g->body, sizeof g->body, "%.*s", (int)res->len, res->body);
  g->res.body = g->body;
}

static void test_http_client_outcomes(void) {
  receiver rc;
  rc_start(&rc);
  make_url(&rc);
  char err[64];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_http_request req = {url, NULL, 0, "{}", 2, 1000, 100};
  got g = {0};
  /* Refused. */
  CHECK_EQ(push_http_post(hc, &req, on_got, &g), 0);
  CHECK_EQ(g.done, 0); /* never before push_http_post returns */
  CHECK_EQ(push_http_in_flight(hc), 1);
  run_for(2000, &g.done);
  CHECK_EQ(g.res.outcome, PUSH_HTTP_CONNECT);
  CHECK_EQ(g.res.status, 0);
  CHECK_EQ(push_http_in_flight(hc), 0);
  /* A response. */
  rc_listen(&rc);
  atomic_store(&rc.status, 201);
  memset(&g, 0, sizeof g);
  CHECK_EQ(push_http_post(hc, &req, on_got, &g), 0);
  run_for(2000, &g.done);
  CHECK_EQ(g.res.outcome, PUSH_HTTP_OK);
  CHECK_EQ(g.res.status, 201);
  CHECK(strcmp(g.body, "ok") == 0);
  /* Over max_response. */
  atomic_store(&rc.big, 5000);
  memset(&g, 0, sizeof g);
  CHECK_EQ(push_http_post(hc, &req, on_got, &g), 0);
  run_for(2000, &g.done);
  CHECK_EQ(g.res.outcome, PUSH_HTTP_TOO_BIG);
  atomic_store(&rc.big, 0);
  /* Timeout. */
  atomic_store(&rc.delay_ms, 400);
  req.timeout_ms = 100;
  memset(&g, 0, sizeof g);
  CHECK_EQ(push_http_post(hc, &req, on_got, &g), 0);
  run_for(2000, &g.done);
  CHECK_EQ(g.res.outcome, PUSH_HTTP_TIMEOUT);
  /* Not http(s). */
  push_http_request bad = {"file:///etc/passwd", NULL, 0, "", 0, 100, 100};
  memset(&g, 0, sizeof g);
  if (push_http_post(hc, &bad, on_got, &g) == 0) {
    run_for(2000, &g.done);
    CHECK(g.res.outcome != PUSH_HTTP_OK);
  }
  /* Cancelled by the client's deletion. */
  atomic_store(&rc.delay_ms, 300);
  req.timeout_ms = 1000;
  memset(&g, 0, sizeof g);
  CHECK_EQ(push_http_post(hc, &req, on_got, &g), 0);
  run_for(20, NULL);
  push_http_client_del(hc);
  CHECK_EQ(g.done, 1);
  CHECK_EQ(g.res.outcome, PUSH_HTTP_CANCELLED);
  drain_loop();
  rc_stop(&rc);
}

static void test_bad_url(void) {
  char err[128];
  push_http_client *hc = push_http_client_new(&loop, err, sizeof err);
  push_webhook_config cfg;
  push_webhook_config_init(&cfg);
  cfg.url = "ftp://example";
  CHECK(push_webhook_new(&loop, hc, &cfg, err, sizeof err) == NULL);
  CHECK(strstr(err, "http://") != NULL);
  cfg.url = NULL;
  CHECK(push_webhook_new(&loop, hc, &cfg, err, sizeof err) == NULL);
  push_http_client_del(hc);
  drain_loop();
}

int main(void) {
  push_log_level = PUSH_LOG_ERROR + 1; /* quiet */
  uv_loop_init(&loop);
  RUN(test_delivered_signed_batched);
  RUN(test_batch_limit_and_order);
  RUN(test_retried_while_down);
  RUN(test_5xx_retried_4xx_given_up);
  RUN(test_timeout_and_max_attempts);
  RUN(test_queue_bounds);
  RUN(test_pusher_format);
  RUN(test_http_client_outcomes);
  RUN(test_bad_url);
  drain_loop();
  CHECK_EQ(uv_loop_close(&loop), 0);
  return TEST_REPORT();
}
