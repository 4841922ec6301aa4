/* http.c - plain HTTP requests to `herald serve`: the router (API, SSE,
 * health, metrics, the demo page) and the helpers every HTTP answer and
 * query string goes through. */
#include <stdio.h>
#include <string.h>

#include "push/server_int.h"
#include "push/web.h"

void push_http_json(herald_http *h, int status, const char *body, size_t len) {
  herald_header ct = {{"Content-Type", 12}, {"application/json", 16}};
  herald_http_respond(h, status, &ct, 1, body, len);
}

void push_http_error(herald_http *h, int status, int code, const char *msg) {
  push_buf b = {0};
  push_put_error(&b, code, msg);
  if (b.p) {
    push_http_json(h, status, b.p, b.len);
  } else {
    herald_http_respond(h, 503, NULL, 0, NULL, 0);
  }
  push_buf_free(&b);
}

void push_http_result(herald_http *h, const push_buf *result) {
  push_buf b = {0};
  push_buf_raw(&b, "{\"result\":", 10);
  push_buf_raw(&b, result->p, result->len);
  push_buf_raw(&b, "}", 1);
  if (b.p) {
    push_http_json(h, 200, b.p, b.len);
  } else {
    herald_http_respond(h, 503, NULL, 0, NULL, 0);
  }
  push_buf_free(&b);
}

void push_http_engine_down(push_server *ps, herald_http *h) {
  ps->engine_unavailable++;
  push_http_error(h, 503, PUSH_E_ENGINE, PUSH_ENGINE_DOWN_MSG);
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9') {
    return ch - '0';
  }
  if (ch >= 'a' && ch <= 'f') {
    return ch - 'a' + 10;
  }
  if (ch >= 'A' && ch <= 'F') {
    return ch - 'A' + 10;
  }
  return -1;
}

int push_query_next(herald_str q, const char *name, size_t *from, char *out,
                    size_t cap) {
  size_t nlen = strlen(name), i = *from;
  while (i < q.len) {
    size_t end = i;
    while (end < q.len && q.ptr[end] != '&') {
      end++;
    }
    if (end - i > nlen && memcmp(q.ptr + i, name, nlen) == 0 &&
        q.ptr[i + nlen] == '=') {
      *from = end + 1;
      size_t o = 0;
      for (size_t k = i + nlen + 1; k < end; k++) {
        char ch = q.ptr[k];
        if (ch == '+') {
          ch = ' ';
        } else if (ch == '%') {
          if (k + 2 >= end) {
            return -1;
          }
          int hi = hexval(q.ptr[k + 1]), lo = hexval(q.ptr[k + 2]);
          if (hi < 0 || lo < 0) {
            return -1;
          }
          ch = (char)(hi * 16 + lo);
          k += 2;
        }
        /* A NUL would cut the value short of what was sent (%00): the
         * value is refused, not truncated. */
        if (ch == 0 || o + 1 >= cap) {
          return -1;
        }
        out[o++] = ch;
      }
      out[o] = 0;
      return 1;
    }
    i = end + 1;
  }
  *from = q.len;
  return 0;
}

int push_query_param(herald_str q, const char *name, char *out, size_t cap) {
  size_t from = 0;
  return push_query_next(q, name, &from, out, cap) == 1;
}

int push_path_is(const herald_request *req, const char *p) {
  return req->path.len == strlen(p) &&
         memcmp(req->path.ptr, p, req->path.len) == 0;
}

int push_method_is(const herald_request *req, const char *m) {
  return req->method.len == strlen(m) &&
         memcmp(req->method.ptr, m, req->method.len) == 0;
}

/* A node whose engine cannot serve is not healthy, even though its clients
 * stay connected: a load balancer should send new ones elsewhere, and an
 * operator should hear about it. */
static void serve_health(push_server *ps, herald_http *h) {
  const char *why = NULL;
  int ok = push_engine_healthy(ps->engine, &why);
  push_buf b = {0};
  if (ok) {
    static const char head[] = "{\"status\":\"ok\"";
    push_buf_raw(&b, head, sizeof(head) - 1);
  } else {
    const char *name = ps->engine->vt->name;
    static const char head[] = "{\"status\":\"degraded\",\"engine\":";
    static const char err[] = ",\"error\":";
    push_buf_raw(&b, head, sizeof(head) - 1);
    push_buf_str(&b, name, strlen(name));
    push_buf_raw(&b, err, sizeof(err) - 1);
    push_buf_str(&b, why, strlen(why));
  }
  /* Which servers the engine uses now (Redis: after a failover too). */
  push_engine_describe(ps->engine, &b);
  push_buf_raw(&b, "}", 1);
  push_http_json(h, ok ? 200 : 503, b.p, b.len);
  push_buf_free(&b);
}

void push_on_http(herald_http *h, const herald_request *req,
                  const uint8_t *body, size_t len, void *ud) {
  push_server *ps = push_server_here();
  (void)ud;
  if (req->path.len >= 5 && memcmp(req->path.ptr, "/api/", 5) == 0) {
    push_api(ps, h, req, body, len);
    return;
  }
  if (req->path.len >= 6 && memcmp(req->path.ptr, "/apps/", 6) == 0) {
    push_pusher_api(ps, h, req, body, len);
    return;
  }
  if (!push_method_is(req, "GET") && !push_method_is(req, "HEAD")) {
    push_http_error(h, 405, PUSH_E_BAD_REQUEST, "use GET");
    return;
  }
  if (push_path_is(req, "/health")) {
    serve_health(ps, h);
  } else if (push_path_is(req, "/metrics")) {
    push_metrics(ps, h);
  } else if (push_path_is(req, "/sse")) {
    push_sse(ps, h, req);
  } else {
    /* The demo page only with the demo: a production server shows nothing
     * it was not told to (or its own static_dir). */
    const push_web_file *f =
        ps->cfg->demo ? push_web_find(req->path.ptr, req->path.len) : NULL;
    if (f == NULL && push_static_serve(ps, h, req)) {
      return;
    }
    if (f == NULL) {
      push_http_error(h, 404, PUSH_E_BAD_REQUEST, "not found");
      return;
    }
    herald_header hdrs[] = {{{"Content-Type", 12}, {f->type, strlen(f->type)}},
                            {{"Cache-Control", 13}, {"no-cache", 8}}};
    herald_http_respond(h, 200, hdrs, 2, f->data, f->len);
  }
}
