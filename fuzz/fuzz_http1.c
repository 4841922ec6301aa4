/* fuzz_http1.c - libFuzzer target for the HTTP/1.1 head parser and the
 * handshake checks.
 *
 * The first input byte picks the parser (bit 0: request or response), a
 * header-count limit (bits 1-3) and a head-size limit (bits 4-7); small
 * limits are included so that the limit paths are reached often. Seeds are
 * plain text: a selector character, then the head. The rest is
 * parsed whole, then again one byte at a time with last_len carried along,
 * and once more split at a point chosen from the input; every way must give
 * the same result, error text and spans, or the target aborts. Successful
 * parses are handed to the handshake checks, whose results must stay within
 * their contracts, and every header value is walked as a list. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 64

typedef struct outcome {
  int r;
  const char *reason;
  herald_request req;
  herald_response resp;
  herald_header h[MAXH];
} outcome;

static void parse(outcome *o, int response, const char *buf, size_t len,
                  size_t last_len, size_t max_bytes, size_t max_headers) {
  memset(o, 0, sizeof *o);
  if (response) {
    o->r = herald__http_parse_response(buf, len, last_len, max_bytes, &o->resp,
                                       o->h, max_headers, &o->reason);
  } else {
    o->r = herald__http_parse_request(buf, len, last_len, max_bytes, &o->req,
                                      o->h, max_headers, &o->reason);
  }
}

static int span_eq(herald_str a, herald_str b) {
  return a.len == b.len && (a.len == 0 || a.ptr == b.ptr);
}

/* Both outcomes come from the same buffer, so equal spans are equal
 * pointers. */
static void must_agree(const outcome *a, const outcome *b) {
  if (a->r != b->r) {
    abort();
  }
  if (a->r < 0 && strcmp(a->reason, b->reason) != 0) {
    abort();
  }
  if (a->r <= 0) {
    return;
  }
  const herald_request *p = &a->req, *q = &b->req;
  const herald_response *s = &a->resp, *t = &b->resp;
  if (p->nheaders != q->nheaders || s->nheaders != t->nheaders ||
      p->head_len != q->head_len || s->head_len != t->head_len ||
      p->version_minor != q->version_minor ||
      s->version_minor != t->version_minor || s->status != t->status ||
      !span_eq(p->method, q->method) || !span_eq(p->target, q->target) ||
      !span_eq(p->path, q->path) || !span_eq(p->query, q->query) ||
      !span_eq(p->host, q->host) || !span_eq(p->origin, q->origin) ||
      !span_eq(p->content_length, q->content_length) ||
      !span_eq(s->reason, t->reason)) {
    abort();
  }
  size_t n = p->nheaders > s->nheaders ? p->nheaders : s->nheaders;
  for (size_t i = 0; i < n; i++) {
    if (!span_eq(a->h[i].name, b->h[i].name) ||
        !span_eq(a->h[i].value, b->h[i].value)) {
      abort();
    }
  }
}

static int name_is(herald_str s, const char *lit) {
  size_t n = strlen(lit);
  if (s.len != n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    char c = s.ptr[i];
    if (c >= 'A' && c <= 'Z') {
      c = (char)(c - 'A' + 'a');
    }
    if (c != lit[i]) {
      return 0;
    }
  }
  return 1;
}

/* RFC 9112 6.3, judged again from the headers: an accepted head has at most
 * one Content-Length, made of digits only, never together with
 * Transfer-Encoding, and a request has no Transfer-Encoding at all; the
 * request's content_length is that one value. */
static void check_framing(const outcome *o, int response) {
  const herald_header *h = response ? o->resp.headers : o->req.headers;
  size_t n = response ? o->resp.nheaders : o->req.nheaders;
  size_t ncl = 0, nte = 0;
  herald_str cl = {NULL, 0};
  for (size_t i = 0; i < n; i++) {
    if (name_is(h[i].name, "content-length")) {
      cl = h[i].value;
      ncl++;
    }
    nte += name_is(h[i].name, "transfer-encoding");
  }
  uint64_t v;
  if (ncl > 1 || (ncl == 1 && herald_http_content_length(cl, &v) != 0) ||
      (nte > 0 && (ncl > 0 || !response))) {
    abort();
  }
  for (size_t i = 0; i < cl.len; i++) {
    if (cl.ptr[i] < '0' || cl.ptr[i] > '9') {
      abort();
    }
  }
  if (!response && (ncl != (o->req.content_length.len > 0) ||
                    (ncl == 1 && o->req.content_length.ptr != cl.ptr))) {
    abort();
  }
}

/* A span must lie inside the head. */
static void in_head(herald_str s, const char *buf, size_t head_len) {
  if (s.len > 0 && (s.ptr < buf || s.ptr + s.len > buf + head_len)) {
    abort();
  }
}

static void check_success(outcome *o, int response, const char *buf, size_t len,
                          size_t max_bytes, size_t max_headers, uint8_t sel) {
  size_t head_len = (size_t)o->r;
  if (head_len > len || head_len > max_bytes || head_len < 4 ||
      memcmp(buf + head_len - 4, "\r\n\r\n", 4) != 0) {
    abort();
  }
  const herald_header *h = response ? o->resp.headers : o->req.headers;
  size_t n = response ? o->resp.nheaders : o->req.nheaders;
  if (n > max_headers || (n > 0 && h != o->h)) {
    abort();
  }
  check_framing(o, response);
  for (size_t i = 0; i < n; i++) {
    in_head(h[i].name, buf, head_len);
    in_head(h[i].value, buf, head_len);
    if (h[i].name.len == 0) {
      abort();
    }
    /* Walk the value as a list: elements are non-empty, inside the value,
     * and the position only moves forward. */
    size_t pos = 0, prev = 0;
    herald_str tok;
    while (herald_list_next(h[i].value, &pos, &tok)) {
      if (tok.len == 0 || pos <= prev || pos > h[i].value.len ||
          tok.ptr < h[i].value.ptr ||
          tok.ptr + tok.len > h[i].value.ptr + h[i].value.len) {
        abort();
      }
      prev = pos;
    }
  }
  const char *why = NULL;
  if (response) {
    static const char *const offered[] = {"chat", "superchat"};
    int r =
        herald__hs_check_response(&o->resp, "dGhlIHNhbXBsZSBub25jZQ==", offered,
                                  sel & 1 ? 2 : 0, (sel >> 1) & 1, &why);
    if (r != 0 && (r != -1 || why == NULL)) {
      abort();
    }
    if (r == 0 && o->resp.status != 101) {
      abort();
    }
    in_head(o->resp.protocol, buf, head_len);
    in_head(o->resp.extensions, buf, head_len);
  } else {
    in_head(o->req.method, buf, head_len);
    in_head(o->req.target, buf, head_len);
    int r = herald__hs_check_request(&o->req, &why);
    if (r == 1) {
      if (!o->req.websocket || o->req.key.len != 24) {
        abort();
      }
      char accept[29];
      herald_accept_key(o->req.key.ptr, o->req.key.len, accept);
      if (strlen(accept) != 28) {
        abort();
      }
    } else if (r == 0) {
      if (o->req.websocket) {
        abort();
      }
    } else if ((r != 400 && r != 426) || why == NULL || o->req.websocket) {
      abort();
    }
    in_head(o->req.key, buf, head_len);
    in_head(o->req.host, buf, head_len);
    in_head(o->req.protocols, buf, head_len);
    in_head(o->req.extensions, buf, head_len);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The tables are ordered so that printable selector characters give
   * useful settings, which keeps the seed corpus plain text: '|' (0x7c) is
   * a request and '}' (0x7d) a response, both with 64 headers and 8192
   * bytes, the defaults of herald_config_init(). */
  static const size_t header_limits[8] = {0, 1, 2, 3, 4, 8, MAXH, 16};
  static const size_t byte_limits[16] = {0, 1, 2, 16, 64,  512, SIZE_MAX, 8192,
                                         3, 4, 8, 32, 128, 256, 1024,     4096};
  if (size == 0) {
    return 0;
  }
  uint8_t sel = data[0];
  int response = sel & 1;
  size_t max_headers = header_limits[(sel >> 1) & 7];
  size_t max_bytes = byte_limits[sel >> 4];
  size_t len = size - 1;
  /* An exact-size copy, so that ASan sees any read past len. */
  char *buf = malloc(len ? len : 1);
  if (buf == NULL) {
    return 0;
  }
  memcpy(buf, data + 1, len);

  outcome *whole = malloc(sizeof *whole);
  outcome *part = malloc(sizeof *part);
  if (whole == NULL || part == NULL) {
    abort();
  }
  parse(whole, response, buf, len, 0, max_bytes, max_headers);
  if (whole->r < 0 &&
      (whole->reason == NULL ||
       (whole->r != HERALD_ERR_HTTP && whole->r != HERALD_ERR_HEAD_TOO_BIG))) {
    abort();
  }

  /* Growing prefix, as a connection receiving one byte per read sees it.
   * It starts from the empty prefix, which a zero max_head_bytes already
   * refuses. */
  size_t last = 0;
  int decided = 0;
  for (size_t k = 0; k <= len && !decided; k++) {
    parse(part, response, buf, k, last, max_bytes, max_headers);
    if (part->r == 0) {
      last = k;
    } else {
      must_agree(part, whole);
      decided = 1;
    }
  }
  if (!decided && whole->r != 0) {
    abort();
  }

  /* One split, at a point taken from the input's length. */
  if (len > 0) {
    size_t k = (len * 7 + sel) % (len + 1);
    parse(part, response, buf, k, 0, max_bytes, max_headers);
    if (part->r != 0) {
      must_agree(part, whole);
    } else {
      parse(part, response, buf, len, k, max_bytes, max_headers);
      must_agree(part, whole);
    }
  }

  if (whole->r > 0) {
    check_success(whole, response, buf, len, max_bytes, max_headers, sel);
  }
  free(part);
  free(whole);
  free(buf);
  return 0;
}
