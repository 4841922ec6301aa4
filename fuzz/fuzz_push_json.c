/* fuzz_push_json.c - libFuzzer target for the push server's JSON scanner,
 * JSON writer and client protocol decoder (src/push/json.c, buf.c and
 * proto.c, included here so that the target needs no library beyond
 * herald_core).
 *
 * The input is used whole, twice:
 *
 *  - as a JSON text. When push_json_parse accepts it, the value is walked
 *    with push_json_next; every element must parse again on its own to the
 *    same span (the scanner and the skipper agree on boundaries), every
 *    member must be found by push_json_get at its own place and no two
 *    members of an object may have the same unescaped name (repeats are
 *    refused), every string must unescape, re-encode with push_buf_str
 *    and read back to the same bytes, and every integer that push_json_u64
 *    reads must print back to its own text. Whatever the verdict, the raw
 *    input written with push_buf_str must come out as one valid string.
 *
 *  - as a WebSocket text frame of commands. Every decoded command must keep
 *    the contract of push_cmd_next (progress, codes, messages, spans inside
 *    the frame, valid channel names), and the replies and publications
 *    built from it must be valid JSON.
 *
 * Any broken property aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "push/buf.c"
#include "push/json.c"
#include "push/proto.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(push_json v, const char *p, size_t n) {
  if (v.n > 0 && (v.p < p || v.p + v.n > p + n)) {
    abort();
  }
}

/* Parses b's text, which must be one JSON value of the given type. */
static push_json must_parse(const push_buf *b, push_json_type type) {
  push_json v;
  if (push_json_parse(b->p, b->len, &v) != 0 || v.p != b->p || v.n != b->len ||
      push_json_type_of(v) != type) {
    abort();
  }
  return v;
}

/* A string value unescapes, and survives being written and read again. */
static void check_string(push_json s, push_buf *b) {
  char *out = malloc(s.n);
  char *again = malloc(s.n + 16);
  if (out == NULL || again == NULL) {
    abort();
  }
  /* Unescaping never lengthens: raw length minus quotes, plus the NUL. */
  long len = push_json_str(s, out, s.n - 1);
  if (len < 0 || (size_t)len > s.n - 2) {
    abort();
  }
  /* Unescaped strings of valid JSON are valid UTF-8 (no lone surrogates),
   * so push_buf_str keeps every byte and the round trip is exact. */
  b->len = 0;
  if (push_buf_str(b, out, (size_t)len) != 0) {
    abort();
  }
  push_json w = must_parse(b, PUSH_JSON_STRING);
  if (push_json_str(w, again, s.n + 16) != len ||
      memcmp(out, again, (size_t)len) != 0) {
    abort();
  }
  free(again);
  free(out);
}

/* No two members of an accepted object have the same unescaped name:
 * checked pair by pair, for objects small enough. */
static void unique_names(push_json obj) {
  enum { MAX = 64 };
  char *names[MAX];
  long lens[MAX];
  size_t count = 0, pos = 0;
  push_json key, elem;
  while (count < MAX && push_json_next(obj, &pos, &key, &elem)) {
    names[count] = malloc(key.n);
    if (names[count] == NULL) {
      abort();
    }
    lens[count] = push_json_str(key, names[count], key.n);
    if (lens[count] < 0) {
      abort();
    }
    for (size_t j = 0; j < count; j++) {
      if (lens[j] == lens[count] &&
          memcmp(names[j], names[count], (size_t)lens[j]) == 0) {
        abort();
      }
    }
    count++;
  }
  for (size_t j = 0; j < count; j++) {
    free(names[j]);
  }
}

/* push_json_parse_ex agrees with push_json_parse, and a repeat is reported
 * with a string value inside the input. */
static void check_fault(const char *buf, size_t len) {
  push_json v, w;
  push_json_error e;
  int rv = push_json_parse(buf, len, &v);
  int rv2 = push_json_parse_ex(buf, len, &w, &e);
  if (rv != rv2 || (rv == 0) != (e.fault == PUSH_JSON_OK) ||
      (rv == 0 && (v.p != w.p || v.n != w.n))) {
    abort();
  }
  if (e.fault == PUSH_JSON_DUPLICATE) {
    inside(e.name, buf, len);
    if (e.name.n < 2 || e.name.p[0] != '"' || e.name.p[e.name.n - 1] != '"') {
      abort();
    }
  } else if (e.name.p != NULL || e.name.n != 0) {
    abort();
  }
}

static void walk(push_json v, int depth, push_buf *b) {
  push_json_type t = push_json_type_of(v);
  push_json again, key, elem, found;
  uint64_t u;
  size_t pos = 0, prev = 0;

  /* depth counts values, the parser's limit counts open containers: a
   * scalar may sit one level below the deepest container. */
  if (t == PUSH_JSON_INVALID ||
      depth > PUSH_JSON_MAX_DEPTH +
                  (t != PUSH_JSON_ARRAY && t != PUSH_JSON_OBJECT)) {
    abort();
  }
  /* The span of any value is a JSON text by itself. */
  if (push_json_parse(v.p, v.n, &again) != 0 || again.p != v.p ||
      again.n != v.n) {
    abort();
  }
  switch (t) {
  case PUSH_JSON_STRING:
    check_string(v, b);
    return;
  case PUSH_JSON_NUMBER:
    if (push_json_u64(v, &u) == 0) {
      b->len = 0;
      if (push_buf_u64(b, u) != 0 || b->len != v.n ||
          memcmp(b->p, v.p, v.n) != 0 || u > (uint64_t)1 << 53) {
        abort();
      }
    }
    return;
  case PUSH_JSON_ARRAY:
  case PUSH_JSON_OBJECT:
    break;
  default:
    if (push_json_u64(v, &u) == 0) {
      abort();
    }
    return;
  }
  while (push_json_next(v, &pos, &key, &elem)) {
    inside(elem, v.p, v.n);
    if (pos <= prev || elem.n == 0) {
      abort();
    }
    prev = pos;
    walk(elem, depth + 1, b);
    if (t == PUSH_JSON_OBJECT) {
      char name[64];
      long len;
      inside(key, v.p, v.n);
      if (push_json_type_of(key) != PUSH_JSON_STRING || key.p >= elem.p) {
        abort();
      }
      check_string(key, b);
      len = push_json_str(key, name, sizeof name);
      if (len >= 0 && strlen(name) == (size_t)len &&
          (!push_json_get(v, name, &found) || found.p != elem.p)) {
        abort();
      }
    }
  }
  if (t == PUSH_JSON_OBJECT) {
    unique_names(v);
  }
  if (push_json_next(v, &pos, &key, &elem) != 0) {
    abort(); /* the end stays the end */
  }
}

static void check_json(const char *buf, size_t len, push_buf *b) {
  push_json v;
  check_fault(buf, len);
  if (push_json_parse(buf, len, &v) == 0) {
    inside(v, buf, len);
    walk(v, 1, b);
  }
  /* Any bytes become one valid string. */
  b->len = 0;
  if (push_buf_str(b, buf, len) != 0) {
    abort();
  }
  must_parse(b, PUSH_JSON_STRING);
}

static void check_commands(const char *buf, size_t len, push_buf *b) {
  size_t pos = 0, prev = 0;
  push_cmd cmd;
  int err, rv;
  const char *msg;
  push_json none = {NULL, 0};

  while ((rv = push_cmd_next(buf, len, &pos, &cmd, &err, &msg)) != 0) {
    if (pos <= prev || pos > len) {
      abort();
    }
    prev = pos;
    b->len = 0;
    if (rv < 0) {
      if ((err != PUSH_E_BAD_REQUEST && err != PUSH_E_METHOD &&
           err != PUSH_E_INTERNAL) ||
          msg == NULL || push_reply_error(b, cmd.id, err, msg, 0) != 0) {
        abort();
      }
      must_parse(b, PUSH_JSON_OBJECT);
      continue;
    }
    if (rv != 1 || cmd.id == 0 || cmd.id > (uint64_t)1 << 53 ||
        cmd.method < PUSH_CONNECT || cmd.method > PUSH_PING) {
      abort();
    }
    inside(cmd.token, buf, len);
    inside(cmd.name, buf, len);
    inside(cmd.data, buf, len);
    inside(cmd.b64, buf, len);
    if (cmd.method != PUSH_CONNECT && cmd.method != PUSH_PING &&
        !push_channel_valid(cmd.channel, strlen(cmd.channel))) {
      abort();
    }
    if (cmd.since.set && strlen(cmd.since.epoch) > PUSH_EPOCH_MAX) {
      abort();
    }
    if (cmd.method == PUSH_PUBLISH) {
      if ((cmd.data.n > 0) == (cmd.b64.n > 0)) {
        abort();
      }
      if (push_pub_encode(b, 7, cmd.data, cmd.b64, "c1", "u\"1") != 0) {
        abort();
      }
      must_parse(b, PUSH_JSON_OBJECT);
      push_buf f = {NULL, 0, 0};
      if (push_push_pub(&f, cmd.channel, b->p, b->len) != 0) {
        abort();
      }
      must_parse(&f, PUSH_JSON_OBJECT);
      push_buf_free(&f);
      b->len = 0;
    }
    if (push_push_join(b, cmd.channel, "c1", cmd.since.epoch,
                       cmd.token.n > 0 ? cmd.token : none,
                       cmd.method == PUSH_UNSUBSCRIBE) != 0 ||
        push_reply(b, cmd.id, "{}", 2) != 0) {
      abort();
    }
  }
  if (pos != len) {
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size copy, so that ASan sees any read past the end. */
  char *buf = malloc(size ? size : 1);
  push_buf b = {NULL, 0, 0};
  if (buf == NULL) {
    return 0;
  }
  memcpy(buf, data, size);
  check_json(buf, size, &b);
  check_commands(buf, size, &b);
  push_buf_free(&b);
  free(buf);
  return 0;
}
