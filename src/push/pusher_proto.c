/* pusher_proto.c - Pusher's wire formats and signatures as pure functions:
 * HMAC-SHA256 and MD5 in hex (OpenSSL), "key:signature" checks, socket ids,
 * the event a Pusher publication carries, and event encoding. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "push/pusher_int.h"

static void to_hex(const unsigned char *in, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[in[i] >> 4];
    out[2 * i + 1] = hex[in[i] & 15];
  }
  out[2 * n] = 0;
}

int pusher_hmac_hex(const char *key, const char *p, size_t n, char out[65]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)p, n, md,
           &mdlen) == NULL ||
      mdlen != 32) {
    return -1;
  }
  to_hex(md, 32, out);
  return 0;
}

int pusher_md5_hex(const char *p, size_t n, char out[33]) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (EVP_Digest(p, n, md, &mdlen, EVP_md5(), NULL) != 1 || mdlen != 16) {
    return -1;
  }
  to_hex(md, 16, out);
  return 0;
}

int pusher_hex_equal(const char *a, const char *b, size_t bn) {
  size_t an = strlen(a);
  unsigned diff = (unsigned)(an != bn);
  for (size_t i = 0; i < an; i++) {
    diff |= (unsigned)(a[i] ^ (i < bn ? b[i] : 0));
  }
  return diff == 0;
}

int pusher_auth_ok(const push_pusher_app *app, const char *auth, size_t alen,
                   const char *text, size_t tlen) {
  size_t klen = strlen(app->key);
  char want[65];
  if (alen <= klen + 1 || memcmp(auth, app->key, klen) != 0 ||
      auth[klen] != ':' || pusher_hmac_hex(app->secret, text, tlen, want)) {
    return 0;
  }
  return pusher_hex_equal(want, auth + klen + 1, alen - klen - 1);
}

int pusher_socket_id_valid(const char *s, size_t n) {
  size_t dot = 0, i = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9') {
    i++;
  }
  dot = i;
  if (dot == 0 || dot >= n || s[dot] != '.' || n - dot - 1 == 0 || n > 31) {
    return 0;
  }
  for (i = dot + 1; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return 0;
    }
  }
  return 1;
}

/* A publication made by pusher_publish is {"offset":N,"data":["S",E]} with
 * S a socket id (digits and a dot), "" or "!t": the hub wrote the offset,
 * the publisher the rest, so the layout is known and the event is found
 * without parsing it. */
const char *pusher_pub_event(const push_pub *pub, const char **skip,
                             size_t *skiplen, size_t *len) {
  static const char head[] = ",\"data\":[\"";
  const char *p = pub->frame + pub->json_off;
  size_t n = pub->json_len, i = 10; /* {"offset": */
  if (n < 16 || memcmp(p, "{\"offset\":", 10) != 0) {
    return NULL;
  }
  while (i < n && p[i] >= '0' && p[i] <= '9') {
    i++;
  }
  if (n - i < sizeof(head) - 1 || memcmp(p + i, head, sizeof(head) - 1) != 0) {
    return NULL;
  }
  i += sizeof(head) - 1;
  size_t s0 = i;
  while (i < n && p[i] != '"') {
    i++;
  }
  if (i + 2 >= n || p[i + 1] != ',') {
    return NULL;
  }
  *skip = p + s0;
  *skiplen = i - s0;
  size_t e0 = i + 2;
  /* The publication ends with "]}". */
  if (n < e0 + 2 || p[n - 1] != '}' || p[n - 2] != ']') {
    return NULL;
  }
  *len = n - 2 - e0;
  return p + e0;
}

int pusher_put_event(push_buf *b, const char *event, const char *channel,
                     const char *data, size_t dlen, int raw) {
  size_t len0 = b->len;
  int rv = push_buf_raw(b, "{\"event\":", 9) ||
           push_buf_str(b, event, strlen(event));
  if (channel != NULL) {
    rv = rv || push_buf_raw(b, ",\"channel\":", 11) ||
         push_buf_str(b, channel, strlen(channel));
  }
  if (data != NULL) {
    rv = rv || push_buf_raw(b, ",\"data\":", 8) ||
         (raw ? push_buf_raw(b, data, dlen) : push_buf_str(b, data, dlen));
  }
  rv = rv || push_buf_raw(b, "}", 1);
  if (rv) {
    b->len = len0;
    return -1;
  }
  return 0;
}

size_t pusher_json_str_len(push_json v) {
  size_t n = 0;
  if (v.n < 2 || v.p[0] != '"') {
    return v.n;
  }
  for (size_t i = 1; i + 1 < v.n; i++) {
    if (v.p[i] == '\\') {
      i++;
      if (i < v.n && v.p[i] == 'u') {
        i += 4;
        n += 2; /* most \u escapes stand for 1-3 bytes */
        continue;
      }
    }
    n++;
  }
  return n;
}

int pusher_parse_join(const char *frame, size_t len, pusher_join *j) {
  push_json root, push, who, v;
  j->info = NULL;
  j->leave = 0;
  if (push_json_parse(frame, len, &root) != 0 ||
      !push_json_get(root, "push", &push)) {
    return -1;
  }
  if (!push_json_get(push, "join", &who)) {
    if (!push_json_get(push, "leave", &who)) {
      return -1;
    }
    j->leave = 1;
  }
  if (!push_json_get(who, "client", &v) ||
      push_json_str(v, j->client, sizeof(j->client)) < 0 ||
      !push_json_get(who, "user", &v) ||
      push_json_str(v, j->user, sizeof(j->user)) < 0) {
    return -1;
  }
  if (!j->leave && push_json_get(who, "info", &v) &&
      push_json_type_of(v) != PUSH_JSON_NULL &&
      (j->info = strndup(v.p, v.n)) == NULL) {
    return -1;
  }
  return 0;
}
