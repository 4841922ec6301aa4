/* http1.c - bounded, incremental, zero-copy HTTP/1.1 head parser (RFC 9112)
 * and the RFC 6455 section 4 opening-handshake checks built on it.
 *
 * The parser keeps no state between calls: the caller presents everything
 * received so far and the length it presented last time. Only the bytes
 * after that length are scanned for the end of the head (and for stray CR or
 * LF); once the end is found the whole head is parsed in one pass. The total
 * work for a head delivered one byte at a time is therefore O(n), and the
 * result never depends on how the input was split. Nothing is allocated or
 * copied: every span points into the caller's buffer. */
#include "core/http1.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "core/sha1.h"

/* RFC 6455 section 1.3: the GUID appended to the key before hashing. */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ------------------------------------------------------------------------ */
/* Character classes                                                         */
/* ------------------------------------------------------------------------ */

/* RFC 9110 section 5.6.2: tchar, the characters of a token (method, header
 * name, list element such as "websocket" or "upgrade"). */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9')) {
    return 1;
  }
  switch (c) {
  case '!':
  case '#':
  case '$':
  case '%':
  case '&':
  case '\'':
  case '*':
  case '+':
  case '-':
  case '.':
  case '^':
  case '_':
  case '`':
  case '|':
  case '~':
    return 1;
  default:
    return 0;
  }
}

/* RFC 9110 section 5.5: field-vchar and the whitespace allowed inside a
 * field value (and, RFC 9112 section 4, inside a reason phrase): HTAB, SP,
 * VCHAR and obs-text. Every other control character, including NUL and DEL,
 * is refused rather than passed on to the application. */
static int is_field_char(unsigned char c) {
  return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int is_ows(char c) {
  return c == ' ' || c == '\t';
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Compares a span with a NUL-terminated ASCII string, ignoring case, as
 * header names (RFC 9110 section 5.1) and the tokens of Upgrade and
 * Connection (RFC 6455 section 4.2.1 items 3 and 4) require. */
static int str_ieq(herald_str s, const char *lit) {
  size_t n = strlen(lit);
  if (s.len != n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (ascii_lower(s.ptr[i]) != ascii_lower(lit[i])) {
      return 0;
    }
  }
  return 1;
}

static int str_eq(herald_str s, const char *lit) {
  size_t n = strlen(lit);
  return s.len == n && (n == 0 || memcmp(s.ptr, lit, n) == 0);
}

/* ------------------------------------------------------------------------ */
/* Public helpers                                                            */
/* ------------------------------------------------------------------------ */

HERALD_API int herald_header_find(const herald_header *headers, size_t n,
                                  const char *name, herald_str *value) {
  if (headers == NULL || name == NULL) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (str_ieq(headers[i].name, name)) {
      if (value != NULL) {
        *value = headers[i].value;
      }
      return 1;
    }
  }
  return 0;
}

HERALD_API int herald_list_next(herald_str list, size_t *pos,
                                herald_str *token) {
  if (pos == NULL || list.ptr == NULL) {
    return 0;
  }
  size_t i = *pos;
  /* RFC 9110 section 5.6.1: a recipient must accept and ignore empty list
   * elements such as ", ,a" and the whitespace around them. */
  while (i < list.len && (list.ptr[i] == ',' || is_ows(list.ptr[i]))) {
    i++;
  }
  if (i >= list.len) {
    *pos = list.len;
    return 0;
  }
  size_t start = i;
  size_t end = i;
  while (i < list.len && list.ptr[i] != ',') {
    if (list.ptr[i] == '"') {
      /* A quoted-string (RFC 9110 section 5.6.4), as in extension
       * parameters, may contain commas that do not end the element; a
       * backslash escapes the next character. An unterminated string runs
       * to the end of the list. */
      i++;
      while (i < list.len && list.ptr[i] != '"') {
        if (list.ptr[i] == '\\' && i + 1 < list.len) {
          i++;
        }
        i++;
      }
      if (i < list.len) {
        i++;
      }
      end = i;
      continue;
    }
    if (!is_ows(list.ptr[i])) {
      end = i + 1;
    }
    i++;
  }
  token->ptr = list.ptr + start;
  token->len = end - start;
  *pos = i;
  return 1;
}

/* Returns 1 if any header line named name holds a list with the element tok
 * (case-insensitive). Every line counts: RFC 9110 section 5.3 makes several
 * lines of a list-based field equivalent to one line joining them. */
static int any_list_has(const herald_header *h, size_t n, const char *name,
                        const char *tok) {
  for (size_t i = 0; i < n; i++) {
    if (!str_ieq(h[i].name, name)) {
      continue;
    }
    size_t pos = 0;
    herald_str t;
    while (herald_list_next(h[i].value, &pos, &t)) {
      if (str_ieq(t, tok)) {
        return 1;
      }
    }
  }
  return 0;
}

/* Counts the header lines named name; *first gets the first one's value. */
static size_t count_headers(const herald_header *h, size_t n, const char *name,
                            herald_str *first) {
  size_t count = 0;
  first->ptr = NULL;
  first->len = 0;
  for (size_t i = 0; i < n; i++) {
    if (str_ieq(h[i].name, name)) {
      if (count == 0) {
        *first = h[i].value;
      }
      count++;
    }
  }
  return count;
}

int herald_http_content_length(herald_str v, uint64_t *out) {
  /* RFC 9110 section 8.6: Content-Length = 1*DIGIT. No sign, no
   * whitespace inside, no list: "5, 5" is refused like "5, 6". */
  uint64_t n = 0;
  if (v.len == 0) {
    return -1;
  }
  for (size_t i = 0; i < v.len; i++) {
    if (!is_digit(v.ptr[i])) {
      return -1;
    }
    uint64_t d = (uint64_t)(v.ptr[i] - '0');
    if (n > (UINT64_MAX - d) / 10) {
      return -1;
    }
    n = n * 10 + d;
  }
  *out = n;
  return 0;
}

/*
 * Checks how the message's body is delimited (RFC 9112 section 6.3). The
 * parser reads heads only, and the one body framing this library delimits
 * is a single valid Content-Length; anything that another parser might read
 * differently is refused, since a disagreement about where a body ends is
 * what request smuggling exploits:
 *   - more than one Content-Length line, even with equal values (item 5
 *     allows accepting equal ones; refusing is simpler and just as safe);
 *   - a Content-Length that is not 1*DIGIT or does not fit in 64 bits;
 *   - Transfer-Encoding together with Content-Length (item 3: "ought to be
 *     handled as an error");
 *   - for a request, any Transfer-Encoding, chunked included, is refused, and
 *     a server must answer a coding it does not understand with an error
 *     and close (section 6.1; item 4 for codings not ending in chunked).
 * A response with only Transfer-Encoding is left alone: the client reads
 * no response body (a 101 has none, RFC 9110 section 15.2.2).
 */
static int check_framing(const herald_header *h, size_t n, int request,
                         const char **reason) {
  herald_str cl, te;
  uint64_t len;
  size_t ncl = count_headers(h, n, "Content-Length", &cl);
  size_t nte = count_headers(h, n, "Transfer-Encoding", &te);
  if (ncl > 1) {
    *reason = "several Content-Length headers (RFC 9112 6.3)";
    return HERALD_ERR_HTTP;
  }
  if (ncl == 1 && herald_http_content_length(cl, &len) != 0) {
    *reason = "invalid Content-Length (RFC 9112 6.3)";
    return HERALD_ERR_HTTP;
  }
  if (nte > 0 && ncl > 0) {
    *reason = "Transfer-Encoding with Content-Length (RFC 9112 6.3)";
    return HERALD_ERR_HTTP;
  }
  if (nte > 0 && request) {
    *reason = "Transfer-Encoding is not supported (RFC 9112 6.1)";
    return HERALD_ERR_HTTP;
  }
  return 0;
}

HERALD_API void herald_accept_key(const char *key, size_t keylen,
                                  char out[29]) {
  /* RFC 6455 section 4.2.2 item 5.4: base64(SHA-1(key + GUID)). The key is
   * hashed as sent, without decoding it. */
  herald_sha1 s;
  uint8_t digest[20];
  herald__sha1_init(&s);
  if (keylen > 0) {
    herald__sha1_update(&s, key, keylen);
  }
  herald__sha1_update(&s, ws_guid, sizeof ws_guid - 1);
  herald__sha1_final(&s, digest);
  /* 20 bytes encode to exactly 28 characters, which out has room for. */
  (void)herald_base64_encode(out, 28, digest, sizeof digest);
  out[28] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Head parser                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Finds the end of the head. Scans buf[last_len..limit) where limit is the
 * smaller of len and max_head_bytes, so the result for a given prefix is the
 * same however it was delivered. Each position i is checked together with
 * the byte before it:
 *   - LF must follow CR: RFC 9112 section 2.2 lets a recipient accept a bare
 *     LF, but a parser that does so disagrees with strict ones about where
 *     lines end (a request smuggling vector), so it is refused;
 *   - CR must be followed by LF, for the same reason (a bare CR is never
 *     valid in a head, RFC 9112 section 2.2);
 *   - LF preceded by CR LF CR ends the head.
 * Because every CR and LF is checked, the full parse afterwards can rely on
 * lines ending in exactly CR LF.
 */
static int find_head_end(const char *buf, size_t len, size_t last_len,
                         size_t max_head_bytes, const char **reason) {
  /* The head's length is returned as an int, so no head may be longer than
   * INT_MAX whatever the configured limit. */
  if (max_head_bytes > (size_t)INT_MAX) {
    max_head_bytes = (size_t)INT_MAX;
  }
  size_t limit = len < max_head_bytes ? len : max_head_bytes;
  /* last_len comes from a call that returned 0, so it cannot exceed limit;
   * if a caller passes a larger one anyway, rescanning from the start is
   * slower but still correct. */
  size_t i = last_len <= limit ? last_len : 0;
  for (; i < limit; i++) {
    char c = buf[i];
    if (c == '\n') {
      if (i == 0 || buf[i - 1] != '\r') {
        *reason = "bare LF in head";
        return HERALD_ERR_HTTP;
      }
      if (i >= 3 && buf[i - 2] == '\n') {
        return (int)(i + 1);
      }
    } else if (i > 0 && buf[i - 1] == '\r') {
      *reason = "bare CR in head";
      return HERALD_ERR_HTTP;
    }
  }
  if (len >= max_head_bytes) {
    /* The head did not end within the first max_head_bytes bytes. */
    *reason = "HTTP head larger than max_head_bytes";
    return HERALD_ERR_HEAD_TOO_BIG;
  }
  return 0;
}

/* Returns the index of the CR that ends the line starting at p. Only called
 * on a complete head, where the head scan guarantees that such a CR exists
 * before the head's end, so no length check is needed. */
static size_t line_end(const char *buf, size_t p) {
  while (buf[p] != '\r') {
    p++;
  }
  return p;
}

/*
 * Parses the header lines from p up to and including the empty line that
 * ends the head (RFC 9112 section 5). Returns 0 or an error.
 */
static int parse_headers(const char *buf, size_t p, herald_header *headers,
                         size_t max_headers, size_t *nheaders,
                         const char **reason) {
  size_t n = 0;
  for (;;) {
    if (buf[p] == '\r') {
      /* The empty line. With the CR LF before it, it is the first
       * CR LF CR LF, which the head scan found, so it ends the head. */
      *nheaders = n;
      return 0;
    }
    size_t eol = line_end(buf, p);
    if (is_ows(buf[p])) {
      /* RFC 9112 section 5.2: obs-fold. A server must reject it or replace
       * it; rejecting is the only choice that leaves the head untouched.
       * The same text covers whitespace before the first header line,
       * which RFC 9112 section 2.2 also says to reject. */
      *reason = "obsolete line folding";
      return HERALD_ERR_HTTP;
    }
    size_t q = p;
    while (q < eol && is_tchar((unsigned char)buf[q])) {
      q++;
    }
    if (q == eol) {
      *reason = "header line without colon";
      return HERALD_ERR_HTTP;
    }
    if (buf[q] != ':') {
      /* RFC 9112 section 5.1: no whitespace is allowed between the field
       * name and the colon, and a server must answer it with 400. It gets
       * its own reason because it is a classic smuggling probe. */
      size_t w = q;
      while (w < eol && is_ows(buf[w])) {
        w++;
      }
      *reason = q > p && w > q && w < eol && buf[w] == ':'
                    ? "whitespace before colon in header"
                    : "invalid header name";
      return HERALD_ERR_HTTP;
    }
    if (q == p) {
      *reason = "invalid header name";
      return HERALD_ERR_HTTP;
    }
    if (n == max_headers) {
      *reason = "too many header lines";
      return HERALD_ERR_HEAD_TOO_BIG;
    }
    size_t v = q + 1;
    while (v < eol && is_ows(buf[v])) {
      v++;
    }
    size_t vend = v;
    for (size_t k = v; k < eol; k++) {
      unsigned char c = (unsigned char)buf[k];
      if (!is_field_char(c)) {
        *reason = "invalid character in header value";
        return HERALD_ERR_HTTP;
      }
      if (!is_ows((char)c)) {
        vend = k + 1;
      }
    }
    /* RFC 9110 section 5.5: leading and trailing whitespace is not part of
     * the value. */
    headers[n].name.ptr = buf + p;
    headers[n].name.len = q - p;
    headers[n].value.ptr = buf + v;
    headers[n].value.len = vend - v;
    n++;
    p = eol + 2;
  }
}

/* Parses "HTTP/1.x" at buf[p..p+8) where the line ends at eol (RFC 9112
 * section 2.3). Returns the minor version, or -1 with *reason set. Other
 * major versions are refused: HTTP/2 and later do not use this syntax. */
static int parse_version(const char *buf, size_t p, size_t eol,
                         const char **reason) {
  if (eol - p < 8 || memcmp(buf + p, "HTTP/", 5) != 0 ||
      !is_digit(buf[p + 5]) || buf[p + 6] != '.' || !is_digit(buf[p + 7])) {
    *reason = "invalid HTTP version";
    return -1;
  }
  if (buf[p + 5] != '1') {
    *reason = "unsupported HTTP version";
    return -1;
  }
  return buf[p + 7] - '0';
}

/*
 * Checks the request-target (RFC 9112 section 3.2). Only origin-form
 * ("/path?query") and absolute-form ("scheme:...") are accepted: the
 * asterisk-form belongs to OPTIONS and the authority-form to CONNECT, neither
 * of which this server implements or can upgrade. A scheme is ALPHA
 * *( ALPHA / DIGIT / "+" / "-" / "." ) followed by ':' (RFC 3986 section 3.1).
 */
static int target_form_ok(const char *t, size_t n) {
  if (t[0] == '/') {
    return 1;
  }
  if (!is_alpha(t[0])) {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    char c = t[i];
    if (c == ':') {
      return 1;
    }
    if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '-' && c != '.') {
      return 0;
    }
  }
  return 0;
}

int herald__http_parse_request(const char *buf, size_t len, size_t last_len,
                               size_t max_head_bytes, herald_request *req,
                               herald_header *headers, size_t max_headers,
                               const char **reason) {
  const char *dummy;
  if (reason == NULL) {
    reason = &dummy;
  }
  int r = find_head_end(buf, len, last_len, max_head_bytes, reason);
  if (r <= 0) {
    return r;
  }
  size_t head_len = (size_t)r;
  herald_request out;
  memset(&out, 0, sizeof out);

  /* RFC 9112 section 3: request-line = method SP request-target SP
   * HTTP-version. Exactly one SP between the parts; the lenient splitting on
   * any whitespace that section 3 allows is not done, since it is another
   * way for two parsers to disagree. */
  size_t eol = line_end(buf, 0);
  size_t p = 0;
  while (p < eol && is_tchar((unsigned char)buf[p])) {
    p++;
  }
  if (p == 0 || p == eol || buf[p] != ' ') {
    *reason = "invalid request line";
    return HERALD_ERR_HTTP;
  }
  out.method.ptr = buf;
  out.method.len = p;
  size_t t = ++p;
  while (p < eol && buf[p] != ' ') {
    unsigned char c = (unsigned char)buf[p];
    /* RFC 3986 URIs are printable ASCII; CTLs, DEL and raw non-ASCII bytes
     * are refused (RFC 9112 section 3.2). */
    if (c <= 0x20 || c >= 0x7f) {
      *reason = "invalid character in request target";
      return HERALD_ERR_HTTP;
    }
    p++;
  }
  if (p == t || p == eol) {
    *reason = "invalid request line";
    return HERALD_ERR_HTTP;
  }
  if (!target_form_ok(buf + t, p - t)) {
    *reason = "unsupported request target form";
    return HERALD_ERR_HTTP;
  }
  out.target.ptr = buf + t;
  out.target.len = p - t;
  const char *qm = memchr(out.target.ptr, '?', out.target.len);
  out.path.ptr = out.target.ptr;
  if (qm != NULL) {
    out.path.len = (size_t)(qm - out.target.ptr);
    out.query.ptr = qm + 1;
    out.query.len = out.target.len - out.path.len - 1;
  } else {
    out.path.len = out.target.len;
    out.query.ptr = out.target.ptr + out.target.len;
  }
  p++;
  int minor = parse_version(buf, p, eol, reason);
  if (minor < 0) {
    return HERALD_ERR_HTTP;
  }
  if (p + 8 != eol) {
    *reason = "invalid request line";
    return HERALD_ERR_HTTP;
  }
  out.version_minor = minor;

  size_t nheaders = 0;
  r = parse_headers(buf, eol + 2, headers, max_headers, &nheaders, reason);
  if (r < 0) {
    return r;
  }
  r = check_framing(headers, nheaders, 1, reason);
  if (r < 0) {
    return r;
  }
  out.headers = headers;
  out.nheaders = nheaders;
  out.head_len = head_len;
  /* The fields that describe every request; the first line wins here, and
   * herald__hs_check_request looks for duplicates where they matter
   * (check_framing has already refused a repeated Content-Length). */
  herald_header_find(headers, nheaders, "Host", &out.host);
  herald_header_find(headers, nheaders, "Origin", &out.origin);
  herald_header_find(headers, nheaders, "Content-Length", &out.content_length);
  *req = out;
  return (int)head_len;
}

int herald__http_parse_response(const char *buf, size_t len, size_t last_len,
                                size_t max_head_bytes, herald_response *resp,
                                herald_header *headers, size_t max_headers,
                                const char **reason) {
  const char *dummy;
  if (reason == NULL) {
    reason = &dummy;
  }
  int r = find_head_end(buf, len, last_len, max_head_bytes, reason);
  if (r <= 0) {
    return r;
  }
  size_t head_len = (size_t)r;
  herald_response out;
  memset(&out, 0, sizeof out);

  /* RFC 9112 section 4: status-line = HTTP-version SP status-code SP
   * [ reason-phrase ]. A missing SP before an empty reason is tolerated
   * ("HTTP/1.1 101"): some servers send it and nothing depends on it. */
  size_t eol = line_end(buf, 0);
  int minor = parse_version(buf, 0, eol, reason);
  if (minor < 0) {
    return HERALD_ERR_HTTP;
  }
  if (eol < 12 || buf[8] != ' ' || !is_digit(buf[9]) || !is_digit(buf[10]) ||
      !is_digit(buf[11]) || (eol > 12 && buf[12] != ' ')) {
    *reason = "invalid status line";
    return HERALD_ERR_HTTP;
  }
  int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
  /* RFC 9110 section 15: values outside 100..599 are invalid. */
  if (status < 100 || status > 599) {
    *reason = "invalid status code";
    return HERALD_ERR_HTTP;
  }
  size_t rs = eol > 12 ? 13 : 12;
  for (size_t k = rs; k < eol; k++) {
    if (!is_field_char((unsigned char)buf[k])) {
      *reason = "invalid character in reason phrase";
      return HERALD_ERR_HTTP;
    }
  }
  out.status = status;
  out.reason.ptr = buf + rs;
  out.reason.len = eol - rs;
  out.version_minor = minor;

  size_t nheaders = 0;
  r = parse_headers(buf, eol + 2, headers, max_headers, &nheaders, reason);
  if (r < 0) {
    return r;
  }
  r = check_framing(headers, nheaders, 0, reason);
  if (r < 0) {
    return r;
  }
  out.headers = headers;
  out.nheaders = nheaders;
  out.head_len = head_len;
  *resp = out;
  return (int)head_len;
}

/* ------------------------------------------------------------------------ */
/* Handshake checks                                                          */
/* ------------------------------------------------------------------------ */

int herald__hs_check_request(herald_request *req, const char **reason) {
  const char *dummy;
  if (reason == NULL) {
    reason = &dummy;
  }
  const herald_header *h = req->headers;
  size_t n = req->nheaders;

  req->websocket = 0;
  req->key.ptr = NULL;
  req->key.len = 0;
  req->protocols = req->key;
  req->extensions = req->key;
  herald_str host;
  size_t nhost = count_headers(h, n, "Host", &host);
  req->host = host;
  herald_header_find(h, n, "Origin", &req->origin);
  herald_header_find(h, n, "Content-Length", &req->content_length);

  /* RFC 6455 section 4.2.1 item 3: the Upgrade header names "websocket".
   * Without it this is an ordinary request, which the application may serve
   * (RFC 9110 section 7.8 lets a server ignore Upgrade anyway). */
  if (!any_list_has(h, n, "Upgrade", "websocket")) {
    return 0;
  }
  /* RFC 6455 section 4.2.1 item 1: an HTTP/1.1 or higher GET request.
   * Methods are case-sensitive (RFC 9110 section 9.1). A wrong method is
   * answered with 400 rather than 405 because it is the upgrade, not the
   * resource, that does not allow it. */
  if (!str_eq(req->method, "GET")) {
    *reason = "WebSocket upgrade must use GET (RFC 6455 4.2.1)";
    return 400;
  }
  if (req->version_minor < 1) {
    *reason = "WebSocket upgrade needs HTTP/1.1 (RFC 6455 4.2.1)";
    return 400;
  }
  /* After the 101 the bytes that follow the head are frames, so an upgrade
   * has no body. One that announces a body would be delimited one way by
   * an intermediary that honours Content-Length (RFC 9112 section 6.3) and
   * another way by us: refused. "Content-Length: 0" is harmless. */
  uint64_t body_len = 0;
  if (req->content_length.len > 0 &&
      (herald_http_content_length(req->content_length, &body_len) != 0 ||
       body_len > 0)) {
    *reason = "WebSocket upgrade with a request body (RFC 9112 6.3)";
    return 400;
  }
  /* RFC 6455 section 4.2.1 item 2 and RFC 9112 section 3.2: exactly one
   * Host header. */
  if (nhost == 0) {
    *reason = "missing Host header (RFC 9112 3.2)";
    return 400;
  }
  if (nhost > 1) {
    *reason = "duplicate Host header (RFC 9112 3.2)";
    return 400;
  }
  /* RFC 6455 section 4.2.1 item 4: Connection includes "Upgrade". */
  if (!any_list_has(h, n, "Connection", "upgrade")) {
    *reason = "Connection header lacks upgrade (RFC 6455 4.2.1)";
    return 400;
  }
  /* RFC 6455 section 4.2.1 item 6 and section 4.4: version 13, and nothing
   * else, on a single line. It is checked before the key because a client
   * speaking another version may well send a different key, and the 426
   * (which tells it our version) is the more useful answer. */
  herald_str version;
  size_t nversion = count_headers(h, n, "Sec-WebSocket-Version", &version);
  if (nversion != 1 || !str_eq(version, "13")) {
    *reason = "Sec-WebSocket-Version must be 13 (RFC 6455 4.2.1)";
    return 426;
  }
  /* RFC 6455 section 4.2.1 item 5 and section 11.3.1: one key, the base64
   * of 16 bytes. */
  herald_str key;
  size_t nkey = count_headers(h, n, "Sec-WebSocket-Key", &key);
  if (nkey == 0) {
    *reason = "missing Sec-WebSocket-Key (RFC 6455 4.2.1)";
    return 400;
  }
  if (nkey > 1) {
    *reason = "duplicate Sec-WebSocket-Key (RFC 6455 11.3.1)";
    return 400;
  }
  uint8_t raw[16];
  if (herald_base64_decode(raw, sizeof raw, key.ptr, key.len) != 16) {
    *reason = "Sec-WebSocket-Key is not base64 of 16 bytes (RFC 6455 4.2.1)";
    return 400;
  }
  req->websocket = 1;
  req->key = key;
  /* Sec-WebSocket-Protocol and Sec-WebSocket-Extensions may legally be sent
   * on several lines (RFC 6455 sections 11.3.2 and 11.3.4, RFC 9110 section
   * 5.3). Only the first line is exposed, because herald_list_next walks
   * one span and the spans must point into the caller's buffer unchanged. */
  herald_header_find(h, n, "Sec-WebSocket-Protocol", &req->protocols);
  herald_header_find(h, n, "Sec-WebSocket-Extensions", &req->extensions);
  return 1;
}

int herald__hs_check_response(herald_response *resp, const char *key,
                              const char *const *offered, size_t noffered,
                              int allow_extensions, const char **reason) {
  const char *dummy;
  if (reason == NULL) {
    reason = &dummy;
  }
  const herald_header *h = resp->headers;
  size_t n = resp->nheaders;
  herald_str protocol, extensions;
  size_t nprotocol = count_headers(h, n, "Sec-WebSocket-Protocol", &protocol);
  size_t nextensions =
      count_headers(h, n, "Sec-WebSocket-Extensions", &extensions);
  resp->protocol = protocol;
  resp->extensions = extensions;

  /* RFC 6455 section 4.1, the client's checks of the server's handshake. */
  if (resp->status != 101) {
    *reason = "expected status 101 Switching Protocols (RFC 6455 4.1)";
    return -1;
  }
  /* Step 2: Upgrade must be "websocket" (any case), and only that. */
  herald_str upgrade;
  size_t nupgrade = count_headers(h, n, "Upgrade", &upgrade);
  size_t pos = 0;
  herald_str tok;
  if (nupgrade != 1 || !herald_list_next(upgrade, &pos, &tok) ||
      !str_ieq(tok, "websocket") || herald_list_next(upgrade, &pos, &tok)) {
    *reason = "Upgrade header is not websocket (RFC 6455 4.1)";
    return -1;
  }
  /* Step 3: Connection contains the token "Upgrade" (any case). */
  if (!any_list_has(h, n, "Connection", "upgrade")) {
    *reason = "Connection header lacks upgrade (RFC 6455 4.1)";
    return -1;
  }
  /* Step 4: Sec-WebSocket-Accept is base64(SHA-1(key + GUID)). */
  herald_str accept;
  size_t naccept = count_headers(h, n, "Sec-WebSocket-Accept", &accept);
  if (naccept == 0) {
    *reason = "missing Sec-WebSocket-Accept (RFC 6455 4.1)";
    return -1;
  }
  char expected[29];
  herald_accept_key(key, key != NULL ? strlen(key) : 0, expected);
  if (naccept > 1 || accept.len != 28 ||
      memcmp(accept.ptr, expected, 28) != 0) {
    *reason = "Sec-WebSocket-Accept mismatch (RFC 6455 4.1)";
    return -1;
  }
  /* Step 5: an extension we did not offer fails the connection. Until the
   * caller offers and validates extensions itself, any is refused. */
  if (nextensions > 0 && !allow_extensions) {
    *reason = "server accepted an extension we did not offer (RFC 6455 4.1)";
    return -1;
  }
  /* Step 6: a subprotocol must be exactly one of those offered (compared
   * case-sensitively: RFC 6455 section 11.3.4 registers them as given). */
  if (nprotocol > 0) {
    if (nprotocol > 1) {
      *reason = "server sent several subprotocols (RFC 6455 4.1)";
      return -1;
    }
    int found = 0;
    for (size_t i = 0; i < noffered && !found; i++) {
      found = offered[i] != NULL && offered[i][0] != '\0' &&
              str_eq(protocol, offered[i]);
    }
    if (!found) {
      *reason = "server chose a subprotocol we did not offer (RFC 6455 4.1)";
      return -1;
    }
  }
  return 0;
}

const char *herald__http_status_text(int status) {
  /* RFC 9110 section 15, plus 426 (section 15.5.22) and 431 (RFC 6585
   * section 5), the two this library sends most. */
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Error";
  }
}
