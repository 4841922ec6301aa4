/* push_proto_test.c - the client protocol of docs/protocol.md: every
 * command with every field, every way a command is refused (code and
 * message), frames of several lines, channel names, and the exact text of
 * every reply and push, each parsed back with push_json_parse. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "push/push.h"
#include "test.h"

/* The outcome of decoding a one-command frame. */
typedef struct decoded {
  int rv;
  int err;
  const char *msg;
  push_cmd cmd;
} decoded;

/* Decodes text as a frame: once in place (spans then point into text) and
 * once from an exact-size copy, which AddressSanitizer guards against
 * reads past the end; both must agree. */
static decoded dec(const char *text) {
  decoded d, e;
  size_t n = strlen(text), pos = 0;
  char *copy = malloc(n ? n : 1);
  if (copy == NULL) {
    abort();
  }
  memcpy(copy, text, n);
  memset(&d, 0, sizeof d);
  memset(&e, 0, sizeof e);
  d.rv = push_cmd_next(text, n, &pos, &d.cmd, &d.err, &d.msg);
  pos = 0;
  e.rv = push_cmd_next(copy, n, &pos, &e.cmd, &e.err, &e.msg);
  free(copy);
  CHECK_EQ(d.rv, e.rv);
  CHECK_EQ(d.err, e.err);
  CHECK(d.msg == e.msg);
  CHECK(d.cmd.id == e.cmd.id);
  return d;
}

static int span_is(push_json v, const char *lit) {
  return v.n == strlen(lit) && memcmp(v.p, lit, v.n) == 0;
}

static void test_channel_valid(void) {
  char name[PUSH_CHANNEL_MAX + 2];
  CHECK(push_channel_valid("a", 1));
  CHECK(push_channel_valid("chat:lobby", 10));
  CHECK(push_channel_valid("AZaz09_-.:@/=,", 14));
  CHECK(!push_channel_valid("", 0));
  CHECK(!push_channel_valid("a b", 3));
  CHECK(!push_channel_valid("a\0b", 3));
  CHECK(!push_channel_valid("a\"", 2));
  CHECK(!push_channel_valid("caf\xc3\xa9", 5));
  CHECK(!push_channel_valid("a*", 2));
  CHECK(!push_channel_valid("a#", 2));
  memset(name, 'x', sizeof name);
  CHECK(push_channel_valid(name, PUSH_CHANNEL_MAX));
  CHECK(!push_channel_valid(name, PUSH_CHANNEL_MAX + 1));
}

static void test_connect(void) {
  decoded d =
      dec("{\"id\":1,\"connect\":{\"token\":\"a.b.c\",\"name\":\"js\"}}");
  CHECK_EQ(d.rv, 1);
  CHECK(d.cmd.id == 1);
  CHECK_EQ(d.cmd.method, PUSH_CONNECT);
  CHECK(span_is(d.cmd.token, "\"a.b.c\""));
  CHECK(span_is(d.cmd.name, "\"js\""));
  d = dec("{\"id\":2,\"connect\":{}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.token.n, 0);
  CHECK_EQ(d.cmd.name.n, 0);
  /* null means absent; unknown fields are ignored. */
  d = dec("{\"id\":3,\"connect\":{\"token\":null,\"name\":null,\"x\":[1]}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.token.n, 0);
  /* The id may come after the method, and names may be escaped. */
  d = dec(" {\"\\u0063onnect\" : {} , \"\\u0069d\" : 9007199254740992 } ");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_CONNECT);
  CHECK(d.cmd.id == (uint64_t)1 << 53);
}

static void test_subscribe(void) {
  decoded d =
      dec("{\"id\":3,\"subscribe\":{\"channel\":\"chat:lobby\","
          "\"token\":\"t\",\"since\":{\"epoch\":\"k3q9\",\"offset\":41}}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_SUBSCRIBE);
  CHECK(strcmp(d.cmd.channel, "chat:lobby") == 0);
  CHECK(span_is(d.cmd.token, "\"t\""));
  CHECK_EQ(d.cmd.since.set, 1);
  CHECK(strcmp(d.cmd.since.epoch, "k3q9") == 0);
  CHECK(d.cmd.since.offset == 41);
  d = dec(
      "{\"id\":4,\"subscribe\":{\"channel\":\"a\\u003ab\",\"since\":null}}");
  CHECK_EQ(d.rv, 1);
  CHECK(strcmp(d.cmd.channel, "a:b") == 0); /* unescaped */
  CHECK_EQ(d.cmd.since.set, 0);
  d = dec("{\"id\":5,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":"
          "\"0123456789abcdef\",\"offset\":0}}}");
  CHECK_EQ(d.rv, 1);
  CHECK(strcmp(d.cmd.since.epoch, "0123456789abcdef") == 0);
  d = dec("{\"id\":5,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":"
          "\"\",\"offset\":9007199254740992}}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.since.set, 1);
  CHECK(d.cmd.since.offset == (uint64_t)1 << 53);
}

static void test_other_methods(void) {
  decoded d = dec("{\"id\":6,\"unsubscribe\":{\"channel\":\"x\"}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_UNSUBSCRIBE);
  CHECK(strcmp(d.cmd.channel, "x") == 0);
  d = dec("{\"id\":7,\"presence\":{\"channel\":\"y\"}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_PRESENCE);
  CHECK(strcmp(d.cmd.channel, "y") == 0);
  d = dec("{\"id\":8,\"history\":{\"channel\":\"z\",\"limit\":10,"
          "\"since\":{\"epoch\":\"e\",\"offset\":3}}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_HISTORY);
  CHECK(d.cmd.limit == 10);
  CHECK_EQ(d.cmd.since.set, 1);
  CHECK(d.cmd.since.offset == 3);
  d = dec("{\"id\":9,\"history\":{\"channel\":\"z\",\"limit\":null}}");
  CHECK_EQ(d.rv, 1);
  CHECK(d.cmd.limit == 0);
  CHECK_EQ(d.cmd.since.set, 0);
  d = dec("{\"id\":10,\"ping\":{}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_PING);
  d = dec("{\"id\":11,\"ping\":{\"anything\":1}}");
  CHECK_EQ(d.rv, 1);
}

static void test_publish(void) {
  decoded d = dec("{\"id\":1,\"publish\":{\"channel\":\"c\","
                  "\"data\":{\"text\":\"hi\", \"n\":[1,2]}}}");
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(d.cmd.method, PUSH_PUBLISH);
  CHECK(span_is(d.cmd.data, "{\"text\":\"hi\", \"n\":[1,2]}"));
  CHECK_EQ(d.cmd.b64.n, 0);
  d = dec("{\"id\":1,\"publish\":{\"channel\":\"c\",\"data\":null}}");
  CHECK_EQ(d.rv, 1);
  CHECK(span_is(d.cmd.data, "null")); /* null is data here */
  d = dec(
      "{\"id\":1,\"publish\":{\"data\":\"s\",\"b64\":null,\"channel\":\"c\"}}");
  CHECK_EQ(d.rv, 1);
  CHECK(span_is(d.cmd.data, "\"s\""));

  /* Canonical padded base64, RFC 4648 section 4. */
  static const char *const good[] = {
      "\"\"",           "\"Zg==\"", "\"Zm8=\"",       "\"Zm9v\"",
      "\"Zm9vYmFy\"",   "\"+/A=\"", "\"Zm9v\\/A==\"", "\"\\u005a\\u0067==\"",
      "\"Zg=\\u003d\"",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    char text[128];
    snprintf(text, sizeof text,
             "{\"id\":1,\"publish\":{\"channel\":\"c\",\"b64\":%s}}", good[i]);
    d = dec(text);
    CHECK_EQ(d.rv, 1);
    CHECK(span_is(d.cmd.b64, good[i]));
    CHECK_EQ(d.cmd.data.n, 0);
  }
  static const char *const bad[] = {
      "\"Zg\"",
      "\"Zg=\"",
      "\"Zh==\"",
      "\"Zm9=\"",
      "\"Z===\"",
      "\"====\"",
      "\"Zg==Zg==\"",
      "\"Zm9v=\"",
      "\"Zm-_\"",
      "\"Zg\\n==\"",
      "\"Zm 9v\"",
      "\"Zm\\u00e9v\"",
      "\"\\u0000\\u0000\\u0000\\u0000\"",
      "1",
      "false",
      "[\"Zm9v\"]",
      "\"Z\\\"==\"",
      "\"Zm9v\\\\\"",
      "\"Zg\\u003\"",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char text[128];
    snprintf(text, sizeof text,
             "{\"id\":1,\"publish\":{\"channel\":\"c\",\"b64\":%s}}", bad[i]);
    d = dec(text);
    if (i == sizeof bad / sizeof bad[0] - 1) {
      /* "\u003" is no valid JSON escape at all. */
      CHECK_EQ(d.rv, -1);
      CHECK(strcmp(d.msg, "malformed JSON") == 0);
      continue;
    }
    CHECK_EQ(d.rv, -1);
    CHECK_EQ(d.err, PUSH_E_BAD_REQUEST);
    CHECK(d.msg != NULL && strcmp(d.msg, "b64 must be a base64 string") == 0);
    CHECK(d.cmd.id == 1);
  }
}

static const struct {
  const char *text;
  int err;
  const char *msg;
  uint64_t id;
} refusals[] = {
    {"{\"id\":1,", 107, "malformed JSON", 0},
    {"{\"id\":1,\"ping\":{}} x", 107, "malformed JSON", 0},
    {"{\"id\":1,\"ping\":{},}", 107, "malformed JSON", 0},
    {"\xef\xbb\xbf{\"id\":1,\"ping\":{}}", 107, "malformed JSON", 0},
    {"[1]", 107, "command must be an object", 0},
    {"\"ping\"", 107, "command must be an object", 0},
    {"{\"ping\":{}}", 107, "missing id", 0},
    {"{}", 107, "missing id", 0},
    /* A repeated member name, in any object of the command, is refused by
     * the parser: the id cannot be trusted either. */
    {"{\"id\":1,\"id\":2,\"ping\":{}}", 107, "duplicate key in JSON object", 0},
    {"{\"id\":1,\"id\":1,\"ping\":{}}", 107, "duplicate key in JSON object", 0},
    {"{\"id\":1,\"i\\u0064\":2,\"ping\":{}}", 107,
     "duplicate key in JSON object", 0},
    {"{\"id\":1,\"publish\":{\"channel\":\"a\",\"channel\":\"b\",\"data\":1}}",
     107, "duplicate key in JSON object", 0},
    {"{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":1,\"data\":2}}", 107,
     "duplicate key in JSON object", 0},
    {"{\"id\":1,\"publish\":{\"channel\":\"a\",\"data\":{\"x\":[{\"y\":1,"
     "\"y\":1}]}}}",
     107, "duplicate key in JSON object", 0},
    {"{\"id\":1,\"subscribe\":{\"channel\":\"a\",\"since\":{\"epoch\":\"e\","
     "\"offset\":1,\"offset\":2}}}",
     107, "duplicate key in JSON object", 0},
    {"{\"id\":0,\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":-1,\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":\"1\",\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":1.5,\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":1e2,\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":null,\"ping\":{}}", 107, "id must be a positive integer", 0},
    {"{\"id\":9007199254740993,\"ping\":{}}", 107,
     "id must be a positive integer", 0},
    {"{\"id\":3}", 107, "missing method", 3},
    {"{\"id\":3,\"ping\":{},\"connect\":{}}", 107, "more than one method", 3},
    {"{\"id\":3,\"ping\":{},\"ping\":{}}", 107, "duplicate key in JSON object",
     0},
    {"{\"id\":3,\"nope\":{},\"ping\":{}}", 107, "more than one method", 3},
    {"{\"id\":4,\"nope\":{}}", 104, "unknown method", 4},
    {"{\"id\":4,\"Ping\":{}}", 104, "unknown method", 4},
    {"{\"id\":4,\"\":{}}", 104, "unknown method", 4},
    {"{\"id\":4,\"ping\\u0000\":{}}", 104, "unknown method", 4},
    {"{\"id\":4,\"subscribesubscribe\":{}}", 104, "unknown method", 4},
    {"{\"id\":4,\"nope\":1}", 104, "unknown method", 4},
    {"{\"id\":5,\"ping\":[]}", 107, "params must be an object", 5},
    {"{\"id\":5,\"ping\":null}", 107, "params must be an object", 5},
    {"{\"id\":5,\"connect\":\"x\"}", 107, "params must be an object", 5},
    {"{\"id\":6,\"subscribe\":{}}", 107, "missing channel", 6},
    {"{\"id\":6,\"subscribe\":{\"channel\":null}}", 107, "missing channel", 6},
    {"{\"id\":6,\"unsubscribe\":{}}", 107, "missing channel", 6},
    {"{\"id\":6,\"publish\":{\"data\":1}}", 107, "missing channel", 6},
    {"{\"id\":6,\"presence\":{}}", 107, "missing channel", 6},
    {"{\"id\":6,\"history\":{\"limit\":1}}", 107, "missing channel", 6},
    {"{\"id\":7,\"subscribe\":{\"channel\":\"\"}}", 107, "invalid channel", 7},
    {"{\"id\":7,\"subscribe\":{\"channel\":\"a b\"}}", 107, "invalid channel",
     7},
    {"{\"id\":7,\"subscribe\":{\"channel\":\"a\\u0000\"}}", 107,
     "invalid channel", 7},
    {"{\"id\":7,\"subscribe\":{\"channel\":\"caf\\u00e9\"}}", 107,
     "invalid channel", 7},
    {"{\"id\":7,\"subscribe\":{\"channel\":1}}", 107, "invalid channel", 7},
    {"{\"id\":7,\"subscribe\":{\"channel\":[\"a\"]}}", 107, "invalid channel",
     7},
    {"{\"id\":8,\"connect\":{\"token\":1}}", 107, "token must be a string", 8},
    {"{\"id\":8,\"subscribe\":{\"channel\":\"c\",\"token\":{}}}", 107,
     "token must be a string", 8},
    {"{\"id\":8,\"connect\":{\"name\":true}}", 107, "name must be a string", 8},
    {"{\"id\":9,\"publish\":{\"channel\":\"c\"}}", 107,
     "publish needs data or b64", 9},
    {"{\"id\":9,\"publish\":{\"channel\":\"c\",\"data\":1,\"b64\":\"\"}}", 107,
     "publish takes data or b64, not both", 9},
    {"{\"id\":9,\"publish\":{\"channel\":\"c\",\"b64\":null}}", 107,
     "publish needs data or b64", 9},
    {"{\"id\":10,\"subscribe\":{\"channel\":\"c\",\"since\":1}}", 107,
     "since must be an object", 10},
    {"{\"id\":10,\"history\":{\"channel\":\"c\",\"since\":[]}}", 107,
     "since must be an object", 10},
    {"{\"id\":11,\"subscribe\":{\"channel\":\"c\",\"since\":{\"offset\":1}}}",
     107, "since.epoch must be a string of at most 16 bytes", 11},
    {"{\"id\":11,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":1,"
     "\"offset\":1}}}",
     107, "since.epoch must be a string of at most 16 bytes", 11},
    {"{\"id\":11,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":"
     "\"0123456789abcdefg\",\"offset\":1}}}",
     107, "since.epoch must be a string of at most 16 bytes", 11},
    {"{\"id\":11,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":"
     "\"a\\u0000\",\"offset\":1}}}",
     107, "since.epoch must be a string of at most 16 bytes", 11},
    {"{\"id\":12,\"subscribe\":{\"channel\":\"c\",\"since\":{\"epoch\":\"e\"}}"
     "}",
     107, "since.offset must be a non-negative integer", 12},
    {"{\"id\":12,\"history\":{\"channel\":\"c\",\"since\":{\"epoch\":\"e\","
     "\"offset\":-1}}}",
     107, "since.offset must be a non-negative integer", 12},
    {"{\"id\":12,\"history\":{\"channel\":\"c\",\"since\":{\"epoch\":\"e\","
     "\"offset\":\"1\"}}}",
     107, "since.offset must be a non-negative integer", 12},
    {"{\"id\":13,\"history\":{\"channel\":\"c\",\"limit\":-1}}", 107,
     "limit must be a non-negative integer", 13},
    {"{\"id\":13,\"history\":{\"channel\":\"c\",\"limit\":\"5\"}}", 107,
     "limit must be a non-negative integer", 13},
    {"{\"id\":13,\"history\":{\"channel\":\"c\",\"limit\":2.5}}", 107,
     "limit must be a non-negative integer", 13},
};

static void test_refusals(void) {
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
    decoded d = dec(refusals[i].text);
    int ok = d.rv == -1 && d.err == refusals[i].err && d.msg != NULL &&
             strcmp(d.msg, refusals[i].msg) == 0 && d.cmd.id == refusals[i].id;
    if (!ok) {
      fprintf(stderr, "refusal %zu: %s -> rv %d err %d msg %s id %llu\n", i,
              refusals[i].text, d.rv, d.err, d.msg ? d.msg : "(null)",
              (unsigned long long)d.cmd.id);
    }
    CHECK(ok);
  }
  /* Too long a channel name: 256 bytes. */
  char text[400], name[PUSH_CHANNEL_MAX + 2];
  memset(name, 'n', sizeof name);
  name[PUSH_CHANNEL_MAX + 1] = '\0';
  snprintf(text, sizeof text, "{\"id\":1,\"presence\":{\"channel\":\"%s\"}}",
           name);
  decoded d = dec(text);
  CHECK(d.rv == -1 && strcmp(d.msg, "invalid channel") == 0);
  name[PUSH_CHANNEL_MAX] = '\0';
  snprintf(text, sizeof text, "{\"id\":1,\"presence\":{\"channel\":\"%s\"}}",
           name);
  d = dec(text);
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(strlen(d.cmd.channel), PUSH_CHANNEL_MAX);
}

/* Several commands in a frame, separated by '\n': empty and blank lines are
 * skipped, a bad command does not stop the ones after it. */
static void test_frames(void) {
  static const char frame[] =
      "\n{\"id\":1,\"ping\":{}}\r\n\n  \t\r\n{\"id\":2,\"nope\":{}}\n"
      "{\"id\":3,\"ping\":{}}\n{oops\n{\"id\":4,\"presence\":{\"channel\":"
      "\"c\"}}";
  size_t n = sizeof frame - 1, pos = 0;
  push_cmd cmd;
  int err = 0;
  const char *msg = NULL;
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), 1);
  CHECK(cmd.id == 1 && cmd.method == PUSH_PING);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), -1);
  CHECK(cmd.id == 2 && err == PUSH_E_METHOD);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), 1);
  CHECK(cmd.id == 3);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), -1);
  CHECK(cmd.id == 0 && err == PUSH_E_BAD_REQUEST);
  CHECK(strcmp(msg, "malformed JSON") == 0);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), 1);
  CHECK(cmd.id == 4 && strcmp(cmd.channel, "c") == 0);
  CHECK_EQ(pos, n);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), 0);
  CHECK_EQ(push_cmd_next(frame, n, &pos, &cmd, &err, &msg), 0);

  pos = 0;
  CHECK_EQ(push_cmd_next("", 0, &pos, &cmd, &err, &msg), 0);
  pos = 0;
  CHECK_EQ(push_cmd_next("\n\r\n \n", 5, &pos, &cmd, &err, &msg), 0);
  /* A trailing newline ends the last command. */
  pos = 0;
  CHECK_EQ(
      push_cmd_next("{\"id\":5,\"ping\":{}}\n", 19, &pos, &cmd, &err, &msg), 1);
  CHECK_EQ(
      push_cmd_next("{\"id\":5,\"ping\":{}}\n", 19, &pos, &cmd, &err, &msg), 0);
  /* A command does not span lines, even if its JSON would. */
  pos = 0;
  CHECK_EQ(
      push_cmd_next("{\"id\":6,\n\"ping\":{}}", 19, &pos, &cmd, &err, &msg),
      -1);
  CHECK_EQ(
      push_cmd_next("{\"id\":6,\n\"ping\":{}}", 19, &pos, &cmd, &err, &msg),
      -1);
  CHECK_EQ(
      push_cmd_next("{\"id\":6,\n\"ping\":{}}", 19, &pos, &cmd, &err, &msg), 0);
}

static int buf_is(const push_buf *b, const char *lit) {
  int ok = b->len == strlen(lit) && memcmp(b->p, lit, b->len) == 0;
  if (!ok) {
    fprintf(stderr, "got %.*s\nnot %s\n", (int)b->len, b->p, lit);
  }
  return ok;
}

static push_json parse_back(const push_buf *b) {
  push_json v = {NULL, 0};
  CHECK_EQ(push_json_parse(b->p, b->len, &v), 0);
  CHECK_EQ(push_json_type_of(v), PUSH_JSON_OBJECT);
  return v;
}

static void test_replies(void) {
  push_buf b = {NULL, 0, 0};
  push_json v, r, e;
  char s[64];
  uint64_t u;
  static const char result[] = "{\"epoch\":\"k3q9\",\"offset\":41}";
  CHECK_EQ(push_reply(&b, 3, result, sizeof result - 1), 0);
  CHECK(buf_is(&b, "{\"id\":3,\"result\":{\"epoch\":\"k3q9\",\"offset\":41}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "id", &r) && push_json_u64(r, &u) == 0 && u == 3);
  CHECK(push_json_get(v, "result", &r) && span_is(r, result));
  b.len = 0;
  CHECK_EQ(push_reply(&b, 9007199254740992u, "{}", 2), 0);
  CHECK(buf_is(&b, "{\"id\":9007199254740992,\"result\":{}}"));
  parse_back(&b);

  b.len = 0;
  CHECK_EQ(push_reply_error(&b, 4, PUSH_E_PERMISSION, "permission denied", 0),
           0);
  CHECK(buf_is(&b, "{\"id\":4,\"error\":{\"code\":103,\"message\":"
                   "\"permission denied\",\"temporary\":false}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "error", &e));
  CHECK(push_json_get(e, "code", &r) && span_is(r, "103"));
  CHECK(push_json_get(e, "temporary", &r) && span_is(r, "false"));
  b.len = 0;
  CHECK_EQ(push_reply_error(&b, 0, PUSH_E_ENGINE, "say \"no\"\n", 1), 0);
  CHECK(buf_is(&b, "{\"id\":0,\"error\":{\"code\":112,\"message\":"
                   "\"say \\\"no\\\"\\n\",\"temporary\":true}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "error", &e) && push_json_get(e, "message", &r));
  CHECK_EQ(push_json_str(r, s, sizeof s), 9);
  CHECK(strcmp(s, "say \"no\"\n") == 0);
  push_buf_free(&b);
}

static void test_pubs(void) {
  push_buf b = {NULL, 0, 0};
  push_json none = {NULL, 0}, v, r;
  push_json data = {"{\"text\":\"hi\"}", 13};
  push_json b64 = {"\"Zm9v\"", 6};
  char s[32];

  CHECK_EQ(push_pub_encode(&b, 42, data, none, NULL, NULL), 0);
  CHECK(buf_is(&b, "{\"offset\":42,\"data\":{\"text\":\"hi\"}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "data", &r) && span_is(r, "{\"text\":\"hi\"}"));

  b.len = 0;
  CHECK_EQ(push_pub_encode(&b, 1, none, b64, "c7", "ann"), 0);
  CHECK(buf_is(&b, "{\"offset\":1,\"b64\":\"Zm9v\",\"info\":{\"client\":"
                   "\"c7\",\"user\":\"ann\"}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "info", &r) && push_json_get(r, "user", &r));
  CHECK(push_json_str(r, s, sizeof s) == 3 && strcmp(s, "ann") == 0);

  b.len = 0;
  CHECK_EQ(push_pub_encode(&b, 2, data, none, "c\"1", NULL), 0);
  CHECK(buf_is(&b, "{\"offset\":2,\"data\":{\"text\":\"hi\"},\"info\":"
                   "{\"client\":\"c\\\"1\",\"user\":\"\"}}"));
  parse_back(&b);
  b.len = 0;
  CHECK_EQ(push_pub_encode(&b, 0, none, none, NULL, NULL), 0);
  CHECK(buf_is(&b, "{\"offset\":0,\"data\":null}"));

  /* The push around it, appended after what the buffer already holds. */
  push_buf f = {NULL, 0, 0};
  CHECK_EQ(push_buf_raw(&f, "prefix", 6), 0);
  b.len = 0;
  CHECK_EQ(push_pub_encode(&b, 42, data, none, NULL, NULL), 0);
  CHECK_EQ(push_push_pub(&f, "chat:lobby", b.p, b.len), 0);
  CHECK(buf_is(&f, "prefix{\"push\":{\"channel\":\"chat:lobby\",\"pub\":"
                   "{\"offset\":42,\"data\":{\"text\":\"hi\"}}}}"));
  CHECK_EQ(push_json_parse(f.p + 6, f.len - 6, &v), 0);
  CHECK(push_json_get(v, "push", &v) && push_json_get(v, "pub", &r));
  CHECK(r.n == b.len && memcmp(r.p, b.p, b.len) == 0);
  push_buf_free(&f);
  push_buf_free(&b);
}

/* A publish command's data goes into the publication byte for byte. */
static void test_publish_round_trip(void) {
  static const char text[] =
      "{\"id\":1,\"publish\":{\"channel\":\"c\",\"data\":"
      "{ \"a\" : [1, 2.50, \"\\u00e9\"] }}}";
  push_buf b = {NULL, 0, 0};
  push_json v, r;
  decoded d = dec(text);
  CHECK_EQ(d.rv, 1);
  CHECK_EQ(push_pub_encode(&b, 5, d.cmd.data, d.cmd.b64, NULL, NULL), 0);
  v = parse_back(&b);
  CHECK(push_json_get(v, "data", &r) && r.n == d.cmd.data.n &&
        memcmp(r.p, d.cmd.data.p, r.n) == 0);
  push_buf_free(&b);
}

static void test_presence_pushes(void) {
  push_buf b = {NULL, 0, 0};
  push_json info = {"{}", 2}, none = {NULL, 0}, v, r;
  CHECK_EQ(push_push_join(&b, "chat:lobby", "c7", "ann", info, 0), 0);
  CHECK(buf_is(&b, "{\"push\":{\"channel\":\"chat:lobby\",\"join\":"
                   "{\"client\":\"c7\",\"user\":\"ann\",\"info\":{}}}}"));
  v = parse_back(&b);
  CHECK(push_json_get(v, "push", &v) && push_json_get(v, "join", &r));
  b.len = 0;
  CHECK_EQ(push_push_join(&b, "chat:lobby", "c7", "ann", info, 1), 0);
  CHECK(buf_is(&b, "{\"push\":{\"channel\":\"chat:lobby\",\"leave\":"
                   "{\"client\":\"c7\",\"user\":\"ann\"}}}"));
  parse_back(&b);
  b.len = 0;
  CHECK_EQ(push_push_join(&b, "c", "c8", "", none, 0), 0);
  CHECK(buf_is(&b, "{\"push\":{\"channel\":\"c\",\"join\":"
                   "{\"client\":\"c8\",\"user\":\"\"}}}"));
  parse_back(&b);

  b.len = 0;
  CHECK_EQ(push_push_disconnect(&b, PUSH_D_SHUTDOWN, "server shutting down", 1),
           0);
  CHECK(buf_is(&b, "{\"push\":{\"disconnect\":{\"code\":3001,\"reason\":"
                   "\"server shutting down\",\"reconnect\":true}}}"));
  parse_back(&b);
  b.len = 0;
  CHECK_EQ(push_push_disconnect(&b, PUSH_D_INVALID_TOKEN, "invalid token", 0),
           0);
  CHECK(buf_is(&b, "{\"push\":{\"disconnect\":{\"code\":3500,\"reason\":"
                   "\"invalid token\",\"reconnect\":false}}}"));
  parse_back(&b);
  push_buf_free(&b);
}

int main(void) {
  RUN(test_channel_valid);
  RUN(test_connect);
  RUN(test_subscribe);
  RUN(test_other_methods);
  RUN(test_publish);
  RUN(test_refusals);
  RUN(test_frames);
  RUN(test_replies);
  RUN(test_pubs);
  RUN(test_publish_round_trip);
  RUN(test_presence_pushes);
  return TEST_REPORT();
}
