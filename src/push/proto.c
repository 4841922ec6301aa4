/* proto.c - the client protocol of docs/protocol.md as pure functions:
 * commands decoded from a frame's text, replies and pushes encoded into a
 * push_buf.
 *
 * Decoding refuses everything the protocol does not describe, with an
 * error code and a static message that says what was wrong, because a
 * client developer reads those messages while debugging. Fields that a
 * method does not use are ignored, so that clients may send more than this
 * server knows. A JSON null in an optional field counts as an absent field,
 * which is what JavaScript clients produce for an unset option. */
#include "push/push.h"

#include <string.h>

#include "herald/core.h"

/* ------------------------------------------------------------------------ */
/* Channels                                                                  */
/* ------------------------------------------------------------------------ */

static int channel_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
         c == ':' || c == '@' || c == '/' || c == '=' || c == ',';
}

int push_channel_valid(const char *name, size_t n) {
  if (n == 0 || n > PUSH_CHANNEL_MAX) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (!channel_char((unsigned char)name[i])) {
      return 0;
    }
  }
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Base64 (RFC 4648 section 4) inside a JSON string                          */
/* ------------------------------------------------------------------------ */

/* The ASCII character at p[*pi] of a string's contents, unescaped, or -1
 * when it is not one. Encoders may write '/' as "\/" (PHP does), and any
 * character as \u00XX; every other escape stands for a character outside
 * the base64 alphabet. */
static int string_ascii(const char *p, size_t n, size_t *pi) {
  size_t i = *pi;
  int v = 0;
  if (p[i] != '\\') {
    *pi = i + 1;
    return (unsigned char)p[i] < 0x80 ? p[i] : -1;
  }
  if (i + 1 < n && p[i + 1] == '/') {
    *pi = i + 2;
    return '/';
  }
  if (i + 1 >= n || p[i + 1] != 'u' || n - i < 6) {
    return -1;
  }
  for (size_t k = 2; k < 6; k++) {
    char c = p[i + k];
    int h = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (h < 0) {
      return -1;
    }
    v = v << 4 | h;
  }
  *pi = i + 6;
  return v < 0x80 ? v : -1;
}

/* Whether a string value holds canonical padded base64: groups of four
 * characters, '=' only as the last one or two, and the bits that padding
 * leaves unused set to zero (RFC 4648 sections 3.5 and 4), so that one
 * payload has one encoding. The empty string is the encoding of no bytes. */
static int b64_valid(push_json s) {
  const char *p = s.p + 1;
  size_t n = s.n - 2, i = 0, count = 0, pad = 0;
  int last = 0;
  while (i < n) {
    int c = string_ascii(p, n, &i);
    if (c == '=') {
      if (++pad > 2) {
        return 0;
      }
    } else {
      int v = c < 0 ? -1 : herald_base64_value((unsigned char)c, '+', '/');
      if (v < 0 || pad > 0) {
        return 0;
      }
      last = v;
    }
    count++;
  }
  if (count % 4 != 0) {
    return 0;
  }
  return (pad == 1 && (last & 3) == 0) || (pad == 2 && (last & 15) == 0) ||
         pad == 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding commands                                                         */
/* ------------------------------------------------------------------------ */

static const struct {
  const char *name;
  push_method method;
} methods[] = {
    {"connect", PUSH_CONNECT},
    {"subscribe", PUSH_SUBSCRIBE},
    {"unsubscribe", PUSH_UNSUBSCRIBE},
    {"publish", PUSH_PUBLISH},
    {"presence", PUSH_PRESENCE},
    {"history", PUSH_HISTORY},
    {"ping", PUSH_PING},
    {"refresh", PUSH_REFRESH},
    {"sub_refresh", PUSH_SUB_REFRESH},
    {"rpc", PUSH_RPC},
};

/* An optional member: 1 with *out when present and not null. */
static int optional(push_json obj, const char *key, push_json *out) {
  return push_json_get(obj, key, out) &&
         push_json_type_of(*out) != PUSH_JSON_NULL;
}

/* The static messages, one per way a command can be wrong. */
static const char msg_json[] = "malformed JSON";
static const char msg_dup_key[] = "duplicate key in JSON object";
static const char msg_nomem[] = "out of memory";
static const char msg_object[] = "command must be an object";
static const char msg_no_id[] = "missing id";
static const char msg_dup_id[] = "duplicate id";
static const char msg_bad_id[] = "id must be a positive integer";
static const char msg_no_method[] = "missing method";
static const char msg_two_methods[] = "more than one method";
static const char msg_unknown[] = "unknown method";
static const char msg_params[] = "params must be an object";
static const char msg_no_channel[] = "missing channel";
static const char msg_bad_channel[] = "invalid channel";
static const char msg_token[] = "token must be a string";
static const char msg_name[] = "name must be a string";
static const char msg_no_data[] = "publish needs data or b64";
static const char msg_data_and_b64[] = "publish takes data or b64, not both";
static const char msg_b64[] = "b64 must be a base64 string";
static const char msg_since[] = "since must be an object";
static const char msg_epoch[] = "since.epoch must be a string of at most 16 "
                                "bytes";
static const char msg_offset[] = "since.offset must be a non-negative integer";
static const char msg_limit[] = "limit must be a non-negative integer";
static const char msg_need_token[] = "token is missing";
static const char msg_rpc[] = "method must be a string of 1 to 255 bytes";
static const char msg_idem[] = "idempotency_key must be a string of 1 to "
                               "64 printable ASCII characters";

static const char *decode_channel(push_json params, push_cmd *cmd) {
  push_json v;
  long len;
  if (!optional(params, "channel", &v)) {
    return msg_no_channel;
  }
  len = push_json_str(v, cmd->channel, sizeof cmd->channel);
  if (len < 0 || !push_channel_valid(cmd->channel, (size_t)len)) {
    cmd->channel[0] = '\0';
    return msg_bad_channel;
  }
  return NULL;
}

static const char *decode_string(push_json params, const char *key,
                                 push_json *out, const char *msg) {
  push_json v;
  if (!optional(params, key, &v)) {
    return NULL;
  }
  if (push_json_type_of(v) != PUSH_JSON_STRING) {
    return msg;
  }
  *out = v;
  return NULL;
}

static const char *decode_since(push_json params, push_pos *since) {
  push_json s, epoch, offset;
  long len;
  if (!optional(params, "since", &s)) {
    return NULL;
  }
  if (push_json_type_of(s) != PUSH_JSON_OBJECT) {
    return msg_since;
  }
  /* The epoch is kept as a C string: one with a NUL inside is not one the
   * server handed out. */
  if (!push_json_get(s, "epoch", &epoch) ||
      (len = push_json_str(epoch, since->epoch, sizeof since->epoch)) < 0 ||
      strlen(since->epoch) != (size_t)len) {
    since->epoch[0] = '\0';
    return msg_epoch;
  }
  if (!push_json_get(s, "offset", &offset) ||
      push_json_u64(offset, &since->offset) != 0) {
    return msg_offset;
  }
  since->set = 1;
  return NULL;
}

const char *push_publish_decode(push_json params, push_json *data,
                                push_json *b64) {
  push_json d, b;
  /* "data": null is a publication of null, so null is not absence there;
   * "b64": null is the absent b64 of an option left unset. */
  int has_data = push_json_get(params, "data", &d);
  int has_b64 = optional(params, "b64", &b);
  if (has_data && has_b64) {
    return msg_data_and_b64;
  }
  if (has_data) {
    *data = d;
    return NULL;
  }
  if (!has_b64) {
    return msg_no_data;
  }
  if (push_json_type_of(b) != PUSH_JSON_STRING || !b64_valid(b)) {
    return msg_b64;
  }
  *b64 = b;
  return NULL;
}

/* idempotency_key: 1-64 printable ASCII characters, as a C string. */
static const char *decode_idem(push_json params, char *out) {
  push_json v;
  long len;
  out[0] = '\0';
  if (!optional(params, "idempotency_key", &v)) {
    return NULL;
  }
  len = push_json_str(v, out, PUSH_IDEM_MAX + 1);
  if (len <= 0) {
    out[0] = '\0';
    return msg_idem;
  }
  for (long i = 0; i < len; i++) {
    if (out[i] < 0x21 || out[i] > 0x7e) {
      out[0] = '\0';
      return msg_idem;
    }
  }
  return NULL;
}

static const char *decode_publish(push_json params, push_cmd *cmd) {
  const char *msg = push_publish_decode(params, &cmd->data, &cmd->b64);
  return msg != NULL ? msg : decode_idem(params, cmd->idem);
}

/* A token that must be there. */
static const char *decode_need_token(push_json params, push_cmd *cmd) {
  const char *msg = decode_string(params, "token", &cmd->token, msg_token);
  return msg != NULL ? msg : cmd->token.n == 0 ? msg_need_token : NULL;
}

static const char *decode_params(push_json params, push_cmd *cmd) {
  const char *msg = NULL;
  push_json v;
  switch (cmd->method) {
  case PUSH_CONNECT:
    msg = decode_string(params, "token", &cmd->token, msg_token);
    if (msg == NULL) {
      msg = decode_string(params, "name", &cmd->name, msg_name);
    }
    if (msg == NULL && optional(params, "data", &v)) {
      cmd->data = v;
    }
    return msg;
  case PUSH_REFRESH:
    return decode_need_token(params, cmd);
  case PUSH_SUB_REFRESH:
    msg = decode_channel(params, cmd);
    return msg != NULL ? msg : decode_need_token(params, cmd);
  case PUSH_RPC:
    if (!optional(params, "method", &v) ||
        push_json_type_of(v) != PUSH_JSON_STRING || v.n < 3 || v.n > 257) {
      return msg_rpc;
    }
    cmd->rpc = v;
    if (optional(params, "data", &v)) {
      cmd->data = v;
    }
    return NULL;
  case PUSH_SUBSCRIBE:
    msg = decode_channel(params, cmd);
    if (msg == NULL) {
      msg = decode_string(params, "token", &cmd->token, msg_token);
    }
    if (msg == NULL) {
      msg = decode_since(params, &cmd->since);
    }
    return msg;
  case PUSH_UNSUBSCRIBE:
  case PUSH_PRESENCE:
    return decode_channel(params, cmd);
  case PUSH_PUBLISH:
    msg = decode_channel(params, cmd);
    return msg != NULL ? msg : decode_publish(params, cmd);
  case PUSH_HISTORY:
    msg = decode_channel(params, cmd);
    if (msg == NULL && optional(params, "limit", &v) &&
        push_json_u64(v, &cmd->limit) != 0) {
      msg = msg_limit;
    }
    if (msg == NULL) {
      msg = decode_since(params, &cmd->since);
    }
    return msg;
  case PUSH_PING:
    return NULL;
  }
  return msg_unknown;
}

/* One command, the text of one line. */
static int decode(const char *line, size_t n, push_cmd *cmd, int *err,
                  const char **errmsg) {
  push_json root, key, value, id = {NULL, 0}, params = {NULL, 0};
  push_json_error jerr;
  size_t pos = 0, nid = 0, nmethods = 0;
  const char *msg;
  char name[16];
  int known = 0;

  *err = PUSH_E_BAD_REQUEST;
  if (push_json_parse_ex(line, n, &root, &jerr) != 0) {
    /* A repeated member name is refused by the parser, whatever the
     * object (command, params, since or published data): it is not one
     * command to every reader. */
    *errmsg = jerr.fault == PUSH_JSON_DUPLICATE ? msg_dup_key
              : jerr.fault == PUSH_JSON_NOMEM   ? msg_nomem
                                                : msg_json;
    if (jerr.fault == PUSH_JSON_NOMEM) {
      *err = PUSH_E_INTERNAL;
    }
    return -1;
  }
  if (push_json_type_of(root) != PUSH_JSON_OBJECT) {
    *errmsg = msg_object;
    return -1;
  }
  /* Every member but "id" is a method key; names are compared unescaped. A
   * name too long for the buffer is no method name. */
  while (push_json_next(root, &pos, &key, &value)) {
    long len = push_json_str(key, name, sizeof name);
    if (len == 2 && memcmp(name, "id", 2) == 0) {
      nid++;
      id = value;
      continue;
    }
    if (++nmethods > 1) {
      continue;
    }
    params = value;
    for (size_t i = 0; len > 0 && i < sizeof methods / sizeof methods[0]; i++) {
      if (strlen(methods[i].name) == (size_t)len &&
          memcmp(methods[i].name, name, (size_t)len) == 0) {
        cmd->method = methods[i].method;
        known = 1;
      }
    }
  }
  /* The id first: every later error can then be matched to its command. */
  if (nid == 0) {
    *errmsg = msg_no_id;
    return -1;
  }
  if (nid > 1) {
    *errmsg = msg_dup_id;
    return -1;
  }
  if (push_json_u64(id, &cmd->id) != 0 || cmd->id == 0) {
    cmd->id = 0;
    *errmsg = msg_bad_id;
    return -1;
  }
  if (nmethods == 0) {
    *errmsg = msg_no_method;
    return -1;
  }
  if (nmethods > 1) {
    *errmsg = msg_two_methods;
    return -1;
  }
  if (!known) {
    *err = PUSH_E_METHOD;
    *errmsg = msg_unknown;
    return -1;
  }
  if (push_json_type_of(params) != PUSH_JSON_OBJECT) {
    *errmsg = msg_params;
    return -1;
  }
  msg = decode_params(params, cmd);
  if (msg != NULL) {
    *errmsg = msg;
    return -1;
  }
  return 1;
}

int push_cmd_next(const char *frame, size_t n, size_t *pos, push_cmd *cmd,
                  int *err, const char **errmsg) {
  while (*pos < n) {
    const char *line = frame + *pos;
    const char *nl = memchr(line, '\n', n - *pos);
    size_t len = nl != NULL ? (size_t)(nl - line) : n - *pos;
    size_t i = 0;
    /* Past this line whatever it holds: a bad command does not stop the
     * ones after it. */
    *pos += len + (nl != NULL);
    /* Lines of whitespace only (an empty line, the '\r' of a "\r\n"
     * separator, a trailing newline) carry no command. */
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) {
      i++;
    }
    if (i == len) {
      continue;
    }
    memset(cmd, 0, sizeof *cmd);
    return decode(line, len, cmd, err, errmsg);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoding replies and pushes                                               */
/* ------------------------------------------------------------------------ */

/* Each encoder appends its pieces and, when one fails, takes back what it
 * had appended: the buffer keeps what it had, as push_buf functions do. */
static int undo(push_buf *b, size_t len) {
  b->len = len;
  return -1;
}

static int add(push_buf *b, const char *lit) {
  return push_buf_raw(b, lit, strlen(lit));
}

static int add_str(push_buf *b, const char *s) {
  return push_buf_str(b, s, s != NULL ? strlen(s) : 0);
}

int push_reply(push_buf *b, uint64_t id, const char *result_json, size_t n) {
  size_t len = b->len;
  if (add(b, "{\"id\":") || push_buf_u64(b, id) || add(b, ",\"result\":") ||
      push_buf_raw(b, result_json, n) || add(b, "}")) {
    return undo(b, len);
  }
  return 0;
}

int push_reply_error(push_buf *b, uint64_t id, int code, const char *message,
                     int temporary) {
  size_t len = b->len;
  if (add(b, "{\"id\":") || push_buf_u64(b, id) ||
      add(b, ",\"error\":{\"code\":") ||
      push_buf_u64(b, (uint64_t)(code < 0 ? 0 : code)) ||
      add(b, ",\"message\":") || add_str(b, message) ||
      add(b, temporary ? ",\"temporary\":true}}" : ",\"temporary\":false}}")) {
    return undo(b, len);
  }
  return 0;
}

int push_pub_encode(push_buf *b, uint64_t offset, push_json data, push_json b64,
                    const char *client, const char *user) {
  size_t len = b->len;
  int rv = add(b, "{\"offset\":") || push_buf_u64(b, offset);
  /* Published JSON is embedded as it came, never re-encoded; a b64 value is
   * the string as the publisher wrote it, quotes included. */
  if (b64.n > 0) {
    rv = rv || add(b, ",\"b64\":") || push_buf_raw(b, b64.p, b64.n);
  } else if (data.n > 0) {
    rv = rv || add(b, ",\"data\":") || push_buf_raw(b, data.p, data.n);
  } else {
    rv = rv || add(b, ",\"data\":null");
  }
  if (client != NULL) {
    rv = rv || add(b, ",\"info\":{\"client\":") || add_str(b, client) ||
         add(b, ",\"user\":") || add_str(b, user) || add(b, "}");
  }
  rv = rv || add(b, "}");
  return rv ? undo(b, len) : 0;
}

int push_pub_tail(push_buf *b, push_json data, push_json b64,
                  const char *client, const char *user) {
  size_t len = b->len;
  if (client != NULL && user == NULL) {
    user = "";
  }
  if (push_pub_encode(b, 0, data, b64, client, user) != 0) {
    return -1;
  }
  /* Drop the {"offset":0 the encoder starts with. */
  static const char head[] = "{\"offset\":0";
  size_t hl = sizeof(head) - 1;
  memmove(b->p + len, b->p + len + hl, b->len - len - hl);
  b->len -= hl;
  return 0;
}

int push_push_pub(push_buf *b, const char *channel, const char *pub,
                  size_t publen) {
  size_t len = b->len;
  if (add(b, "{\"push\":{\"channel\":") || add_str(b, channel) ||
      add(b, ",\"pub\":") || push_buf_raw(b, pub, publen) || add(b, "}}")) {
    return undo(b, len);
  }
  return 0;
}

/* Join carries the client's info when it has some; leave never does
 * (docs/protocol.md, Pushes). */
int push_push_join(push_buf *b, const char *channel, const char *client,
                   const char *user, push_json info, int leave) {
  size_t len = b->len;
  int rv =
      add(b, "{\"push\":{\"channel\":") || add_str(b, channel) ||
      add(b, leave ? ",\"leave\":{\"client\":" : ",\"join\":{\"client\":") ||
      add_str(b, client) || add(b, ",\"user\":") || add_str(b, user);
  if (!leave && info.n > 0) {
    rv = rv || add(b, ",\"info\":") || push_buf_raw(b, info.p, info.n);
  }
  rv = rv || add(b, "}}}");
  return rv ? undo(b, len) : 0;
}

int push_push_disconnect(push_buf *b, int code, const char *reason,
                         int reconnect) {
  size_t len = b->len;
  if (add(b, "{\"push\":{\"disconnect\":{\"code\":") ||
      push_buf_u64(b, (uint64_t)(code < 0 ? 0 : code)) ||
      add(b, ",\"reason\":") || add_str(b, reason) ||
      add(b,
          reconnect ? ",\"reconnect\":true}}}" : ",\"reconnect\":false}}}")) {
    return undo(b, len);
  }
  return 0;
}
