/* http_client.c - libcurl's multi-socket interface on the server's libuv
 * loop (http_client.h has the contract).
 *
 * curl decides which sockets to watch and for what (socket_cb), and when it
 * next needs a call (timer_cb). Each socket gets a uv_poll_t of its own,
 * allocated here and tied to the socket with curl_multi_assign; a readable
 * or writable socket, or the timer, is reported back with
 * curl_multi_socket_action, after which finished transfers are collected
 * (collect) and their callbacks run. Callbacks run outside curl's own
 * functions, so they may start new requests.
 *
 * A poll handle is closed asynchronously (uv_close) and freed in its close
 * callback; curl may reuse the descriptor number at once, so a new socket
 * always gets a new handle.
 */
#include "push/http_client.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct hreq {
  push_http_client *hc;
  CURL *easy;
  struct curl_slist *headers;
  char *body; /* the request body (curl does not copy it) */
  char *resp;
  size_t resp_len, resp_cap, max_response;
  int too_big;
  uint64_t started_us;
  push_http_cb cb;
  void *ud;
  char err[CURL_ERROR_SIZE];
  struct hreq *prev, *next;
} hreq;

typedef struct hsock {
  uv_poll_t poll;
  push_http_client *hc;
  curl_socket_t fd;
} hsock;

struct push_http_client {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  hreq *reqs;
  size_t nreqs;
  unsigned open_handles; /* timer and polls not closed yet */
  int closing;
};

/* libcurl's global state, counted: each loop of the server may have a
 * client, and curl_global_init is not thread-safe, hence the lock (once
 * per client, never per request). */
static int global_refs;
static pthread_mutex_t global_mu = PTHREAD_MUTEX_INITIALIZER;

static int global_ref(void) {
  pthread_mutex_lock(&global_mu);
  int rv = 0;
  if (global_refs++ == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
    global_refs--;
    rv = -1;
  }
  pthread_mutex_unlock(&global_mu);
  return rv;
}

static void global_unref(void) {
  pthread_mutex_lock(&global_mu);
  if (--global_refs == 0) {
    curl_global_cleanup();
  }
  pthread_mutex_unlock(&global_mu);
}

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *push_http_outcome_name(push_http_status s) {
  switch (s) {
  case PUSH_HTTP_OK:
    return "ok";
  case PUSH_HTTP_TIMEOUT:
    return "timeout";
  case PUSH_HTTP_CONNECT:
    return "connect";
  case PUSH_HTTP_TOO_BIG:
    return "too_big";
  case PUSH_HTTP_FAILED:
    return "failed";
  case PUSH_HTTP_CANCELLED:
    return "cancelled";
  }
  return "failed";
}

static void maybe_free(push_http_client *hc) {
  if (!hc->closing || hc->open_handles > 0) {
    return;
  }
  free(hc);
  global_unref();
}

/* ---- finishing requests ------------------------------------------------ */

static void req_unlink(push_http_client *hc, hreq *r) {
  if (r->prev) {
    r->prev->next = r->next;
  } else {
    hc->reqs = r->next;
  }
  if (r->next) {
    r->next->prev = r->prev;
  }
  hc->nreqs--;
}

static void req_free(hreq *r) {
  curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->body);
  free(r->resp);
  free(r);
}

static push_http_status outcome_of(CURLcode code, const hreq *r) {
  switch (code) {
  case CURLE_OK:
    return PUSH_HTTP_OK;
  case CURLE_OPERATION_TIMEDOUT:
    return PUSH_HTTP_TIMEOUT;
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
    return PUSH_HTTP_CONNECT;
  case CURLE_WRITE_ERROR:
    return r->too_big ? PUSH_HTTP_TOO_BIG : PUSH_HTTP_FAILED;
  default:
    return PUSH_HTTP_FAILED;
  }
}

/* Removes r from the multi handle and the list, then calls its callback
 * and frees it. */
static void finish(push_http_client *hc, hreq *r, push_http_status outcome,
                   const char *why) {
  long status = 0;
  curl_multi_remove_handle(hc->multi, r->easy);
  req_unlink(hc, r);
  if (outcome == PUSH_HTTP_OK) {
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  }
  push_http_response res = {
      outcome,     (int)status,    r->resp ? r->resp : "",
      r->resp_len, why ? why : "", mono_us() - r->started_us};
  r->cb(r->ud, &res);
  req_free(r);
}

/* Every transfer curl says is done. */
static void collect(push_http_client *hc) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(hc->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) {
      continue;
    }
    hreq *r = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    CURLcode code = msg->data.result;
    push_http_status outcome = outcome_of(code, r);
    const char *why = outcome == PUSH_HTTP_OK ? ""
                      : r->err[0]             ? r->err
                                              : curl_easy_strerror(code);
    finish(hc, r, outcome, why);
  }
}

/* ---- curl's callbacks -------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  hreq *r = ud;
  size_t len = size * n;
  if (len > r->max_response - r->resp_len) {
    r->too_big = 1;
    return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
  }
  if (r->resp_len + len + 1 > r->resp_cap) {
    size_t cap = r->resp_cap ? r->resp_cap : 1024;
    while (cap < r->resp_len + len + 1) {
      cap *= 2;
    }
    char *nb = realloc(r->resp, cap);
    if (nb == NULL) {
      return 0;
    }
    r->resp = nb;
    r->resp_cap = cap;
  }
  memcpy(r->resp + r->resp_len, p, len);
  r->resp_len += len;
  r->resp[r->resp_len] = 0;
  return len;
}

static void on_poll_closed(uv_handle_t *h) {
  hsock *s = h->data;
  push_http_client *hc = s->hc;
  free(s);
  hc->open_handles--;
  maybe_free(hc);
}

static void on_poll(uv_poll_t *p, int status, int events) {
  hsock *s = p->data;
  push_http_client *hc = s->hc;
  int flags = 0, running;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    flags |= (events & UV_READABLE) ? CURL_CSELECT_IN : 0;
    flags |= (events & UV_WRITABLE) ? CURL_CSELECT_OUT : 0;
  }
  curl_multi_socket_action(hc->multi, s->fd, flags, &running);
  collect(hc);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
                     void *socketp) {
  push_http_client *hc = userp;
  hsock *s = socketp;
  (void)easy;
  if (what == CURL_POLL_REMOVE) {
    if (s != NULL) {
      uv_poll_stop(&s->poll);
      uv_close((uv_handle_t *)&s->poll, on_poll_closed);
      if (!hc->closing) {
        curl_multi_assign(hc->multi, fd, NULL);
      }
    }
    return 0;
  }
  if (s == NULL) {
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
      return -1;
    }
    s->hc = hc;
    s->fd = fd;
    if (uv_poll_init_socket(hc->loop, &s->poll, fd) != 0) {
      free(s);
      return -1;
    }
    s->poll.data = s;
    hc->open_handles++;
    curl_multi_assign(hc->multi, fd, s);
  }
  int events = 0;
  events |= (what & CURL_POLL_IN) ? UV_READABLE : 0;
  events |= (what & CURL_POLL_OUT) ? UV_WRITABLE : 0;
  uv_poll_start(&s->poll, events, on_poll);
  return 0;
}

static void on_timer(uv_timer_t *t) {
  push_http_client *hc = t->data;
  int running;
  curl_multi_socket_action(hc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  collect(hc);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  push_http_client *hc = userp;
  (void)multi;
  if (timeout_ms < 0) {
    uv_timer_stop(&hc->timer);
  } else {
    /* 0 means "as soon as possible": the next loop pass, never from
     * inside this callback (curl forbids calling itself from it). */
    uv_timer_start(&hc->timer, on_timer, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

/* ---- the API ----------------------------------------------------------- */

push_http_client *push_http_client_new(uv_loop_t *loop, char *err,
                                       size_t errlen) {
  if (global_ref() != 0) {
    snprintf(err, errlen, "libcurl: global init failed");
    return NULL;
  }
  push_http_client *hc = calloc(1, sizeof(*hc));
  if (hc == NULL || (hc->multi = curl_multi_init()) == NULL) {
    free(hc);
    global_unref();
    snprintf(err, errlen, "libcurl: out of memory");
    return NULL;
  }
  hc->loop = loop;
  curl_multi_setopt(hc->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(hc->multi, CURLMOPT_SOCKETDATA, hc);
  curl_multi_setopt(hc->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(hc->multi, CURLMOPT_TIMERDATA, hc);
  uv_timer_init(loop, &hc->timer);
  hc->timer.data = hc;
  hc->open_handles = 1;
  return hc;
}

static void on_timer_closed(uv_handle_t *h) {
  push_http_client *hc = h->data;
  hc->open_handles--;
  maybe_free(hc);
}

void push_http_client_del(push_http_client *hc) {
  if (hc == NULL) {
    return;
  }
  hc->closing = 1;
  while (hc->reqs != NULL) {
    finish(hc, hc->reqs, PUSH_HTTP_CANCELLED, "shutting down");
  }
  /* Closes the connections curl keeps alive: their poll handles are
   * closed through socket_cb. */
  curl_multi_cleanup(hc->multi);
  hc->multi = NULL;
  uv_timer_stop(&hc->timer);
  uv_close((uv_handle_t *)&hc->timer, on_timer_closed);
}

int push_http_post(push_http_client *hc, const push_http_request *req,
                   push_http_cb cb, void *ud) {
  if (hc->closing) {
    return -1;
  }
  hreq *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return -1;
  }
  r->hc = hc;
  r->cb = cb;
  r->ud = ud;
  r->max_response = req->max_response;
  r->body = malloc(req->len ? req->len : 1);
  r->easy = curl_easy_init();
  if (r->body == NULL || r->easy == NULL) {
    goto fail;
  }
  memcpy(r->body, req->body, req->len);
  int has_ct = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    struct curl_slist *n = curl_slist_append(r->headers, req->headers[i]);
    if (n == NULL) {
      goto fail;
    }
    r->headers = n;
    has_ct |= strncasecmp(req->headers[i], "content-type:", 13) == 0;
  }
  /* No "Expect: 100-continue" round trip for large bodies. */
  const char *fixed[] = {has_ct ? NULL : "Content-Type: application/json",
                         "Expect:"};
  for (size_t i = 0; i < 2; i++) {
    struct curl_slist *n =
        fixed[i] ? curl_slist_append(r->headers, fixed[i]) : r->headers;
    if (n == NULL) {
      goto fail;
    }
    r->headers = n;
  }
  CURL *e = r->easy;
  if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK) {
    goto fail;
  }
  curl_easy_setopt(e, CURLOPT_PRIVATE, r);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_POST, 1L);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->len);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->err);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "herald");
  r->started_us = mono_us();
  if (curl_multi_add_handle(hc->multi, e) != CURLM_OK) {
    goto fail;
  }
  r->next = hc->reqs;
  if (hc->reqs) {
    hc->reqs->prev = r;
  }
  hc->reqs = r;
  hc->nreqs++;
  return 0;
fail:
  if (r->easy) {
    curl_easy_cleanup(r->easy);
  }
  curl_slist_free_all(r->headers);
  free(r->body);
  free(r);
  return -1;
}

size_t push_http_in_flight(const push_http_client *hc) {
  return hc->nreqs;
}
