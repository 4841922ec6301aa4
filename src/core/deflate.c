/*
 * deflate.c - permessage-deflate (RFC 7692): the extension header grammar
 * and the negotiation for both roles. The compression streams are in
 * zstream.c.
 *
 * Grammar (RFC 6455 9.1, RFC 7692 5 and 7.1):
 *   Sec-WebSocket-Extensions = 1#extension
 *   extension = token *( OWS ";" OWS param )
 *   param     = token [ OWS "=" OWS ( token / quoted-string ) ]
 * A quoted value is unquoted (backslash escapes removed) before it is
 * checked. permessage-deflate knows four parameters; a window-bits value is
 * a decimal integer 8..15 without leading zeroes.
 *
 * zlib quirk: raw deflate refuses windowBits 8 (older versions silently used
 * 9), so we never compress with 8. Inflating with a larger window than the
 * peer used is always safe, and decompressors always use 15 (see
 * herald__zinflate_new()).
 */
#include "core/deflate.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* Header grammar                                                            */
/* ------------------------------------------------------------------------ */

static int is_tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch));
}

static void skip_ows(herald_str s, size_t *pos) {
  while (*pos < s.len && (s.ptr[*pos] == ' ' || s.ptr[*pos] == '\t')) {
    (*pos)++;
  }
}

static int take_token(herald_str s, size_t *pos, herald_str *tok) {
  size_t start = *pos;
  while (*pos < s.len && is_tchar((unsigned char)s.ptr[*pos])) {
    (*pos)++;
  }
  tok->ptr = s.ptr + start;
  tok->len = *pos - start;
  return tok->len > 0 ? 0 : -1;
}

/* A quoted-string (RFC 9110 5.6.4), span including the quotes. */
static int take_quoted(herald_str s, size_t *pos, herald_str *tok) {
  size_t start = (*pos)++;
  while (*pos < s.len) {
    unsigned char ch = (unsigned char)s.ptr[*pos];
    if (ch == '"') {
      (*pos)++;
      tok->ptr = s.ptr + start;
      tok->len = *pos - start;
      return 0;
    }
    if (ch == '\\') {
      (*pos)++;
      if (*pos >= s.len) {
        return -1;
      }
      ch = (unsigned char)s.ptr[*pos];
      if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
        return -1;
      }
    } else if (ch != '\t' && (ch < 0x20 || ch == 0x7f)) {
      return -1;
    }
    (*pos)++;
  }
  return -1;
}

typedef struct ext_param {
  herald_str name;
  herald_str value; /* as sent (quotes included); len 0: no value */
} ext_param;

/* The next parameter of an extension at *pos (just after its name or the
 * previous parameter). Returns 1 and fills *p, 0 at the end of the extension
 * (*pos is then at the ',' or the end), -1 on a syntax error. */
static int param_next(herald_str s, size_t *pos, ext_param *p) {
  skip_ows(s, pos);
  if (*pos >= s.len || s.ptr[*pos] == ',') {
    return 0;
  }
  if (s.ptr[*pos] != ';') {
    return -1;
  }
  (*pos)++;
  skip_ows(s, pos);
  if (take_token(s, pos, &p->name) != 0) {
    return -1;
  }
  p->value.ptr = NULL;
  p->value.len = 0;
  skip_ows(s, pos);
  if (*pos < s.len && s.ptr[*pos] == '=') {
    (*pos)++;
    skip_ows(s, pos);
    if (*pos < s.len && s.ptr[*pos] == '"') {
      return take_quoted(s, pos, &p->value) == 0 ? 1 : -1;
    }
    return take_token(s, pos, &p->value) == 0 ? 1 : -1;
  }
  return 1;
}

/* The next extension of a list at *pos: its name, and *params where its
 * parameters start. Empty list elements are skipped. Returns 1, 0 at the
 * end, -1 on a syntax error. */
static int ext_next(herald_str s, size_t *pos, herald_str *name,
                    size_t *params) {
  for (;;) {
    skip_ows(s, pos);
    if (*pos >= s.len) {
      return 0;
    }
    if (s.ptr[*pos] != ',') {
      break;
    }
    (*pos)++;
  }
  if (take_token(s, pos, name) != 0) {
    return -1;
  }
  *params = *pos;
  ext_param p;
  int rv;
  while ((rv = param_next(s, pos, &p)) == 1) {
  }
  return rv < 0 ? -1 : 1;
}

static int str_ieq(herald_str a, const char *b) {
  size_t n = strlen(b);
  return a.len == n && strncasecmp(a.ptr, b, n) == 0;
}

/* Window bits from a value (token or quoted-string): 8..15 without leading
 * zeroes, else 0. */
static int window_bits(herald_str v) {
  char digits[4];
  size_t n = 0;
  size_t i = 0, end = v.len;
  if (v.len >= 2 && v.ptr[0] == '"') {
    i = 1;
    end = v.len - 1;
  }
  for (; i < end; i++) {
    char ch = v.ptr[i];
    if (ch == '\\' && v.ptr[0] == '"') {
      ch = v.ptr[++i];
    }
    if (n == sizeof(digits) - 1 || ch < '0' || ch > '9') {
      return 0;
    }
    digits[n++] = ch;
  }
  if (n == 0 || (n > 1 && digits[0] == '0')) {
    return 0;
  }
  int bits = 0;
  for (size_t k = 0; k < n; k++) {
    bits = bits * 10 + (digits[k] - '0');
  }
  return bits >= 8 && bits <= 15 ? bits : 0;
}

/* Parses the parameters of a permessage-deflate element starting at pos.
 * response: the element is a server's response (client_max_window_bits then
 * needs a value). Returns 0, or -1 with *why: an unknown, repeated or
 * invalid parameter (RFC 7692 7: "the extension negotiation offer/response
 * ... MUST be declined/failed"). */
static int pmd_params(herald_str s, size_t pos, int response, herald__pmd *o,
                      const char **why) {
  memset(o, 0, sizeof(*o));
  unsigned seen = 0;
  ext_param p;
  int rv;
  while ((rv = param_next(s, &pos, &p)) == 1) {
    unsigned bit;
    if (str_ieq(p.name, "server_no_context_takeover")) {
      bit = 1;
      o->snct = 1;
    } else if (str_ieq(p.name, "client_no_context_takeover")) {
      bit = 2;
      o->cnct = 1;
    } else if (str_ieq(p.name, "server_max_window_bits")) {
      bit = 4;
      o->smwb = (uint8_t)window_bits(p.value);
      if (o->smwb == 0) {
        *why = "invalid server_max_window_bits (RFC 7692 7.1.2.1)";
        return -1;
      }
    } else if (str_ieq(p.name, "client_max_window_bits")) {
      bit = 8;
      if (p.value.len == 0 && !response) {
        o->cmwb = 1;
      } else {
        o->cmwb = (uint8_t)window_bits(p.value);
        if (o->cmwb == 0) {
          *why = "invalid client_max_window_bits (RFC 7692 7.1.2.2)";
          return -1;
        }
      }
    } else {
      *why = "unknown permessage-deflate parameter (RFC 7692 7.1)";
      return -1;
    }
    if ((bit & 3) && p.value.len != 0) {
      *why = "a no_context_takeover parameter with a value (RFC 7692 7.1.1)";
      return -1;
    }
    if (seen & bit) {
      *why = "repeated permessage-deflate parameter (RFC 7692 7.1)";
      return -1;
    }
    seen |= bit;
  }
  if (rv < 0) {
    *why = "malformed Sec-WebSocket-Extensions (RFC 6455 9.1)";
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Negotiation                                                               */
/* ------------------------------------------------------------------------ */

static size_t put(char *out, size_t len, const char *s) {
  size_t n = strlen(s);
  memcpy(out + len, s, n);
  return len + n;
}

static size_t put_bits(char *out, size_t len, const char *name, int bits) {
  char tmp[48];
  snprintf(tmp, sizeof(tmp), "; %s=%d", name, bits);
  return put(out, len, tmp);
}

size_t herald__pmd_offer(const herald_deflate_config *cfg, char *out) {
  size_t n = put(out, 0, "permessage-deflate");
  if (cfg->server_no_context_takeover) {
    n = put(out, n, "; server_no_context_takeover");
  }
  if (cfg->client_no_context_takeover) {
    n = put(out, n, "; client_no_context_takeover");
  }
  if (cfg->server_max_window_bits < 15) {
    n = put_bits(out, n, "server_max_window_bits", cfg->server_max_window_bits);
  }
  /* RFC 7692 7.1.2.2: offered so the server may limit our window; without
   * a value we can use any. */
  if (cfg->client_max_window_bits < 15) {
    n = put_bits(out, n, "client_max_window_bits", cfg->client_max_window_bits);
  } else {
    n = put(out, n, "; client_max_window_bits");
  }
  return n;
}

/* Decides one offer; fills *r (the response) and returns 1, or 0 to decline
 * it. */
static int accept_offer(const herald_deflate_config *cfg, const herald__pmd *o,
                        herald__pmd *r) {
  memset(r, 0, sizeof(*r));
  /* RFC 7692 7.1.1: a server may always add either no_context_takeover. */
  r->snct = (uint8_t)(o->snct || cfg->server_no_context_takeover);
  r->cnct = (uint8_t)(o->cnct || cfg->client_no_context_takeover);
  /* 7.1.2.1: our window, at most what the client allows. zlib cannot
   * compress with 8 bits: decline an offer that demands it. */
  int sbits = cfg->server_max_window_bits < 9 ? 9 : cfg->server_max_window_bits;
  if (o->smwb != 0 && o->smwb < sbits) {
    sbits = o->smwb;
  }
  if (sbits < 9) {
    return 0;
  }
  if (o->smwb != 0 || sbits < 15) {
    r->smwb = (uint8_t)sbits;
  }
  /* 7.1.2.2: we may limit the client's window only if it offered the
   * parameter; a policy below 15 needs that. */
  int cbits = cfg->client_max_window_bits;
  if (o->cmwb == 0) {
    if (cbits < 15) {
      return 0;
    }
  } else {
    if (o->cmwb >= 8 && o->cmwb < cbits) {
      cbits = o->cmwb;
    }
    if (cbits < 15 || o->cmwb >= 8) {
      r->cmwb = (uint8_t)cbits;
    }
  }
  return 1;
}

static size_t pmd_text(const herald__pmd *r, char *out) {
  size_t n = put(out, 0, "permessage-deflate");
  if (r->snct) {
    n = put(out, n, "; server_no_context_takeover");
  }
  if (r->cnct) {
    n = put(out, n, "; client_no_context_takeover");
  }
  if (r->smwb) {
    n = put_bits(out, n, "server_max_window_bits", r->smwb);
  }
  if (r->cmwb) {
    n = put_bits(out, n, "client_max_window_bits", r->cmwb);
  }
  return n;
}

int herald__pmd_accept(const herald_deflate_config *cfg, const herald_header *h,
                       size_t n, herald__pmd *agreed, char *out,
                       size_t *outlen) {
  for (size_t i = 0; i < n; i++) {
    if (!str_ieq(h[i].name, "Sec-WebSocket-Extensions")) {
      continue;
    }
    herald_str v = h[i].value;
    size_t pos = 0, params;
    herald_str name;
    int rv;
    while ((rv = ext_next(v, &pos, &name, &params)) == 1) {
      herald__pmd offer;
      const char *why;
      if (!str_ieq(name, "permessage-deflate") ||
          pmd_params(v, params, 0, &offer, &why) != 0) {
        continue; /* another extension, or an offer we must decline */
      }
      if (accept_offer(cfg, &offer, agreed)) {
        *outlen = pmd_text(agreed, out);
        return 1;
      }
    }
  }
  return 0;
}

int herald__pmd_check_response(const herald_deflate_config *cfg,
                               const herald_header *h, size_t n,
                               herald__pmd *agreed, const char **why) {
  int found = 0;
  for (size_t i = 0; i < n; i++) {
    if (!str_ieq(h[i].name, "Sec-WebSocket-Extensions")) {
      continue;
    }
    herald_str v = h[i].value;
    size_t pos = 0, params;
    herald_str name;
    int rv;
    while ((rv = ext_next(v, &pos, &name, &params)) == 1) {
      if (!str_ieq(name, "permessage-deflate")) {
        *why = "server accepted an extension we did not offer (RFC 6455 9.1)";
        return -1;
      }
      if (found) {
        *why = "server accepted permessage-deflate twice (RFC 7692 5)";
        return -1;
      }
      found = 1;
      if (pmd_params(v, params, 1, agreed, why) != 0) {
        return -1;
      }
    }
    if (rv < 0) {
      *why = "malformed Sec-WebSocket-Extensions (RFC 6455 9.1)";
      return -1;
    }
  }
  if (!found) {
    return 0;
  }
  /* RFC 7692 7.1.2.1: never a larger server window than we asked for. */
  if (cfg->server_max_window_bits < 15 &&
      (agreed->smwb == 0 || agreed->smwb > cfg->server_max_window_bits)) {
    *why = "server_max_window_bits larger than offered (RFC 7692 7.1.2.1)";
    return -1;
  }
  /* 7.1.2.2 allows client_max_window_bits in a response only because we
   * always offer it. */
  return 1;
}
