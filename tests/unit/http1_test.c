/* http1_test.c - the HTTP/1.1 head parser and the RFC 6455 handshake checks.
 *
 * Every head is parsed whole, one byte at a time (each prefix in its own
 * exact-size allocation, so ASan sees a read past the end, with last_len
 * carried along), and split in two at every position; all of them must agree
 * on the result, the error text and every span. A guard-page test repeats
 * this with the input's last byte at the end of a readable page. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/http1.h"
#include "test.h"

#define MAXH 64

/* The outcome of one call of a parser. */
typedef struct outcome {
  int r;
  const char *reason;
  const char *base; /* the buffer that was parsed */
  herald_request req;
  herald_response resp;
  herald_header h[MAXH];
} outcome;

/* A head parsed every way, owning the copy its spans point into. */
typedef struct parsed {
  outcome o;
  char *buf;
} parsed;

static void run_once(outcome *o, int response, const char *buf, size_t len,
                     size_t last_len, size_t max_bytes, size_t max_headers) {
  memset(o, 0, sizeof *o);
  o->base = buf;
  if (response) {
    o->r = herald__http_parse_response(buf, len, last_len, max_bytes, &o->resp,
                                       o->h, max_headers, &o->reason);
  } else {
    o->r = herald__http_parse_request(buf, len, last_len, max_bytes, &o->req,
                                      o->h, max_headers, &o->reason);
  }
}

/* Spans are equal when they have the same length and, if not empty, the
 * same offset in their own buffers. */
static int span_eq(herald_str a, const char *abase, herald_str b,
                   const char *bbase) {
  return a.len == b.len && (a.len == 0 || a.ptr - abase == b.ptr - bbase);
}

static int outcome_eq(const outcome *a, const outcome *b) {
  if (a->r != b->r) {
    return 0;
  }
  if (a->r < 0) {
    return a->reason != NULL && b->reason != NULL &&
           strcmp(a->reason, b->reason) == 0;
  }
  if (a->r == 0) {
    return 1;
  }
  const char *x = a->base, *y = b->base;
  const herald_request *p = &a->req, *q = &b->req;
  const herald_response *s = &a->resp, *t = &b->resp;
  size_t n = p->nheaders > s->nheaders ? p->nheaders : s->nheaders;
  if (p->nheaders != q->nheaders || s->nheaders != t->nheaders ||
      p->head_len != q->head_len || s->head_len != t->head_len ||
      p->version_minor != q->version_minor ||
      s->version_minor != t->version_minor || s->status != t->status ||
      !span_eq(p->method, x, q->method, y) ||
      !span_eq(p->target, x, q->target, y) ||
      !span_eq(p->path, x, q->path, y) || !span_eq(p->query, x, q->query, y) ||
      !span_eq(p->host, x, q->host, y) ||
      !span_eq(p->origin, x, q->origin, y) ||
      !span_eq(p->content_length, x, q->content_length, y) ||
      !span_eq(s->reason, x, t->reason, y)) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!span_eq(a->h[i].name, x, b->h[i].name, y) ||
        !span_eq(a->h[i].value, x, b->h[i].value, y)) {
      return 0;
    }
  }
  return 1;
}

static int parse_all_ways(parsed *p, int response, const char *s, size_t n,
                          size_t max_bytes, size_t max_headers) {
  p->buf = malloc(n ? n : 1);
  memcpy(p->buf, s, n);
  outcome *whole = &p->o;
  run_once(whole, response, p->buf, n, 0, max_bytes, max_headers);
  if (whole->r < 0) {
    CHECK(whole->r == HERALD_ERR_HTTP || whole->r == HERALD_ERR_HEAD_TOO_BIG);
    CHECK(whole->reason != NULL && whole->reason[0] != '\0');
  }
  if (whole->r > 0) {
    CHECK((size_t)whole->r <= n);
    CHECK_EQ(response ? whole->resp.head_len : whole->req.head_len, whole->r);
  }

  outcome *o = malloc(sizeof *o);
  outcome *o2 = malloc(sizeof *o2);
  /* One byte at a time, each prefix in an exact-size allocation. */
  size_t last = 0;
  int done = 0;
  for (size_t k = 1; k <= n && !done; k++) {
    char *pre = malloc(k);
    memcpy(pre, s, k);
    run_once(o, response, pre, k, last, max_bytes, max_headers);
    if (o->r == 0) {
      last = k;
    } else {
      CHECK(outcome_eq(o, whole));
      done = 1;
    }
    free(pre);
  }
  if (!done) {
    CHECK_EQ(whole->r, 0);
  }
  /* Split in two at every position. */
  for (size_t k = 0; k <= n; k++) {
    run_once(o, response, p->buf, k, 0, max_bytes, max_headers);
    if (o->r != 0) {
      CHECK(outcome_eq(o, whole));
      continue;
    }
    run_once(o2, response, p->buf, n, k, max_bytes, max_headers);
    CHECK(outcome_eq(o2, whole));
  }
  free(o);
  free(o2);
  return whole->r;
}

static void done(parsed *p) {
  free(p->buf);
  p->buf = NULL;
}

#define LIT(s) (s), (sizeof(s) - 1)

/* Parses a request with the default limits. */
static int req(parsed *p, const char *s, size_t n) {
  return parse_all_ways(p, 0, s, n, 8192, MAXH);
}

static int resp(parsed *p, const char *s, size_t n) {
  return parse_all_ways(p, 1, s, n, 8192, MAXH);
}

/* Expects a request to fail with err and reason. */
static void req_fails(const char *s, size_t n, int err, const char *reason) {
  parsed p;
  CHECK_EQ(req(&p, s, n), err);
  if (p.o.reason == NULL || strcmp(p.o.reason, reason) != 0) {
    fprintf(stderr, "  reason: %s (wanted %s) for %.*s\n",
            p.o.reason ? p.o.reason : "(null)", reason, (int)n, s);
    CHECK(0);
  }
  done(&p);
}

static void resp_fails(const char *s, size_t n, int err, const char *reason) {
  parsed p;
  CHECK_EQ(resp(&p, s, n), err);
  if (p.o.reason == NULL || strcmp(p.o.reason, reason) != 0) {
    fprintf(stderr, "  reason: %s (wanted %s) for %.*s\n",
            p.o.reason ? p.o.reason : "(null)", reason, (int)n, s);
    CHECK(0);
  }
  done(&p);
}

static const char rfc_request[] =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

/* ------------------------------------------------------------------------ */
/* Request parser                                                            */
/* ------------------------------------------------------------------------ */

static void test_request_basic(void) {
  parsed p;
  CHECK_EQ(req(&p, LIT(rfc_request)), sizeof rfc_request - 1);
  herald_request *r = &p.o.req;
  CHECK_STR(r->method, "GET");
  CHECK_STR(r->target, "/chat");
  CHECK_STR(r->path, "/chat");
  CHECK_EQ(r->query.len, 0);
  CHECK_EQ(r->version_minor, 1);
  CHECK_EQ(r->nheaders, 7);
  CHECK(r->headers == p.o.h);
  CHECK_EQ(r->head_len, sizeof rfc_request - 1);
  CHECK_STR(r->headers[0].name, "Host");
  CHECK_STR(r->headers[0].value, "server.example.com");
  CHECK_STR(r->headers[6].name, "Sec-WebSocket-Version");
  CHECK_STR(r->headers[6].value, "13");
  CHECK_STR(r->host, "server.example.com");
  CHECK_STR(r->origin, "http://example.com");
  CHECK_EQ(r->content_length.len, 0);
  /* The parser leaves the handshake fields to herald__hs_check_request. */
  CHECK_EQ(r->websocket, 0);
  CHECK_EQ(r->key.len, 0);
  CHECK_EQ(r->protocols.len, 0);
  CHECK_EQ(r->extensions.len, 0);
  /* Spans point into the input: zero-copy. */
  CHECK(r->method.ptr == p.buf);
  CHECK(r->target.ptr == p.buf + 4);
  done(&p);
}

static void test_request_body_not_in_head(void) {
  static const char in[] = "POST /upload?x=1 HTTP/1.1\r\n"
                           "Host: a\r\n"
                           "Content-Length: 5\r\n"
                           "\r\n"
                           "hello";
  parsed p;
  CHECK_EQ(req(&p, LIT(in)), sizeof in - 1 - 5);
  CHECK_STR(p.o.req.method, "POST");
  CHECK_STR(p.o.req.content_length, "5");
  CHECK_STR(p.o.req.path, "/upload");
  CHECK_STR(p.o.req.query, "x=1");
  done(&p);
}

static void test_request_minimal(void) {
  parsed p;
  CHECK_EQ(req(&p, LIT("GET / HTTP/1.1\r\n\r\n")), 18);
  CHECK_EQ(p.o.req.nheaders, 0);
  CHECK_EQ(p.o.req.host.len, 0);
  CHECK_EQ(p.o.req.origin.len, 0);
  done(&p);
  CHECK_EQ(req(&p, LIT("GET / HTTP/1.0\r\n\r\n")), 18);
  CHECK_EQ(p.o.req.version_minor, 0);
  done(&p);
  CHECK_EQ(req(&p, LIT("M / HTTP/1.9\r\n\r\n")), 16);
  CHECK_EQ(p.o.req.version_minor, 9);
  CHECK_STR(p.o.req.method, "M");
  done(&p);
}

static void test_request_query_split(void) {
  parsed p;
  CHECK_EQ(req(&p, LIT("GET /a/b?x=1?y&z HTTP/1.1\r\n\r\n")), 29);
  CHECK_STR(p.o.req.target, "/a/b?x=1?y&z");
  CHECK_STR(p.o.req.path, "/a/b");
  CHECK_STR(p.o.req.query, "x=1?y&z");
  done(&p);
  CHECK_EQ(req(&p, LIT("GET /? HTTP/1.1\r\n\r\n")), 19);
  CHECK_STR(p.o.req.path, "/");
  CHECK_EQ(p.o.req.query.len, 0);
  done(&p);
  CHECK_EQ(req(&p, LIT("GET /?q HTTP/1.1\r\n\r\n")), 20);
  CHECK_STR(p.o.req.path, "/");
  CHECK_STR(p.o.req.query, "q");
  done(&p);
}

static void test_request_target_forms(void) {
  parsed p;
  /* absolute-form (RFC 9112 section 3.2.2). */
  CHECK_EQ(req(&p, LIT("GET http://example.com/a?b HTTP/1.1\r\n\r\n")), 39);
  CHECK_STR(p.o.req.target, "http://example.com/a?b");
  CHECK_STR(p.o.req.path, "http://example.com/a");
  CHECK_STR(p.o.req.query, "b");
  done(&p);
  CHECK_EQ(req(&p, LIT("GET ws+x-1.y:z HTTP/1.1\r\n\r\n")), 27);
  done(&p);
  CHECK_EQ(req(&p, LIT("GET HTTPS://A/ HTTP/1.1\r\n\r\n")), 27);
  done(&p);
  /* asterisk-form, and strings that are no form at all. */
  req_fails(LIT("OPTIONS * HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "unsupported request target form");
  req_fails(LIT("GET chat HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "unsupported request target form");
  req_fails(LIT("GET 1http://a/ HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "unsupported request target form");
  req_fails(LIT("GET ht_tp://a/ HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "unsupported request target form");
  req_fails(LIT("GET %2F HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "unsupported request target form");
}

static void test_request_target_chars(void) {
  req_fails(LIT("GET /a\x01 HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "invalid character in request target");
  req_fails(LIT("GET /a\x7f HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "invalid character in request target");
  req_fails(LIT("GET /\x80 HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "invalid character in request target");
  req_fails(LIT("GET /a\tb HTTP/1.1\r\n\r\n"), HERALD_ERR_HTTP,
            "invalid character in request target");
  req_fails("GET /a\0b HTTP/1.1\r\n\r\n", 22, HERALD_ERR_HTTP,
            "invalid character in request target");
}

static void test_request_line_errors(void) {
  const int E = HERALD_ERR_HTTP;
  req_fails(LIT("\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("\r\nGET / HTTP/1.1\r\n\r\n"), E, "invalid request line");
  req_fails(LIT(" GET / HTTP/1.1\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("G(T / HTTP/1.1\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET /\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET  / HTTP/1.1\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET / \r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET /  HTTP/1.1\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / HTTP/1.1 \r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET / HTTP/1.10\r\n\r\n"), E, "invalid request line");
  req_fails(LIT("GET / HTTP/1.\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / HTTP/1.x\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / HTTP/11\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / http/1.1\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / HTTP/x.1\r\n\r\n"), E, "invalid HTTP version");
  req_fails(LIT("GET / HTTP/2.0\r\n\r\n"), E, "unsupported HTTP version");
  req_fails(LIT("GET / HTTP/0.9\r\n\r\n"), E, "unsupported HTTP version");
  req_fails(LIT("GET / HTTP/1.1\t\r\n\r\n"), E, "invalid request line");
}

static void test_bare_cr_lf(void) {
  const int E = HERALD_ERR_HTTP;
  req_fails(LIT("\n"), E, "bare LF in head");
  req_fails(LIT("GET / HTTP/1.1\n\n"), E, "bare LF in head");
  req_fails(LIT("GET / HTTP/1.1\nHost: a\r\n\r\n"), E, "bare LF in head");
  req_fails(LIT("GET / HTTP/1.1\r\nHost: a\n\r\n"), E, "bare LF in head");
  req_fails(LIT("GET / HTTP/1.1\r\nHost: a\r\n\n"), E, "bare LF in head");
  req_fails(LIT("GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n"), E, "bare LF in head");
  req_fails(LIT("\r\r"), E, "bare CR in head");
  req_fails(LIT("GET / HTTP/1.1\rX\r\n\r\n"), E, "bare CR in head");
  req_fails(LIT("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n"), E, "bare CR in head");
  req_fails(LIT("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"), E, "bare CR in head");
  /* A stray LF or CR is found as soon as it arrives, before the head
   * ends: the caller need not wait for max_head_bytes. */
  req_fails(LIT("GET / HTTP/1.1\n"), E, "bare LF in head");
  req_fails(LIT("GET /\rx"), E, "bare CR in head");
  /* Bytes after the head are not looked at. */
  parsed p;
  CHECK_EQ(req(&p, LIT("GET / HTTP/1.1\r\n\r\n\n\r\r")), 18);
  done(&p);
}

static void test_incomplete(void) {
  parsed p;
  CHECK_EQ(req(&p, LIT("")), 0);
  done(&p);
  CHECK_EQ(req(&p, LIT("GET / HTTP/1.1\r\nHost: a\r\n\r")), 0);
  done(&p);
  CHECK_EQ(req(&p, LIT("GET / HTTP/1.1\r\nHost: a\r\n")), 0);
  done(&p);
  /* A head that is malformed but incomplete is not judged yet (only stray
   * CR and LF are detected early). */
  CHECK_EQ(req(&p, LIT("G(T / HTTP/1.1\r\n")), 0);
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 101 Switching Protocols\r\n")), 0);
  done(&p);
}

static void test_header_values(void) {
  static const char in[] = "GET / HTTP/1.1\r\n"
                           "A:b\r\n"
                           "B: \t spaced  out \t \r\n"
                           "Empty:\r\n"
                           "Blank:   \r\n"
                           "Obs: caf\xc3\xa9 \xff\r\n"
                           "Tab: a\tb\r\n"
                           "X-Weird!#$%&'*+-.^_`|~09: ok\r\n"
                           "\r\n";
  parsed p;
  CHECK_EQ(req(&p, LIT(in)), sizeof in - 1);
  herald_header *h = p.o.h;
  CHECK_EQ(p.o.req.nheaders, 7);
  CHECK_STR(h[0].name, "A");
  CHECK_STR(h[0].value, "b");
  CHECK_STR(h[1].value, "spaced  out");
  CHECK_STR(h[2].name, "Empty");
  CHECK_EQ(h[2].value.len, 0);
  CHECK_EQ(h[3].value.len, 0);
  CHECK_STR(h[4].value, "caf\xc3\xa9 \xff");
  CHECK_STR(h[5].value, "a\tb");
  CHECK_STR(h[6].name, "X-Weird!#$%&'*+-.^_`|~09");
  done(&p);
}

static void test_header_errors(void) {
  const int E = HERALD_ERR_HTTP;
  req_fails(LIT("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), E,
            "obsolete line folding");
  req_fails(LIT("GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"), E,
            "obsolete line folding");
  req_fails(LIT("GET / HTTP/1.1\r\n A: b\r\n\r\n"), E, "obsolete line folding");
  req_fails(LIT("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), E,
            "whitespace before colon in header");
  req_fails(LIT("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"), E,
            "whitespace before colon in header");
  req_fails(LIT("GET / HTTP/1.1\r\n: a\r\n\r\n"), E, "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n"), E,
            "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n"), E,
            "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\n@: a\r\n\r\n"), E, "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nHost a\r\n\r\n"), E, "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nHost \r\n\r\n"), E, "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nHost a: b\r\n\r\n"), E,
            "invalid header name");
  req_fails(LIT("GET / HTTP/1.1\r\nHost\r\n\r\n"), E,
            "header line without colon");
  req_fails(LIT("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n"), E,
            "invalid character in header value");
  req_fails(LIT("GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n"), E,
            "invalid character in header value");
  req_fails("GET / HTTP/1.1\r\nA: \0\r\n\r\n", 25, E,
            "invalid character in header value");
  /* The same header checks apply to responses. */
  resp_fails(LIT("HTTP/1.1 101 OK\r\nA: b\r\n c\r\n\r\n"), E,
             "obsolete line folding");
  resp_fails(LIT("HTTP/1.1 101 OK\r\nA : b\r\n\r\n"), E,
             "whitespace before colon in header");
}

static void test_first_header_wins(void) {
  static const char in[] = "GET / HTTP/1.1\r\n"
                           "host: first\r\n"
                           "HOST: second\r\n"
                           "origin: o1\r\n"
                           "Origin: o2\r\n"
                           "\r\n";
  parsed p;
  CHECK_EQ(req(&p, LIT(in)), sizeof in - 1);
  CHECK_STR(p.o.req.host, "first");
  CHECK_STR(p.o.req.origin, "o1");
  done(&p);
}

/* ------------------------------------------------------------------------ */
/* Body framing (RFC 9112 section 6.3)                                       */
/* ------------------------------------------------------------------------ */

#define POST "POST /x HTTP/1.1\r\nHost: a\r\n"
#define R_SEVERAL "several Content-Length headers (RFC 9112 6.3)"
#define R_INVALID "invalid Content-Length (RFC 9112 6.3)"
#define R_TE_CL "Transfer-Encoding with Content-Length (RFC 9112 6.3)"
#define R_TE "Transfer-Encoding is not supported (RFC 9112 6.1)"

static void test_content_length_value(void) {
  uint64_t v = 7;
  herald_str s;
#define CL(lit) (s.ptr = (lit), s.len = sizeof(lit) - 1, s)
  CHECK_EQ(herald_http_content_length(CL("0"), &v), 0);
  CHECK_EQ(v, 0);
  CHECK_EQ(herald_http_content_length(CL("0005"), &v), 0);
  CHECK_EQ(v, 5);
  CHECK_EQ(herald_http_content_length(CL("18446744073709551615"), &v), 0);
  CHECK(v == UINT64_MAX);
  CHECK_EQ(herald_http_content_length(CL("000000000000000000000000000042"), &v),
           0);
  CHECK_EQ(v, 42);
  v = 7;
  static const char *const bad[] = {"",
                                    "18446744073709551616",
                                    "99999999999999999999",
                                    "+5",
                                    "-1",
                                    "5 ",
                                    " 5",
                                    "5,5",
                                    "5, 5",
                                    "0x5",
                                    "5.0",
                                    "1e3",
                                    "\xd9\xa1",
                                    "5\t"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    s.ptr = bad[i];
    s.len = strlen(bad[i]);
    CHECK_EQ(herald_http_content_length(s, &v), -1);
    CHECK_EQ(v, 7); /* untouched */
  }
  /* Only the span is read: what follows it does not count. */
  s.ptr = "12x";
  s.len = 2;
  CHECK_EQ(herald_http_content_length(s, &v), 0);
  CHECK_EQ(v, 12);
#undef CL
}

static void test_framing_requests(void) {
  const int E = HERALD_ERR_HTTP;
  parsed p;
  /* The smuggling probe of the review: two lengths that differ. Whatever
   * follows the head is never parsed as a second request, because the
   * parser refuses the first. Every test here is fed whole, one byte at a
   * time and split in two at every position (parse_all_ways). */
  req_fails(LIT(POST "Content-Length: 5\r\nContent-Length: 40\r\n\r\n"
                     "helloGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"),
            E, R_SEVERAL);
  req_fails(LIT(POST "Content-Length: 40\r\nX: y\r\ncontent-length: 5\r\n\r\n"),
            E, R_SEVERAL);
  /* Equal values are refused too (RFC 9112 6.3 item 5 allows either). */
  req_fails(LIT(POST "Content-Length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n"), E,
            R_SEVERAL);
  req_fails(LIT(POST "Content-Length: 5\r\nContent-Length: 5\r\n"
                     "Content-Length: 5\r\n\r\n"),
            E, R_SEVERAL);
  /* One line, but not one number. */
  req_fails(LIT(POST "Content-Length: 5, 5\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: 5,40\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length:\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length:   \r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: +5\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: -1\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: 1x\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: 4 0\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: 0x10\r\n\r\n"), E, R_INVALID);
  req_fails(LIT(POST "Content-Length: 18446744073709551616\r\n\r\n"), E,
            R_INVALID);
  req_fails(LIT(POST "Content-Length: 99999999999999999999999999\r\n\r\n"), E,
            R_INVALID);
  /* Transfer-Encoding: never with Content-Length, and not at all in a
   * request, whatever the coding or its spelling. */
  req_fails(LIT(POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            E, R_TE_CL);
  req_fails(LIT(POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
            E, R_TE_CL);
  req_fails(LIT(POST "Transfer-Encoding: chunked\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "transfer-encoding: CHUNKED\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "Transfer-Encoding: gzip, chunked\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "Transfer-Encoding: chunked, identity\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "Transfer-Encoding: identity\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "Transfer-Encoding:\r\n\r\n"), E, R_TE);
  req_fails(LIT(POST "Transfer-Encoding: chunked\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n"),
            E, R_TE);
  req_fails(LIT("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), E,
            R_TE);
  /* Names that only look alike are other headers. */
  CHECK_EQ(req(&p, LIT(POST "Content-Length : 5\r\n\r\n")), E);
  CHECK(strcmp(p.o.reason, "whitespace before colon in header") == 0);
  done(&p);
  CHECK_EQ(req(&p, LIT(POST "X-Content-Length: 5, 6\r\nContent-Lengths: x\r\n"
                            "Transfer-Encodings: chunked\r\n\r\n")),
           sizeof(POST "X-Content-Length: 5, 6\r\nContent-Lengths: x\r\n"
                       "Transfer-Encodings: chunked\r\n\r\n") -
               1);
  CHECK_EQ(p.o.req.content_length.len, 0);
  done(&p);
  /* What stays accepted: one valid length, surrounded by whitespace or with
   * leading zeros, and the largest 64-bit value. */
  CHECK_EQ(req(&p, LIT(POST "Content-Length: \t0042 \r\n\r\n")),
           sizeof(POST "Content-Length: \t0042 \r\n\r\n") - 1);
  CHECK_STR(p.o.req.content_length, "0042");
  done(&p);
  CHECK_EQ(req(&p, LIT(POST "Content-Length: 18446744073709551615\r\n\r\n")),
           sizeof(POST "Content-Length: 18446744073709551615\r\n\r\n") - 1);
  CHECK_STR(p.o.req.content_length, "18446744073709551615");
  done(&p);
  CHECK_EQ(req(&p, LIT(POST "\r\n")), sizeof(POST "\r\n") - 1);
  CHECK_EQ(p.o.req.content_length.len, 0);
  done(&p);
}

static void test_framing_byte_at_a_time(void) {
  /* The refusal is the same when the second Content-Length line arrives
   * byte by byte after a first head-sized prefix that is still incomplete:
   * feed the probe one byte per call with last_len carried along, and
   * check that no call before the end says anything but "incomplete". */
  static const char in[] = POST "Content-Length: 5\r\n"
                                "Content-Length: 40\r\n\r\n";
  herald_request r;
  herald_header h[MAXH];
  const char *why = NULL;
  size_t last = 0;
  for (size_t k = 1; k < sizeof in - 1; k++) {
    CHECK_EQ(herald__http_parse_request(in, k, last, 8192, &r, h, MAXH, &why),
             0);
    last = k;
  }
  CHECK_EQ(herald__http_parse_request(in, sizeof in - 1, last, 8192, &r, h,
                                      MAXH, &why),
           HERALD_ERR_HTTP);
  CHECK(why != NULL && strcmp(why, R_SEVERAL) == 0);
}

static void test_framing_responses(void) {
  const int E = HERALD_ERR_HTTP;
  parsed p;
#define RESP "HTTP/1.1 101 Switching Protocols\r\n"
  resp_fails(LIT(RESP "Content-Length: 0\r\nContent-Length: 5\r\n\r\n"), E,
             R_SEVERAL);
  resp_fails(LIT(RESP "Content-Length: 0\r\ncontent-length: 0\r\n\r\n"), E,
             R_SEVERAL);
  resp_fails(LIT(RESP "Content-Length: 0, 0\r\n\r\n"), E, R_INVALID);
  resp_fails(LIT(RESP "Content-Length: x\r\n\r\n"), E, R_INVALID);
  resp_fails(
      LIT(RESP "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"), E,
      R_TE_CL);
  /* Transfer-Encoding alone is left to the handshake checks: the client
   * reads no response body. One valid length is fine. */
  CHECK_EQ(resp(&p, LIT(RESP "Transfer-Encoding: chunked\r\n\r\n")),
           sizeof(RESP "Transfer-Encoding: chunked\r\n\r\n") - 1);
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")),
           sizeof("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n") - 1);
  done(&p);
#undef RESP
}

/* Builds "GET / HTTP/1.1\r\n" + n header lines + "\r\n" into a malloc'd
 * buffer. */
static char *head_with_headers(size_t n, size_t *len) {
  char *b = malloc(32 + n * 16);
  size_t o = (size_t)sprintf(b, "GET / HTTP/1.1\r\n");
  for (size_t i = 0; i < n; i++) {
    o += (size_t)sprintf(b + o, "H%zu: v\r\n", i);
  }
  o += (size_t)sprintf(b + o, "\r\n");
  *len = o;
  return b;
}

static void test_max_headers(void) {
  for (size_t max = 0; max <= 5; max++) {
    size_t len;
    char *b = head_with_headers(max, &len);
    parsed p;
    /* Exactly at the limit. */
    CHECK_EQ(parse_all_ways(&p, 0, b, len, 8192, max), len);
    CHECK_EQ(p.o.req.nheaders, max);
    done(&p);
    free(b);
    /* One over. */
    b = head_with_headers(max + 1, &len);
    CHECK_EQ(parse_all_ways(&p, 0, b, len, 8192, max), HERALD_ERR_HEAD_TOO_BIG);
    CHECK(strcmp(p.o.reason, "too many header lines") == 0);
    done(&p);
    free(b);
  }
  /* The default limit of the config, 64. */
  size_t len;
  char *b = head_with_headers(64, &len);
  parsed p;
  CHECK_EQ(parse_all_ways(&p, 0, b, len, 8192, 64), len);
  done(&p);
  free(b);
  b = head_with_headers(65, &len);
  CHECK_EQ(parse_all_ways(&p, 0, b, len, 8192, 64), HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  free(b);
  /* A response with more headers than allowed. */
  CHECK_EQ(
      parse_all_ways(&p, 1, LIT("HTTP/1.1 101 X\r\nA: b\r\n\r\n"), 8192, 0),
      HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  /* A malformed line before the limit is reported as malformed. */
  CHECK_EQ(parse_all_ways(&p, 0, LIT("GET / HTTP/1.1\r\n:\r\nA: b\r\n\r\n"),
                          8192, 1),
           HERALD_ERR_HTTP);
  done(&p);
}

static void test_max_head_bytes(void) {
  static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
  const size_t hl = sizeof in - 1 - 4;
  parsed p;
  /* Exactly at the limit: accepted, whatever follows the head. */
  CHECK_EQ(parse_all_ways(&p, 0, in, hl, hl, MAXH), hl);
  done(&p);
  CHECK_EQ(parse_all_ways(&p, 0, LIT(in), hl, MAXH), hl);
  done(&p);
  /* One over: refused once max_head_bytes bytes are there. */
  CHECK_EQ(parse_all_ways(&p, 0, in, hl, hl - 1, MAXH),
           HERALD_ERR_HEAD_TOO_BIG);
  CHECK(strcmp(p.o.reason, "HTTP head larger than max_head_bytes") == 0);
  done(&p);
  CHECK_EQ(parse_all_ways(&p, 0, LIT(in), hl - 1, MAXH),
           HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  /* Fewer bytes than the limit and no end yet: wait. */
  CHECK_EQ(parse_all_ways(&p, 0, in, hl - 2, hl - 1, MAXH), 0);
  done(&p);
  /* A stray LF past the limit is never seen: the head is too big. */
  CHECK_EQ(parse_all_ways(&p, 0, LIT("GET / HTTP/1.1\n"), 5, MAXH),
           HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  /* ...but one inside it is reported as malformed. */
  CHECK_EQ(parse_all_ways(&p, 0, LIT("GET\n / HTTP/1.1"), 5, MAXH),
           HERALD_ERR_HTTP);
  done(&p);
  /* A limit of zero allows nothing. */
  CHECK_EQ(parse_all_ways(&p, 0, LIT("GET / HTTP/1.1\r\n\r\n"), 0, MAXH),
           HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  /* Responses obey the same limit. */
  CHECK_EQ(parse_all_ways(&p, 1, LIT("HTTP/1.1 101\r\n\r\n"), 16, MAXH), 16);
  done(&p);
  CHECK_EQ(parse_all_ways(&p, 1, LIT("HTTP/1.1 101\r\n\r\n"), 15, MAXH),
           HERALD_ERR_HEAD_TOO_BIG);
  done(&p);
  /* A limit larger than an int can count is capped, not overflowed. */
  CHECK_EQ(parse_all_ways(&p, 1, LIT("HTTP/1.1 101\r\n\r\n"), SIZE_MAX, MAXH),
           16);
  done(&p);
}

static void test_last_len(void) {
  static const char in[] = "GET / HTTP/1.1\r\n\r\n";
  herald_request r;
  herald_header h[4];
  const char *why = NULL;
  /* Bytes before last_len are not scanned again: with last_len == len
   * nothing new arrived, so the parser does not look for the end. This is
   * what makes byte-at-a-time parsing O(n). */
  CHECK_EQ(herald__http_parse_request(in, 18, 18, 8192, &r, h, 4, &why), 0);
  /* The end is found when last_len leaves CR LF CR LF's final LF new. */
  CHECK_EQ(herald__http_parse_request(in, 18, 17, 8192, &r, h, 4, &why), 18);
  /* A last_len past len (a caller bug) makes the parser start over. */
  CHECK_EQ(herald__http_parse_request(in, 18, 100, 8192, &r, h, 4, &why), 18);
  /* Incomplete input and errors leave *req untouched. */
  memset(&r, 0xab, sizeof r);
  herald_request before = r;
  CHECK_EQ(herald__http_parse_request(in, 10, 0, 8192, &r, h, 4, &why), 0);
  CHECK(memcmp(&r, &before, sizeof r) == 0);
  CHECK_EQ(herald__http_parse_request("X\n", 2, 0, 8192, &r, h, 4, &why),
           HERALD_ERR_HTTP);
  CHECK(memcmp(&r, &before, sizeof r) == 0);
  /* reason may be NULL. */
  CHECK_EQ(herald__http_parse_request("X\n", 2, 0, 8192, &r, h, 4, NULL),
           HERALD_ERR_HTTP);
  herald_response s;
  CHECK_EQ(herald__http_parse_response("X\n", 2, 0, 8192, &s, h, 4, NULL),
           HERALD_ERR_HTTP);
}

static void test_linear_time(void) {
  /* A 512 KiB head fed one byte at a time: quadratic rescanning would take
   * about 10^11 steps, linear scanning a fraction of a second. */
  const size_t lines = 16384;
  size_t cap = 32 + lines * 32;
  char *b = malloc(cap);
  size_t n = (size_t)sprintf(b, "GET / HTTP/1.1\r\n");
  for (size_t i = 0; i < lines; i++) {
    n += (size_t)sprintf(b + n, "X-%06zu: 0123456789abcdef\r\n", i);
  }
  n += (size_t)sprintf(b + n, "\r\n");
  herald_header *h = malloc(lines * sizeof *h);
  herald_request r;
  const char *why = NULL;
  clock_t t0 = clock();
  size_t last = 0;
  int res = 0;
  for (size_t k = 1; k <= n; k++) {
    res = herald__http_parse_request(b, k, last, n, &r, h, lines, &why);
    if (res != 0) {
      break;
    }
    last = k;
  }
  double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
  CHECK_EQ(res, n);
  CHECK_EQ(r.nheaders, lines);
  CHECK(secs < 2.0);
  free(h);
  free(b);
}

/* ------------------------------------------------------------------------ */
/* Response parser                                                           */
/* ------------------------------------------------------------------------ */

static const char rfc_response[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "Sec-WebSocket-Protocol: chat\r\n"
    "\r\n";

static void test_response_basic(void) {
  parsed p;
  CHECK_EQ(resp(&p, LIT(rfc_response)), sizeof rfc_response - 1);
  herald_response *r = &p.o.resp;
  CHECK_EQ(r->status, 101);
  CHECK_STR(r->reason, "Switching Protocols");
  CHECK_EQ(r->version_minor, 1);
  CHECK_EQ(r->nheaders, 4);
  CHECK_EQ(r->head_len, sizeof rfc_response - 1);
  CHECK_STR(r->headers[2].name, "Sec-WebSocket-Accept");
  /* The parser does not fill the handshake fields. */
  CHECK_EQ(r->protocol.len, 0);
  CHECK_EQ(r->extensions.len, 0);
  done(&p);
}

static void test_response_status_lines(void) {
  parsed p;
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 101\r\n\r\n")), 16);
  CHECK_EQ(p.o.resp.status, 101);
  CHECK_EQ(p.o.resp.reason.len, 0);
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 101 \r\n\r\n")), 17);
  CHECK_EQ(p.o.resp.reason.len, 0);
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.0 404 Not \tFound \xe2\x9c\x97\r\n\r\n")), 31);
  CHECK_EQ(p.o.resp.status, 404);
  CHECK_EQ(p.o.resp.version_minor, 0);
  CHECK_STR(p.o.resp.reason, "Not \tFound \xe2\x9c\x97");
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 100 c\r\n\r\n")), 18);
  done(&p);
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 599 x\r\n\r\n")), 18);
  CHECK_EQ(p.o.resp.status, 599);
  done(&p);

  const int E = HERALD_ERR_HTTP;
  resp_fails(LIT("HTTP/2 101\r\n\r\n"), E, "invalid HTTP version");
  resp_fails(LIT("HTTP/2.0 101 OK\r\n\r\n"), E, "unsupported HTTP version");
  resp_fails(LIT("HTTP/1.1\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 \r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 10\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 10 OK\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 1010\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1  101 OK\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1x101 OK\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 1x1 OK\r\n\r\n"), E, "invalid status line");
  resp_fails(LIT("HTTP/1.1 099 OK\r\n\r\n"), E, "invalid status code");
  resp_fails(LIT("HTTP/1.1 600 OK\r\n\r\n"), E, "invalid status code");
  resp_fails(LIT("HTTP/1.1 101 O\x01K\r\n\r\n"), E,
             "invalid character in reason phrase");
  resp_fails(LIT("HTTP/1.1 101 OK\x7f\r\n\r\n"), E,
             "invalid character in reason phrase");
  resp_fails(LIT("http/1.1 101 OK\r\n\r\n"), E, "invalid HTTP version");
  resp_fails(LIT("HTTP/1.1 101 OK\n\r\n"), E, "bare LF in head");
}

/* ------------------------------------------------------------------------ */
/* herald__hs_check_request                                                  */
/* ------------------------------------------------------------------------ */

/* Parses a request every way and runs the handshake check on it. */
static int hs_req(parsed *p, const char *s, size_t n, const char **why) {
  *why = NULL;
  int r = req(p, s, n);
  CHECK_EQ(r, n);
  if (r <= 0) {
    return -1;
  }
  int st = herald__hs_check_request(&p->o.req, why);
  if (st >= 400) {
    CHECK(*why != NULL && (*why)[0] != '\0');
    CHECK_EQ(p->o.req.websocket, 0);
  }
  return st;
}

static void expect_refusal(const char *s, size_t n, int status,
                           const char *needle) {
  parsed p;
  const char *why;
  int st = hs_req(&p, s, n, &why);
  CHECK_EQ(st, status);
  if (why == NULL || strstr(why, needle) == NULL) {
    fprintf(stderr, "  reason %s lacks %s\n", why ? why : "(null)", needle);
    CHECK(0);
  }
  done(&p);
}

#define H_HOST "Host: h\r\n"
#define H_UPG "Upgrade: websocket\r\n"
#define H_CONN "Connection: Upgrade\r\n"
#define H_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define H_VER "Sec-WebSocket-Version: 13\r\n"
#define GET "GET / HTTP/1.1\r\n"

static void test_hs_request_valid(void) {
  parsed p;
  const char *why;
  CHECK_EQ(hs_req(&p, LIT(rfc_request), &why), 1);
  herald_request *r = &p.o.req;
  CHECK_EQ(r->websocket, 1);
  CHECK_STR(r->key, "dGhlIHNhbXBsZSBub25jZQ==");
  CHECK_STR(r->protocols, "chat, superchat");
  CHECK_EQ(r->extensions.len, 0);
  CHECK_STR(r->host, "server.example.com");
  CHECK_STR(r->origin, "http://example.com");
  done(&p);
  /* Minimal, with reason pointer NULL allowed. */
  CHECK_EQ(req(&p, LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER "\r\n")),
           sizeof(GET H_HOST H_UPG H_CONN H_KEY H_VER "\r\n") - 1);
  CHECK_EQ(herald__hs_check_request(&p.o.req, NULL), 1);
  done(&p);
}

static void test_hs_request_case_and_lists(void) {
  parsed p;
  const char *why;
  /* Names and tokens in any case; tokens inside lists. */
  CHECK_EQ(hs_req(&p,
                  LIT(GET "hOsT: h\r\nupgrade: WebSocket\r\n"
                          "CONNECTION: keep-alive, UPGRADE\r\n"
                          "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "SEC-WEBSOCKET-VERSION: 13\r\n\r\n"),
                  &why),
           1);
  CHECK_STR(p.o.req.key, "dGhlIHNhbXBsZSBub25jZQ==");
  done(&p);
  CHECK_EQ(
      hs_req(&p,
             LIT(GET H_HOST "Upgrade: websocket, foo/2\r\n"
                            "Connection: ,upgrade ,\r\n" H_KEY H_VER "\r\n"),
             &why),
      1);
  done(&p);
  /* Tokens spread over several lines of a list field. */
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST "Upgrade: h2c\r\nUpgrade: websocket\r\n"
                                 "Connection: keep-alive\r\n"
                                 "Connection: Upgrade\r\n" H_KEY H_VER "\r\n"),
                  &why),
           1);
  done(&p);
  /* Surrounding whitespace of the version is not part of the value. */
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST H_UPG H_CONN H_KEY
                      "Sec-WebSocket-Version: \t13 \r\n\r\n"),
                  &why),
           1);
  done(&p);
}

static void test_hs_request_first_line_only(void) {
  parsed p;
  const char *why;
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER
                      "Sec-WebSocket-Protocol: a, b\r\n"
                      "Sec-WebSocket-Protocol: c\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                      "Sec-WebSocket-Extensions: x\r\n\r\n"),
                  &why),
           1);
  CHECK_STR(p.o.req.protocols, "a, b");
  CHECK_STR(p.o.req.extensions, "permessage-deflate");
  done(&p);
}

static void test_hs_request_plain_http(void) {
  parsed p;
  const char *why;
  /* No Upgrade at all. */
  CHECK_EQ(hs_req(&p,
                  LIT("POST /x HTTP/1.0\r\nContent-Length: 12\r\n"
                      "Origin: o\r\n\r\n"),
                  &why),
           0);
  CHECK_EQ(p.o.req.websocket, 0);
  CHECK_STR(p.o.req.content_length, "12");
  CHECK_STR(p.o.req.origin, "o");
  CHECK_EQ(p.o.req.host.len, 0);
  done(&p);
  /* Another protocol, or a token that merely contains "websocket". */
  CHECK_EQ(hs_req(&p, LIT(GET H_HOST "Upgrade: h2c\r\n" H_CONN "\r\n"), &why),
           0);
  done(&p);
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST
                      "Upgrade: websockets, xwebsocket\r\n" H_CONN H_KEY H_VER
                      "\r\n"),
                  &why),
           0);
  CHECK_EQ(p.o.req.key.len, 0);
  done(&p);
  /* "websocket" in another header does not count. */
  CHECK_EQ(hs_req(&p, LIT(GET H_HOST "X-Upgrade: websocket\r\n\r\n"), &why), 0);
  done(&p);
  /* Duplicate Host on a plain request is the application's business. */
  CHECK_EQ(hs_req(&p, LIT(GET H_HOST H_HOST "\r\n"), &why), 0);
  CHECK_STR(p.o.req.host, "h");
  done(&p);
}

static void test_hs_request_refusals(void) {
  /* RFC 6455 4.2.1 item 1: GET only (405 is not used). */
  expect_refusal(
      LIT("POST / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n"), 400,
      "GET");
  expect_refusal(
      LIT("get / HTTP/1.1\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n"), 400,
      "GET");
  /* HTTP/1.1 or later. */
  expect_refusal(
      LIT("GET / HTTP/1.0\r\n" H_HOST H_UPG H_CONN H_KEY H_VER "\r\n"), 400,
      "HTTP/1.1");
  /* Exactly one Host. */
  expect_refusal(LIT(GET H_UPG H_CONN H_KEY H_VER "\r\n"), 400, "missing Host");
  expect_refusal(LIT(GET H_HOST "host: h2\r\n" H_UPG H_CONN H_KEY H_VER "\r\n"),
                 400, "duplicate Host");
  /* Connection must name upgrade. */
  expect_refusal(LIT(GET H_HOST H_UPG H_KEY H_VER "\r\n"), 400, "Connection");
  expect_refusal(
      LIT(GET H_HOST H_UPG "Connection: keep-alive\r\n" H_KEY H_VER "\r\n"),
      400, "Connection");
  expect_refusal(
      LIT(GET H_HOST H_UPG "Connection: upgrades\r\n" H_KEY H_VER "\r\n"), 400,
      "Connection");
  expect_refusal(LIT(GET H_HOST H_UPG "Connection:\r\n" H_KEY H_VER "\r\n"),
                 400, "Connection");
  /* Version exactly 13, else 426. */
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN H_KEY "\r\n"), 426, "13");
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 8\r\n\r\n"),
      426, "13");
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n"),
      426, "13");
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version: 013\r\n\r\n"),
      426, "13");
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY "Sec-WebSocket-Version:\r\n\r\n"), 426,
      "13");
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER H_VER "\r\n"), 426,
                 "13");
  /* Exactly one key, the base64 of 16 bytes. */
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN H_VER "\r\n"), 400,
                 "missing Sec-WebSocket-Key");
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN H_KEY H_KEY H_VER "\r\n"), 400,
                 "duplicate Sec-WebSocket-Key");
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n" H_VER
                     "\r\n"),
                 400, "base64");
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j\r\n" H_VER
                     "\r\n"),
                 400, "base64"); /* 15 bytes */
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXM=\r\n" H_VER
                     "\r\n"),
                 400, "base64"); /* 17 bytes */
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==\r\n" H_VER
                     "\r\n"),
                 400, "base64"); /* not canonical */
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN "Sec-WebSocket-Key:\r\n" H_VER "\r\n"), 400,
      "base64");
  /* The version is judged before the key: a client of another version gets
   * the 426 that names ours. */
  expect_refusal(LIT(GET H_HOST H_UPG H_CONN "Sec-WebSocket-Version: 14\r\n"
                                             "\r\n"),
                 426, "13");
}

/* An upgrade announcing a body: the bytes after the head would be frames to
 * us and a body to an intermediary that honours Content-Length. */
static void test_hs_request_body(void) {
  parsed p;
  const char *why;
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER "Content-Length: 5\r\n\r\n"), 400,
      "request body");
  expect_refusal(
      LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER "Content-Length: 00001\r\n\r\n"),
      400, "request body");
  /* A length of zero announces no body. */
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER
                      "Content-Length: 0\r\n\r\n"),
                  &why),
           1);
  done(&p);
  CHECK_EQ(hs_req(&p,
                  LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER
                      "Content-Length: 000\r\n\r\n"),
                  &why),
           1);
  done(&p);
  /* A plain request keeps its body: that is the application's to read. */
  CHECK_EQ(hs_req(&p, LIT(GET H_HOST "Content-Length: 5\r\n\r\n"), &why), 0);
  CHECK_STR(p.o.req.content_length, "5");
  done(&p);
  /* A request that did not come from the parser is judged the same way. */
  CHECK_EQ(hs_req(&p, LIT(GET H_HOST H_UPG H_CONN H_KEY H_VER "\r\n"), &why),
           1);
  p.o.req.content_length.ptr = "1x";
  p.o.req.content_length.len = 2;
  CHECK_EQ(herald__hs_check_request(&p.o.req, &why), 400);
  CHECK(why != NULL && strstr(why, "request body") != NULL);
  CHECK_EQ(p.o.req.websocket, 0);
  done(&p);
}

/* ------------------------------------------------------------------------ */
/* herald__hs_check_response                                                 */
/* ------------------------------------------------------------------------ */

static const char *const offered[] = {"chat", "superchat"};
static const char rfc_key[] = "dGhlIHNhbXBsZSBub25jZQ==";

#define R101 "HTTP/1.1 101 Switching Protocols\r\n"
#define R_UPG "Upgrade: websocket\r\n"
#define R_CONN "Connection: Upgrade\r\n"
#define R_ACC "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"

static int hs_resp(parsed *p, const char *s, size_t n, const char *const *offer,
                   size_t noffer, int allow_ext, const char **why) {
  *why = NULL;
  CHECK_EQ(resp(p, s, n), n);
  int r = herald__hs_check_response(&p->o.resp, rfc_key, offer, noffer,
                                    allow_ext, why);
  CHECK(r == 0 || r == -1);
  if (r != 0) {
    CHECK(*why != NULL && (*why)[0] != '\0');
  }
  return r;
}

static void expect_resp_fail(const char *s, size_t n, const char *const *offer,
                             size_t noffer, int allow_ext, const char *needle) {
  parsed p;
  const char *why;
  CHECK_EQ(hs_resp(&p, s, n, offer, noffer, allow_ext, &why), -1);
  if (why == NULL || strstr(why, needle) == NULL) {
    fprintf(stderr, "  reason %s lacks %s\n", why ? why : "(null)", needle);
    CHECK(0);
  }
  done(&p);
}

static void test_hs_response_valid(void) {
  parsed p;
  const char *why;
  CHECK_EQ(hs_resp(&p, LIT(rfc_response), offered, 2, 0, &why), 0);
  CHECK_STR(p.o.resp.protocol, "chat");
  CHECK_EQ(p.o.resp.extensions.len, 0);
  done(&p);
  /* No subprotocol offered or chosen; any case of the tokens. */
  CHECK_EQ(hs_resp(&p,
                   LIT("HTTP/1.1 101\r\nupgrade: WebSocket\r\n"
                       "connection: keep-alive, upgrade\r\n" R_ACC "\r\n"),
                   NULL, 0, 0, &why),
           0);
  CHECK_EQ(p.o.resp.protocol.len, 0);
  done(&p);
  /* Offered but not chosen is fine. */
  CHECK_EQ(
      hs_resp(&p, LIT(R101 R_UPG R_CONN R_ACC "\r\n"), offered, 2, 0, &why), 0);
  done(&p);
  /* Extensions accepted once the caller validates them. */
  CHECK_EQ(hs_resp(&p,
                   LIT(R101 R_UPG R_CONN R_ACC
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                       "Sec-WebSocket-Protocol: superchat\r\n\r\n"),
                   offered, 2, 1, &why),
           0);
  CHECK_STR(p.o.resp.extensions, "permessage-deflate");
  CHECK_STR(p.o.resp.protocol, "superchat");
  done(&p);
  /* reason may be NULL. */
  CHECK_EQ(resp(&p, LIT("HTTP/1.1 403 Forbidden\r\n\r\n")), 26);
  CHECK_EQ(herald__hs_check_response(&p.o.resp, rfc_key, NULL, 0, 0, NULL), -1);
  done(&p);
}

static void test_hs_response_refusals(void) {
  expect_resp_fail(LIT("HTTP/1.1 403 Forbidden\r\n" R_UPG R_CONN R_ACC "\r\n"),
                   NULL, 0, 0, "expected status 101");
  expect_resp_fail(LIT("HTTP/1.1 200 OK\r\n\r\n"), NULL, 0, 0,
                   "expected status 101");
  /* Upgrade: exactly websocket. */
  expect_resp_fail(LIT(R101 R_CONN R_ACC "\r\n"), NULL, 0, 0, "Upgrade");
  expect_resp_fail(LIT(R101 "Upgrade: h2c\r\n" R_CONN R_ACC "\r\n"), NULL, 0, 0,
                   "Upgrade");
  expect_resp_fail(LIT(R101 "Upgrade: websocket, h2c\r\n" R_CONN R_ACC "\r\n"),
                   NULL, 0, 0, "Upgrade");
  expect_resp_fail(LIT(R101 "Upgrade:\r\n" R_CONN R_ACC "\r\n"), NULL, 0, 0,
                   "Upgrade");
  expect_resp_fail(LIT(R101 R_UPG R_UPG R_CONN R_ACC "\r\n"), NULL, 0, 0,
                   "Upgrade");
  /* Connection: upgrade. */
  expect_resp_fail(LIT(R101 R_UPG R_ACC "\r\n"), NULL, 0, 0, "Connection");
  expect_resp_fail(LIT(R101 R_UPG "Connection: close\r\n" R_ACC "\r\n"), NULL,
                   0, 0, "Connection");
  /* Sec-WebSocket-Accept. */
  expect_resp_fail(LIT(R101 R_UPG R_CONN "\r\n"), NULL, 0, 0,
                   "missing Sec-WebSocket-Accept");
  expect_resp_fail(LIT(R101 R_UPG R_CONN
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOO=\r\n"
                       "\r\n"),
                   NULL, 0, 0, "Sec-WebSocket-Accept mismatch");
  expect_resp_fail(LIT(R101 R_UPG R_CONN
                       "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n"
                       "\r\n"),
                   NULL, 0, 0, "Sec-WebSocket-Accept mismatch");
  expect_resp_fail(LIT(R101 R_UPG R_CONN "Sec-WebSocket-Accept:\r\n\r\n"), NULL,
                   0, 0, "Sec-WebSocket-Accept mismatch");
  expect_resp_fail(LIT(R101 R_UPG R_CONN R_ACC R_ACC "\r\n"), NULL, 0, 0,
                   "Sec-WebSocket-Accept mismatch");
  /* Extensions not offered. */
  expect_resp_fail(LIT(R101 R_UPG R_CONN R_ACC
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"),
                   NULL, 0, 0, "extension");
  expect_resp_fail(
      LIT(R101 R_UPG R_CONN R_ACC "Sec-WebSocket-Extensions:\r\n\r\n"), NULL, 0,
      0, "extension");
  /* Subprotocols. */
  expect_resp_fail(
      LIT(R101 R_UPG R_CONN R_ACC "Sec-WebSocket-Protocol: chat\r\n\r\n"), NULL,
      0, 0, "subprotocol we did not offer");
  expect_resp_fail(
      LIT(R101 R_UPG R_CONN R_ACC "Sec-WebSocket-Protocol: mqtt\r\n\r\n"),
      offered, 2, 0, "subprotocol we did not offer");
  expect_resp_fail(
      LIT(R101 R_UPG R_CONN R_ACC "Sec-WebSocket-Protocol: Chat\r\n\r\n"),
      offered, 2, 0, "subprotocol we did not offer");
  expect_resp_fail(LIT(R101 R_UPG R_CONN R_ACC
                       "Sec-WebSocket-Protocol: chat, superchat\r\n\r\n"),
                   offered, 2, 0, "subprotocol we did not offer");
  expect_resp_fail(
      LIT(R101 R_UPG R_CONN R_ACC "Sec-WebSocket-Protocol:\r\n\r\n"), offered,
      2, 0, "subprotocol we did not offer");
  expect_resp_fail(LIT(R101 R_UPG R_CONN R_ACC
                       "Sec-WebSocket-Protocol: chat\r\n"
                       "Sec-WebSocket-Protocol: chat\r\n\r\n"),
                   offered, 2, 0, "several subprotocols");
  static const char *const with_null[] = {NULL, "", "chat"};
  parsed p;
  const char *why;
  CHECK_EQ(hs_resp(&p,
                   LIT(R101 R_UPG R_CONN R_ACC
                       "Sec-WebSocket-Protocol: chat\r\n\r\n"),
                   with_null, 3, 0, &why),
           0);
  done(&p);
  /* The accept value depends on the key we sent. */
  CHECK_EQ(resp(&p, LIT(R101 R_UPG R_CONN R_ACC "\r\n")), 129);
  CHECK_EQ(herald__hs_check_response(
               &p.o.resp, "AAAAAAAAAAAAAAAAAAAAAA==", NULL, 0, 0, &why),
           -1);
  CHECK_EQ(herald__hs_check_response(&p.o.resp, NULL, NULL, 0, 0, &why), -1);
  done(&p);
}

/* ------------------------------------------------------------------------ */
/* Public helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Collects the elements of list, joined with '|', into out. */
static void list_join(const char *s, size_t n, char *out, size_t cap) {
  char *copy = malloc(n ? n : 1);
  memcpy(copy, s, n);
  herald_str list = {copy, n};
  size_t pos = 0, o = 0;
  herald_str t;
  out[0] = '\0';
  while (herald_list_next(list, &pos, &t)) {
    CHECK(t.len > 0);
    CHECK(t.ptr >= copy && t.ptr + t.len <= copy + n);
    CHECK(pos <= n);
    o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? "|" : "", (int)t.len,
                          t.ptr);
  }
  CHECK_EQ(pos, n);
  /* At the end it stays at the end. */
  CHECK_EQ(herald_list_next(list, &pos, &t), 0);
  free(copy);
}

static void test_list_next(void) {
  char out[128];
  list_join(LIT(""), out, sizeof out);
  CHECK(strcmp(out, "") == 0);
  list_join(LIT(" ,\t, ,,"), out, sizeof out);
  CHECK(strcmp(out, "") == 0);
  list_join(LIT("a"), out, sizeof out);
  CHECK(strcmp(out, "a") == 0);
  list_join(LIT(" a , b ,, c "), out, sizeof out);
  CHECK(strcmp(out, "a|b|c") == 0);
  list_join(LIT("a,"), out, sizeof out);
  CHECK(strcmp(out, "a") == 0);
  list_join(LIT(",a"), out, sizeof out);
  CHECK(strcmp(out, "a") == 0);
  list_join(LIT("\tkeep-alive,\tUpgrade\t"), out, sizeof out);
  CHECK(strcmp(out, "keep-alive|Upgrade") == 0);
  /* Inner whitespace stays in the element. */
  list_join(LIT("a b , c"), out, sizeof out);
  CHECK(strcmp(out, "a b|c") == 0);
  /* Commas inside quoted-strings do not split (RFC 9110 5.6.4). */
  list_join(LIT("x; p=\"a,b\", y"), out, sizeof out);
  CHECK(strcmp(out, "x; p=\"a,b\"|y") == 0);
  list_join(LIT("x; p=\"a\\\",b\" , y"), out, sizeof out);
  CHECK(strcmp(out, "x; p=\"a\\\",b\"|y") == 0);
  list_join(LIT("x; p=\"a,b"), out, sizeof out);
  CHECK(strcmp(out, "x; p=\"a,b") == 0);
  list_join(LIT("x; p=\"a\\"), out, sizeof out);
  CHECK(strcmp(out, "x; p=\"a\\") == 0);
  list_join(LIT("\"q\""), out, sizeof out);
  CHECK(strcmp(out, "\"q\"") == 0);

  /* Degenerate arguments. */
  herald_str t;
  size_t pos = 0;
  herald_str none = {NULL, 0};
  CHECK_EQ(herald_list_next(none, &pos, &t), 0);
  herald_str ab = {"a,b", 3};
  pos = 7;
  CHECK_EQ(herald_list_next(ab, &pos, &t), 0);
  CHECK_EQ(herald_list_next(ab, NULL, &t), 0);
  pos = 1;
  CHECK_EQ(herald_list_next(ab, &pos, &t), 1);
  CHECK_STR(t, "b");
}

static void test_header_find(void) {
  herald_header h[3] = {
      {{"Host", 4}, {"a", 1}},
      {{"X-Thing", 7}, {"1", 1}},
      {{"x-thing", 7}, {"2", 1}},
  };
  herald_str v;
  CHECK_EQ(herald_header_find(h, 3, "host", &v), 1);
  CHECK_STR(v, "a");
  CHECK_EQ(herald_header_find(h, 3, "X-THING", &v), 1);
  CHECK_STR(v, "1");
  CHECK_EQ(herald_header_find(h, 3, "X-Thin", &v), 0);
  CHECK_EQ(herald_header_find(h, 3, "X-Things", &v), 0);
  CHECK_EQ(herald_header_find(h, 1, "X-Thing", &v), 0);
  CHECK_EQ(herald_header_find(h, 0, "Host", &v), 0);
  CHECK_EQ(herald_header_find(NULL, 0, "Host", &v), 0);
  CHECK_EQ(herald_header_find(h, 3, NULL, &v), 0);
  CHECK_EQ(herald_header_find(h, 3, "Host", NULL), 1);
  /* Only ASCII letters fold: '[' (0x5b) is not '{' (0x7b). */
  herald_header odd = {{"a[", 2}, {"", 0}};
  CHECK_EQ(herald_header_find(&odd, 1, "A{", &v), 0);
  CHECK_EQ(herald_header_find(&odd, 1, "A[", &v), 1);
}

static void test_accept_key(void) {
  char out[29];
  memset(out, 'x', sizeof out);
  /* RFC 6455 section 1.3. */
  herald_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  /* The key is hashed as given: only the first keylen bytes count. */
  herald_accept_key("dGhlIHNhbXBsZSBub25jZQ==garbage", 24, out);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  herald_accept_key(NULL, 0, out);
  CHECK_EQ(strlen(out), 28);
}

static void test_status_text(void) {
  CHECK(strcmp(herald__http_status_text(101), "Switching Protocols") == 0);
  CHECK(strcmp(herald__http_status_text(400), "Bad Request") == 0);
  CHECK(strcmp(herald__http_status_text(426), "Upgrade Required") == 0);
  CHECK(strcmp(herald__http_status_text(431),
               "Request Header Fields Too Large") == 0);
  CHECK(strcmp(herald__http_status_text(500), "Internal Server Error") == 0);
  CHECK(strcmp(herald__http_status_text(299), "Error") == 0);
  CHECK(strcmp(herald__http_status_text(-1), "Error") == 0);
  for (int s = 0; s < 1000; s++) {
    const char *t = herald__http_status_text(s);
    CHECK(t != NULL && t[0] != '\0');
  }
}

/* ------------------------------------------------------------------------ */
/* Guard page                                                                */
/* ------------------------------------------------------------------------ */

static void test_guard_page(void) {
  long pg = sysconf(_SC_PAGESIZE);
  char *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  if (m == MAP_FAILED) {
    return;
  }
  CHECK_EQ(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
  char *end = m + pg;
  static const struct {
    const char *s;
    int response;
  } in[] = {
      {rfc_request, 0},
      {rfc_response, 1},
      {"GET / HTTP/1.1\r\nHost: a\r\n\r", 0},
      {"GET / HTTP/1.1\r\nHost: a\r", 0},
      {"GET /\r", 0},
      {"G(T / HTTP/1.1\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\n\r\n", 0},
      {"GET / HTTP/1.", 0},
      {"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nA:\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nA:   \r\n\r\n", 0},
      {"\r\n\r\n", 0},
      {"\r\n\r\n", 1},
      {"HTTP/1.1 101\r\n\r\n", 1},
      {"HTTP/1.1 101 \r\n\r\n", 1},
      {"HTTP/1.1 10\r\n\r\n", 1},
      {"HTTP/1.1\r\n\r\n", 1},
      {"HTTP/1\r\n\r\n", 1},
      {"HTTP/1.1 101 OK\r\nA: b\r\n\r\n", 1},
  };
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    size_t n = strlen(in[i].s);
    for (size_t k = 0; k <= n; k++) {
      /* Every prefix ends right at the protected page, fed whole and as
       * an extension of the prefix one byte shorter. */
      char *b = end - k;
      memcpy(b, in[i].s, k);
      herald_header h[MAXH];
      const char *why;
      herald_request r;
      herald_response s;
      const size_t lasts[2] = {0, k ? k - 1 : 0};
      for (int j = 0; j < 2; j++) {
        size_t last = lasts[j];
        int res;
        if (in[i].response) {
          res =
              herald__http_parse_response(b, k, last, 8192, &s, h, MAXH, &why);
          if (res > 0) {
            const char *const o[] = {"chat"};
            (void)herald__hs_check_response(&s, rfc_key, o, 1, 0, &why);
          }
        } else {
          res = herald__http_parse_request(b, k, last, 8192, &r, h, MAXH, &why);
          if (res > 0) {
            (void)herald__hs_check_request(&r, &why);
          }
        }
        CHECK(res <= (int)k);
      }
    }
  }
  /* The helpers on spans that end at the page boundary. */
  static const char list[] = "a, b ,\t";
  char *l = end - (sizeof list - 1);
  memcpy(l, list, sizeof list - 1);
  herald_str ls = {l, sizeof list - 1};
  size_t pos = 0;
  herald_str t;
  int count = 0;
  while (herald_list_next(ls, &pos, &t)) {
    count++;
  }
  CHECK_EQ(count, 2);
  memcpy(end - 3, "x;\"", 3);
  ls.ptr = end - 3;
  ls.len = 3;
  pos = 0;
  CHECK_EQ(herald_list_next(ls, &pos, &t), 1);
  CHECK_EQ(t.len, 3);
  memcpy(end - 4, "Host", 4);
  herald_header hh = {{end - 4, 4}, {end - 4, 4}};
  CHECK_EQ(herald_header_find(&hh, 1, "host", NULL), 1);
  CHECK_EQ(herald_header_find(&hh, 1, "hostx", NULL), 0);
  memcpy(end - 24, rfc_key, 24);
  char out[29];
  herald_accept_key(end - 24, 24, out);
  CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
  munmap(m, (size_t)pg * 2);
}

int main(void) {
  RUN(test_request_basic);
  RUN(test_request_body_not_in_head);
  RUN(test_request_minimal);
  RUN(test_request_query_split);
  RUN(test_request_target_forms);
  RUN(test_request_target_chars);
  RUN(test_request_line_errors);
  RUN(test_bare_cr_lf);
  RUN(test_incomplete);
  RUN(test_header_values);
  RUN(test_header_errors);
  RUN(test_first_header_wins);
  RUN(test_content_length_value);
  RUN(test_framing_requests);
  RUN(test_framing_byte_at_a_time);
  RUN(test_framing_responses);
  RUN(test_max_headers);
  RUN(test_max_head_bytes);
  RUN(test_last_len);
  RUN(test_linear_time);
  RUN(test_response_basic);
  RUN(test_response_status_lines);
  RUN(test_hs_request_valid);
  RUN(test_hs_request_case_and_lists);
  RUN(test_hs_request_first_line_only);
  RUN(test_hs_request_plain_http);
  RUN(test_hs_request_refusals);
  RUN(test_hs_request_body);
  RUN(test_hs_response_valid);
  RUN(test_hs_response_refusals);
  RUN(test_list_next);
  RUN(test_header_find);
  RUN(test_accept_key);
  RUN(test_status_text);
  RUN(test_guard_page);
  return TEST_REPORT();
}
