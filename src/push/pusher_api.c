/* pusher_api.c - Pusher's HTTP API under /apps/{app_id}/ (docs/pusher.md):
 * request signing (auth_key, auth_timestamp, auth_version, body_md5,
 * auth_signature), triggering events and batches, the channel queries and
 * terminate_connections. Errors are Pusher's: a status and a line of text.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/pusher_int.h"

#define QUERY_PARAMS_MAX 32

static void text(herald_http *h, int status, const char *msg) {
  herald_header ct = {{"Content-Type", 12}, {"text/plain", 10}};
  herald_http_respond(h, status, &ct, 1, msg, strlen(msg));
}

static void json(herald_http *h, const push_buf *b) {
  if (b->p == NULL) {
    text(h, 500, "out of memory");
    return;
  }
  push_http_json(h, 200, b->p, b->len);
}

/* ---- request signing --------------------------------------------------- */

typedef struct qparam {
  char key[64];
  char value[512];
} qparam;

static int hexv(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* URL-decodes p[0..n) into out. Returns 0, or -1 (bad escape, NUL, too
 * long). */
static int url_decode(const char *p, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      int hi = i + 2 < n ? hexv(p[i + 1]) : -1;
      int lo = i + 2 < n ? hexv(p[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        return -1;
      }
      c = (char)(hi * 16 + lo);
      i += 2;
    }
    if (c == 0 || o + 1 >= cap) {
      return -1;
    }
    out[o++] = c;
  }
  out[o] = 0;
  return 0;
}

static int qparam_cmp(const void *a, const void *b) {
  return strcmp(((const qparam *)a)->key, ((const qparam *)b)->key);
}

static const char *find(const qparam *q, size_t n, const char *key) {
  for (size_t i = 0; i < n; i++) {
    if (strcmp(q[i].key, key) == 0) {
      return q[i].value;
    }
  }
  return NULL;
}

/* Checks a request's signature (Pusher's "Generating authentication
 * signatures"): the query's parameters but auth_signature, keys lowercased
 * and sorted, joined as k=v with '&', signed with the method and the path.
 * Returns NULL, or the text of the 401. */
static const char *check_signature(const pusher_app *app,
                                   const herald_request *req,
                                   const uint8_t *body, size_t len, qparam *q,
                                   size_t *nq) {
  size_t n = 0, i = 0;
  herald_str qs = req->query;
  while (i < qs.len) {
    size_t end = i;
    while (end < qs.len && qs.ptr[end] != '&') {
      end++;
    }
    if (end > i) {
      const char *eq = memchr(qs.ptr + i, '=', end - i);
      size_t kl = eq ? (size_t)(eq - (qs.ptr + i)) : end - i;
      if (n == QUERY_PARAMS_MAX) {
        return "too many query parameters";
      }
      if (url_decode(qs.ptr + i, kl, q[n].key, sizeof(q[n].key)) != 0 ||
          url_decode(eq ? eq + 1 : qs.ptr + end,
                     eq ? (size_t)(qs.ptr + end - eq - 1) : 0, q[n].value,
                     sizeof(q[n].value)) != 0) {
        return "a query parameter is badly encoded or too long";
      }
      for (char *k = q[n].key; *k; k++) {
        *k = (char)tolower((unsigned char)*k);
      }
      for (size_t j = 0; j < n; j++) {
        if (strcmp(q[j].key, q[n].key) == 0) {
          return "a query parameter appears twice";
        }
      }
      n++;
    }
    i = end + 1;
  }
  *nq = n;
  const char *key = find(q, n, "auth_key"), *ts = find(q, n, "auth_timestamp");
  const char *ver = find(q, n, "auth_version"), *md5 = find(q, n, "body_md5");
  const char *sig = find(q, n, "auth_signature");
  if (key == NULL || ts == NULL || ver == NULL || sig == NULL) {
    return "missing auth_key, auth_timestamp, auth_version or "
           "auth_signature";
  }
  if (strcmp(key, app->cfg->key) != 0) {
    return "unknown auth_key";
  }
  if (strcmp(ver, "1.0") != 0) {
    return "auth_version must be 1.0";
  }
  char *endp;
  long long t = strtoll(ts, &endp, 10);
  long long now = push_now_ms() / 1000;
  if (*endp != 0 || endp == ts) {
    return "auth_timestamp is not a number";
  }
  if (t < now - PUSHER_API_WINDOW_S || t > now + PUSHER_API_WINDOW_S) {
    return "timestamp expired: auth_timestamp must be within 600 s of the "
           "server's clock";
  }
  if (len > 0 || md5 != NULL) {
    char want[33];
    if (md5 == NULL) {
      return "a request with a body needs body_md5";
    }
    if (pusher_md5_hex((const char *)body, len, want) != 0 ||
        !pusher_hex_equal(want, md5, strlen(md5))) {
      return "body_md5 does not match the body";
    }
  }
  /* The string to sign. */
  qparam *sorted = malloc((n ? n : 1) * sizeof(*sorted));
  if (sorted == NULL) {
    return "out of memory";
  }
  size_t m = 0;
  for (size_t j = 0; j < n; j++) {
    if (strcmp(q[j].key, "auth_signature") != 0) {
      sorted[m++] = q[j];
    }
  }
  qsort(sorted, m, sizeof(*sorted), qparam_cmp);
  push_buf s = {0};
  push_buf_raw(&s, req->method.ptr, req->method.len);
  push_buf_raw(&s, "\n", 1);
  push_buf_raw(&s, req->path.ptr, req->path.len);
  push_buf_raw(&s, "\n", 1);
  for (size_t j = 0; j < m; j++) {
    if (j) {
      push_buf_raw(&s, "&", 1);
    }
    push_buf_raw(&s, sorted[j].key, strlen(sorted[j].key));
    push_buf_raw(&s, "=", 1);
    push_buf_raw(&s, sorted[j].value, strlen(sorted[j].value));
  }
  free(sorted);
  char want[65];
  int ok = s.p != NULL &&
           pusher_hmac_hex(app->cfg->secret, s.p, s.len, want) == 0 &&
           pusher_hex_equal(want, sig, strlen(sig));
  push_buf_free(&s);
  return ok ? NULL
            : "invalid signature: auth_signature must be the HMAC-SHA256 of "
              "METHOD\\nPATH\\nQUERY under the app's secret";
}

/* ---- triggering events -------------------------------------------------- */

/* One trigger request: answered when every publish is known. */
typedef struct trig {
  push_server *ps;
  herald_http *h;
  size_t left;
  int failed; /* 0, or the status to answer */
} trig;

static void trig_finish(trig *t) {
  if (t->failed == 503) {
    t->ps->engine_unavailable++;
    text(t->h, 503, PUSH_ENGINE_DOWN_MSG);
  } else if (t->failed) {
    text(t->h, t->failed, "out of memory");
  } else {
    push_http_json(t->h, 200, "{}", 2);
  }
  free(t);
}

static void trig_one(trig *t, int rv) {
  if (rv == PUSH_ENGINE_DOWN && t->failed == 0) {
    t->failed = 503;
  } else if (rv == PUSH_ENGINE_ERROR && t->failed == 0) {
    t->failed = 500;
  }
  if (--t->left == 0) {
    trig_finish(t);
  }
}

static void on_published(void *ud, const push_engine_reply *rep) {
  trig *t = ud;
  t->ps->publications += rep->status == PUSH_ENGINE_OK;
  trig_one(t, rep->status);
}

/* One event, checked. */
typedef struct event {
  char name[PUSHER_EVENT_MAX + 1];
  push_json data;
  char skip[32];
  char channels[PUSHER_MAX_CHANNELS_PER_EVENT][PUSHER_CHANNEL_MAX + 64];
  unsigned kinds[PUSHER_MAX_CHANNELS_PER_EVENT];
  size_t nchannels;
} event;

/* Reads one event object; returns NULL or (status, text) of the refusal. */
static const char *read_event(const pusher_app *app, push_json o, event *e,
                              int batch, int *status) {
  push_json v;
  *status = 400;
  if (push_json_type_of(o) != PUSH_JSON_OBJECT) {
    return "an event is a JSON object";
  }
  if (!push_json_get(o, "name", &v) ||
      push_json_type_of(v) != PUSH_JSON_STRING ||
      push_json_str(v, e->name, sizeof(e->name)) <= 0) {
    return "name must be a string of 1-200 bytes";
  }
  if (!push_json_get(o, "data", &v) ||
      push_json_type_of(v) != PUSH_JSON_STRING) {
    return "data must be a string";
  }
  e->data = v;
  if (pusher_json_str_len(v) > app->cfg->max_event_bytes) {
    *status = 413;
    return "event data too large";
  }
  e->skip[0] = 0;
  if (push_json_get(o, "socket_id", &v) &&
      push_json_type_of(v) != PUSH_JSON_NULL) {
    long n = push_json_str(v, e->skip, sizeof(e->skip));
    if (n <= 0 || !pusher_socket_id_valid(e->skip, (size_t)n)) {
      return "socket_id must look like 123.456";
    }
  }
  push_json list;
  e->nchannels = 0;
  int one = push_json_get(o, "channel", &v);
  int many = !batch && push_json_get(o, "channels", &list);
  if (one == many) {
    return batch ? "each event of a batch needs a channel"
                 : "give channel or channels (not both)";
  }
  size_t pos = 0;
  push_json item = v;
  if (many && push_json_type_of(list) != PUSH_JSON_ARRAY) {
    return "channels must be an array";
  }
  while (many ? push_json_next(list, &pos, NULL, &item) : e->nchannels == 0) {
    if (e->nchannels == PUSHER_MAX_CHANNELS_PER_EVENT) {
      return "at most 100 channels per event";
    }
    char *c = e->channels[e->nchannels];
    long n = push_json_type_of(item) == PUSH_JSON_STRING
                 ? push_json_str(item, c, sizeof(e->channels[0]))
                 : -1;
    int kind = n > 0 ? pusher_channel_kind(c, (size_t)n) : -1;
    if (kind < 0) {
      return "invalid channel name";
    }
    e->kinds[e->nchannels++] = (unsigned)kind;
    if (!many) {
      break;
    }
  }
  if (e->nchannels == 0) {
    return "channels must not be empty";
  }
  return NULL;
}

/* Publishes e to each of its channels, one count of t each. */
static void publish_event(pusher_app *app, trig *t, const event *e) {
  push_server *ps = app->ps;
  for (size_t i = 0; i < e->nchannels; i++) {
    char hub[PUSHER_HUB_MAX];
    push_buf ev = {0};
    int rv = PUSH_ENGINE_ERROR;
    if (pusher_hub_name(app, e->channels[i], e->kinds[i], hub) != 0) {
      rv = PUSH_ENGINE_ERROR;
    } else if (!push_channel_room(ps, hub)) {
      rv = PUSH_ENGINE_DOWN;
    } else if (push_buf_raw(&ev, "{\"event\":", 9) == 0 &&
               push_buf_str(&ev, e->name, strlen(e->name)) == 0 &&
               push_buf_raw(&ev, ",\"channel\":", 11) == 0 &&
               push_buf_str(&ev, e->channels[i], strlen(e->channels[i])) == 0 &&
               push_buf_raw(&ev, ",\"data\":", 8) == 0 &&
               push_buf_raw(&ev, e->data.p, e->data.n) == 0 &&
               push_buf_raw(&ev, "}", 1) == 0) {
      rv = pusher_publish(ps, hub, e->skip, ev.p, ev.len, on_published, t);
      PUSHER_COUNT(app, api_events);
    }
    push_buf_free(&ev);
    if (rv != PUSH_ENGINE_PENDING) {
      trig_one(t, rv);
    }
  }
}

static void api_trigger(pusher_app *app, herald_http *h, push_json root,
                        int batch) {
  size_t nev = 1;
  push_json list = root, item;
  if (batch) {
    size_t pos = 0;
    if (!push_json_get(root, "batch", &list) ||
        push_json_type_of(list) != PUSH_JSON_ARRAY) {
      text(h, 400, "batch must be an array of events");
      return;
    }
    for (nev = 0; push_json_next(list, &pos, NULL, &item); nev++) {
    }
    if (nev == 0 || nev > PUSHER_MAX_BATCH) {
      text(h, 400, "a batch holds 1 to 10 events");
      return;
    }
  }
  event *evs = calloc(nev, sizeof(*evs));
  trig *t = calloc(1, sizeof(*t));
  if (evs == NULL || t == NULL) {
    free(evs);
    free(t);
    text(h, 500, "out of memory");
    return;
  }
  /* Every event is checked before any is published. */
  size_t pos = 0, total = 0;
  for (size_t i = 0; i < nev; i++) {
    int status;
    if (batch) {
      push_json_next(list, &pos, NULL, &item);
    } else {
      item = root;
    }
    const char *why = read_event(app, item, &evs[i], batch, &status);
    if (why != NULL) {
      char msg[160];
      if (batch) {
        snprintf(msg, sizeof(msg), "batch event %zu: %s", i, why);
      }
      text(h, status, batch ? msg : why);
      free(evs);
      free(t);
      return;
    }
    total += evs[i].nchannels;
  }
  t->ps = app->ps;
  t->h = h;
  t->left = total + 1; /* held while publishing */
  for (size_t i = 0; i < nev; i++) {
    publish_event(app, t, &evs[i]);
  }
  free(evs);
  trig_one(t, PUSH_ENGINE_OK);
}

/* ---- terminate_connections ---------------------------------------------- */

static void api_terminate(pusher_app *app, herald_http *h, const char *user) {
  char name[16 + PUSHER_USER_ID_MAX + 1], hub[PUSHER_HUB_MAX];
  trig *t = calloc(1, sizeof(*t));
  if (strlen(user) == 0 || strlen(user) > PUSHER_USER_ID_MAX) {
    free(t);
    text(h, 400, "invalid user id");
    return;
  }
  snprintf(name, sizeof(name), "#server-to-user-%s", user);
  if (t == NULL || pusher_hub_name(app, name, PUSHER_K_USER, hub) != 0) {
    free(t);
    text(h, t ? 400 : 500, t ? "user id too long" : "out of memory");
    return;
  }
  t->ps = app->ps;
  t->h = h;
  t->left = 1;
  int rv = pusher_publish(app->ps, hub, "!t", NULL, 0, on_published, t);
  if (rv != PUSH_ENGINE_PENDING) {
    trig_one(t, rv);
  }
}

/* ---- queries ------------------------------------------------------------- */

/* info=a,b: which of user_count, subscription_count, cache. Returns -1 on
 * an unknown attribute. */
enum { INFO_USERS = 1, INFO_SUBS = 2, INFO_CACHE = 4 };

static int parse_info(const char *s) {
  int f = 0;
  while (s && *s) {
    const char *end = strchr(s, ',');
    size_t n = end ? (size_t)(end - s) : strlen(s);
    if (n == 10 && memcmp(s, "user_count", 10) == 0) {
      f |= INFO_USERS;
    } else if (n == 18 && memcmp(s, "subscription_count", 18) == 0) {
      f |= INFO_SUBS;
    } else if (n == 5 && memcmp(s, "cache", 5) == 0) {
      f |= INFO_CACHE;
    } else if (n != 0) {
      return -1;
    }
    s = end ? end + 1 : NULL;
  }
  return f;
}

/* A channel query in flight. Every answer is the cluster's: occupancy and
 * subscription counts come from the directory (pusher_dir.c), user counts
 * from each presence channel's presence. */
typedef struct query {
  pusher_app *app;
  herald_http *h;
  int info;
  int one;   /* GET /channels/{name}, else GET /channels */
  int users; /* GET /channels/{name}/users */
  char prefix[PUSHER_CHANNEL_MAX + 1];
  char name[PUSHER_CHANNEL_MAX + 1];
  pusher_map counts; /* channel -> subscriptions (the directory) */
  pusher_map ucount; /* presence channel -> users */
  size_t pending;
  int failed; /* 0, or the status to answer */
  /* info=cache: the hub channel made current (a reference to release) */
  char cache_hub[PUSHER_HUB_MAX];
  int cache_ref;
} query;

/* One presence read of a query. */
typedef struct qread {
  query *q;
  char name[PUSHER_CHANNEL_MAX + 1];
} qread;

static void query_free(query *q) {
  if (q->cache_ref) {
    push_engine_release(q->app->ps->engine, q->cache_hub);
  }
  pusher_map_free(&q->counts);
  pusher_map_free(&q->ucount);
  free(q);
}

static void put_key(push_buf *b, int *first, const char *k) {
  push_buf_raw(b, *first ? "" : ",", *first ? 0 : 1);
  *first = 0;
  push_buf_str(b, k, strlen(k));
  push_buf_raw(b, ":", 1);
}

/* The cached event of a cache channel: ,"cache":{"data":..,"ttl":..},
 * from the hub's copy, made current by query_start. */
static void put_cache(query *q, push_buf *b, int *first) {
  push_result res;
  push_pos none = {0};
  memset(&res, 0, sizeof(res));
  if (q->cache_ref &&
      push_hub_history(q->app->ps->hub, q->cache_hub, 1, &none, push_now_ms(),
                       &res) == 0 &&
      res.npubs > 0) {
    const char *skip;
    size_t sl, el;
    const char *ev = pusher_pub_event(res.pubs[0], &skip, &sl, &el);
    push_json root, d;
    if (ev != NULL && push_json_parse(ev, el, &root) == 0 &&
        push_json_get(root, "data", &d)) {
      int64_t age = (push_now_ms() - res.pubs[0]->time_ms) / 1000;
      put_key(b, first, "cache");
      push_buf_raw(b, "{\"data\":", 8);
      push_buf_raw(b, d.p, d.n);
      push_buf_raw(b, ",\"ttl\":", 7);
      push_buf_u64(b, age < 1800 ? (uint64_t)(1800 - age) : 0);
      push_buf_raw(b, "}", 1);
    }
  }
  push_result_free(&res);
}

static void query_answer(query *q) {
  if (q->failed) {
    if (q->failed == 503) {
      q->app->ps->engine_unavailable++;
    }
    text(q->h, q->failed,
         q->failed == 503 ? PUSH_ENGINE_DOWN_MSG : "out of memory");
    query_free(q);
    return;
  }
  push_buf b = {0};
  if (q->users) {
    /* answered in on_users */
  } else if (q->one) {
    uintptr_t subs = (uintptr_t)pusher_map_get(&q->counts, q->name);
    int first = 0;
    push_buf_raw(&b, "{\"occupied\":", 12);
    push_buf_raw(&b, subs ? "true" : "false", subs ? 4 : 5);
    if (q->info & INFO_USERS) {
      push_buf_raw(&b, ",\"user_count\":", 14);
      push_buf_u64(&b, (uintptr_t)pusher_map_get(&q->ucount, q->name));
    }
    if (q->info & INFO_SUBS) {
      push_buf_raw(&b, ",\"subscription_count\":", 22);
      push_buf_u64(&b, subs);
    }
    if (q->info & INFO_CACHE) {
      put_cache(q, &b, &first);
    }
    push_buf_raw(&b, "}", 1);
  } else {
    size_t pos = 0;
    const char *k;
    void *v;
    int first = 1;
    push_buf_raw(&b, "{\"channels\":{", 13);
    while (pusher_map_next(&q->counts, &pos, &k, &v)) {
      if (strncmp(k, q->prefix, strlen(q->prefix)) != 0) {
        continue;
      }
      put_key(&b, &first, k);
      push_buf_raw(&b, "{", 1);
      if (q->info & INFO_USERS) {
        push_buf_raw(&b, "\"user_count\":", 13);
        push_buf_u64(&b, (uintptr_t)pusher_map_get(&q->ucount, k));
      }
      if (q->info & INFO_SUBS) {
        push_buf_raw(&b,
                     (q->info & INFO_USERS) ? ",\"subscription_count\":"
                                            : "\"subscription_count\":",
                     (q->info & INFO_USERS) ? 22 : 21);
        push_buf_u64(&b, (uintptr_t)v);
      }
      push_buf_raw(&b, "}", 1);
    }
    push_buf_raw(&b, "}}", 2);
  }
  if (!q->users) {
    json(q->h, &b);
  }
  push_buf_free(&b);
  query_free(q);
}

static void query_done_one(query *q) {
  if (--q->pending == 0) {
    query_answer(q);
  }
}

static void on_users(void *ud, const push_engine_reply *rep) {
  qread *r = ud;
  query *q = r->q;
  if (rep->status != PUSH_ENGINE_OK) {
    q->failed = 503;
  } else if (q->users) {
    push_buf b = {0};
    if (pusher_presence_users(rep->json, rep->len, &b, NULL) != 0) {
      q->failed = 500;
    } else {
      json(q->h, &b);
    }
    push_buf_free(&b);
  } else {
    size_t n = 0;
    if (pusher_presence_users(rep->json, rep->len, NULL, &n) != 0 ||
        pusher_map_put(&q->ucount, r->name, (void *)(uintptr_t)n) != 0) {
      q->failed = 500;
    }
  }
  free(r);
  query_done_one(q);
}

/* Reads the users of presence channel name for q. */
static void read_users(query *q, const char *name) {
  qread *r = calloc(1, sizeof(*r));
  char hub[PUSHER_HUB_MAX];
  int kind = pusher_channel_kind(name, strlen(name));
  q->pending++;
  if (r == NULL || kind < 0 ||
      pusher_hub_name(q->app, name, (unsigned)kind, hub) != 0) {
    free(r);
    q->failed = 500;
    query_done_one(q);
    return;
  }
  r->q = q;
  snprintf(r->name, sizeof(r->name), "%s", name);
  push_buf b = {0};
  int rv = push_engine_presence_get(q->app->ps->engine, hub, &b, on_users, r);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                            : PUSH_ENGINE_DOWN,
                             .json = b.p ? b.p : "{\"clients\":{}}",
                             .len = b.p ? b.len : 14};
    on_users(r, &rep);
  }
  push_buf_free(&b);
}

static void on_directory(void *ud, const push_engine_reply *rep) {
  query *q = ud;
  if (rep->status != PUSH_ENGINE_OK) {
    q->failed = 503;
  } else if (pusher_dir_counts(rep->json, rep->len, &q->counts) != 0) {
    q->failed = 500;
  } else if (q->info & INFO_USERS) {
    if (q->one) {
      read_users(q, q->name);
    } else {
      size_t pos = 0;
      const char *k;
      void *v;
      while (pusher_map_next(&q->counts, &pos, &k, &v)) {
        if (strncmp(k, q->prefix, strlen(q->prefix)) == 0) {
          read_users(q, k);
        }
      }
    }
  }
  query_done_one(q);
}

static void on_cache_synced(void *ud, const push_engine_reply *rep) {
  query *q = ud;
  if (rep->status == PUSH_ENGINE_OK) {
    q->cache_ref = 1;
  } else if (q->failed == 0) {
    q->failed = 503;
  }
  query_done_one(q);
}

/* info=cache: the last event is read from this loop's hub, which may hold
 * no copy of the channel, or one behind; the engine makes it current
 * first (with no room for one more channel here, the answer has no
 * cache). One count of q->pending. */
static void cache_sync(query *q) {
  int kind = pusher_channel_kind(q->name, strlen(q->name));
  if (kind < 0 ||
      pusher_hub_name(q->app, q->name, (unsigned)kind, q->cache_hub) != 0 ||
      !push_channel_room(q->app->ps, q->cache_hub)) {
    return;
  }
  q->pending++;
  int rv =
      push_engine_sync(q->app->ps->engine, q->cache_hub, on_cache_synced, q);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv};
    on_cache_synced(q, &rep);
  }
}

static void query_start(query *q) {
  q->pending = 1;
  if ((q->info & INFO_CACHE) && !q->users) {
    cache_sync(q);
  }
  if (q->users) {
    read_users(q, q->name);
    query_done_one(q);
    return;
  }
  push_buf b = {0};
  int rv = push_engine_presence_get(q->app->ps->engine, q->app->dirhub, &b,
                                    on_directory, q);
  if (rv != PUSH_ENGINE_PENDING) {
    push_engine_reply rep = {.status = rv == PUSH_ENGINE_OK ? PUSH_ENGINE_OK
                                                            : PUSH_ENGINE_DOWN,
                             .json = b.p ? b.p : "{\"clients\":{}}",
                             .len = b.p ? b.len : 14};
    on_directory(q, &rep);
  }
  push_buf_free(&b);
}

static query *query_new(pusher_app *app, herald_http *h) {
  query *q = calloc(1, sizeof(*q));
  if (q == NULL) {
    text(h, 500, "out of memory");
    return NULL;
  }
  q->app = app;
  q->h = h;
  return q;
}

static void api_channels(pusher_app *app, herald_http *h, const qparam *qp,
                         size_t nq) {
  const char *prefix = find(qp, nq, "filter_by_prefix");
  int info = parse_info(find(qp, nq, "info"));
  if (info < 0 || (info & INFO_CACHE)) {
    text(h, 400, "info may list user_count and subscription_count");
    return;
  }
  if ((info & INFO_USERS) &&
      (prefix == NULL || strncmp(prefix, "presence-", 9) != 0)) {
    text(h, 400,
         "info=user_count needs filter_by_prefix=presence- (presence "
         "channels only)");
    return;
  }
  size_t plen = prefix ? strlen(prefix) : 0;
  if (plen > PUSHER_CHANNEL_MAX) {
    text(h, 400, "filter_by_prefix is longer than any channel name");
    return;
  }
  query *q = query_new(app, h);
  if (q != NULL) {
    q->info = info;
    memcpy(q->prefix, prefix ? prefix : "", plen);
    q->prefix[plen] = 0;
    query_start(q);
  }
}

static void api_channel(pusher_app *app, herald_http *h, const char *name,
                        int users, const qparam *qp, size_t nq) {
  int kind = pusher_channel_kind(name, strlen(name));
  int info = parse_info(find(qp, nq, "info"));
  if (kind < 0 || (kind & PUSHER_K_USER)) {
    text(h, 400, "invalid channel name");
    return;
  }
  if (info < 0) {
    text(h, 400, "info may list user_count, subscription_count and cache");
    return;
  }
  if ((users || (info & INFO_USERS)) && !(kind & PUSHER_K_PRESENCE)) {
    text(h, 400, "users and user_count are for presence channels only");
    return;
  }
  if ((info & INFO_CACHE) && !(kind & PUSHER_K_CACHE)) {
    text(h, 400, "info=cache is for cache channels only");
    return;
  }
  query *q = query_new(app, h);
  if (q != NULL) {
    q->info = info;
    q->one = 1;
    q->users = users;
    snprintf(q->name, sizeof(q->name), "%s", name);
    query_start(q);
  }
}

/* ---- the router ---------------------------------------------------------- */

void pusher_api(push_server *ps, herald_http *h, const herald_request *req,
                const uint8_t *body, size_t len) {
  const char *p = req->path.ptr + 6; /* after /apps/ */
  size_t n = req->path.len - 6;
  const char *slash = memchr(p, '/', n);
  char id[PUSHER_APP_ID_MAX + 1], rest[512];
  size_t idlen = slash ? (size_t)(slash - p) : n;
  if (idlen == 0 || idlen > PUSHER_APP_ID_MAX || slash == NULL ||
      n - idlen - 1 >= sizeof(rest)) {
    text(h, 404, "not found: /apps/{app_id}/...");
    return;
  }
  memcpy(id, p, idlen);
  id[idlen] = 0;
  /* The rest of the path, URL-decoded (channel and user names). */
  if (url_decode(slash + 1, n - idlen - 1, rest, sizeof(rest)) != 0) {
    text(h, 400, "badly encoded path");
    return;
  }
  pusher_app *app = pusher_app_by_id(ps, id);
  if (app == NULL) {
    text(h, 404, "unknown app id");
    return;
  }
  qparam *q = calloc(QUERY_PARAMS_MAX, sizeof(*q));
  size_t nq = 0;
  if (q == NULL) {
    text(h, 500, "out of memory");
    return;
  }
  const char *why = check_signature(app, req, body, len, q, &nq);
  if (why != NULL) {
    ps->auth_failures++;
    text(h, 401, why);
    free(q);
    return;
  }
  int get = push_method_is(req, "GET"), post = push_method_is(req, "POST");
  if (strcmp(rest, "events") == 0 || strcmp(rest, "batch_events") == 0) {
    push_json root;
    if (!post) {
      text(h, 405, "use POST");
    } else if (push_json_parse((const char *)body, len, &root) != 0 ||
               push_json_type_of(root) != PUSH_JSON_OBJECT) {
      text(h, 400, "the body must be a JSON object");
    } else {
      api_trigger(app, h, root, rest[0] == 'b');
    }
  } else if (strcmp(rest, "channels") == 0) {
    if (!get) {
      text(h, 405, "use GET");
    } else {
      api_channels(app, h, q, nq);
    }
  } else if (strncmp(rest, "channels/", 9) == 0) {
    char *name = rest + 9;
    size_t nl = strlen(name);
    int users = nl > 6 && strcmp(name + nl - 6, "/users") == 0;
    if (users) {
      name[nl - 6] = 0;
    }
    if (!get) {
      text(h, 405, "use GET");
    } else if (strchr(name, '/') != NULL) {
      text(h, 404, "not found");
    } else {
      api_channel(app, h, name, users, q, nq);
    }
  } else if (strncmp(rest, "users/", 6) == 0 && strlen(rest) > 28 &&
             strcmp(rest + strlen(rest) - 22, "/terminate_connections") == 0) {
    rest[strlen(rest) - 22] = 0;
    if (!post) {
      text(h, 405, "use POST");
    } else {
      api_terminate(app, h, rest + 6);
    }
  } else {
    text(h, 404, "not found");
  }
  free(q);
}
