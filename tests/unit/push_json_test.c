/* push_json_test.c - the JSON scanner against RFC 8259: documents that must
 * be accepted (y_) and refused (n_), in the manner of JSONTestSuite; the
 * depth limit; member lookup, iteration, unescaping and integer reading; and
 * the output buffer, whose strings must parse back to what was written.
 *
 * Every input is copied into a buffer of its exact size first, so that
 * AddressSanitizer reports any read past its end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/push.h"
#include "test.h"

typedef struct doc {
  const char *s;
  size_t n;
} doc;

/* A literal with its length: some hold NUL bytes. */
#define D(lit)                                                                 \
  { lit, sizeof(lit) - 1 }
#define LITN(lit) (lit), (sizeof(lit) - 1)

static int parse_exact(const char *s, size_t n, push_json *out) {
  char *copy = malloc(n ? n : 1);
  push_json v;
  int rv;
  if (copy == NULL) {
    abort();
  }
  memcpy(copy, s, n);
  rv = push_json_parse(copy, n, &v);
  if (rv == 0 && out != NULL) {
    /* Report the span as offsets into s, since copy goes away. */
    out->p = s + (v.p - copy);
    out->n = v.n;
  }
  free(copy);
  return rv;
}

static const doc accepted[] = {
    D("[]"),
    D("{}"),
    D("[[]]"),
    D(" [1] "),
    D("\t\r\n [1]\n"),
    D("\"a\""), /* section 2: any value may be the whole text */
    D("123"),
    D("0"),
    D("-0"),
    D("-1.5e+10"),
    D("1E-2"),
    D("0.0"),
    D("1e999"), /* section 9: range is the reader's business */
    D("123456789012345678901234567890"),
    D("-123456789012345678901234567890.5e-1000"),
    D("true"),
    D("false"),
    D("null"),
    D("[true,false,null]"),
    D("[1 , 2 ]"),
    D("{\"a\":{\"b\":[1,{\"c\":\"d\"}]}}"),
    D("{ \"a\" : 1 , \"b\" : [ ] }"),
    D("{\"\":0}"),
    D("{\"a\":1,\"A\":2,\"a \":3,\"\":4}"), /* names that only look alike */
    D("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}"), /* in other objects */
    D("[{\"a\":1},{\"a\":2}]"),
    D("{\"e\\u0301\":1,\"\\u00e9\":2}"), /* no Unicode normalization */
    D("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""),
    D("\"\\u0000\""),
    D("\"\\u00e9\""),
    D("\"\\u00E9\""),
    D("\"\\uFFFF\""),
    D("\"\\u2028\""),
    D("\"\\ud83d\\ude00\""),
    D("\"\\uDBFF\\uDFFF\""),
    D("\"\xc3\xa9\""),              /* é */
    D("\"\xe2\x82\xac\""),          /* € */
    D("\"\xf0\x9f\x98\x80\""),      /* U+1F600 */
    D("\"\xf4\x8f\xbf\xbf\""),      /* U+10FFFF */
    D("\"\xef\xbf\xbf\""),          /* U+FFFF, a noncharacter but valid */
    D("\"\x7f\""),                  /* DEL needs no escape */
    D("[\"]\",\"}\",\"[\",\"{\"]"), /* brackets inside strings */
    D("[-0.0e-0]"),
};

static const doc refused[] = {
    D(""),
    D(" "),
    D("\xef\xbb\xbf[]"), /* a byte order mark (section 8.1) */
    D("[1,]"),
    D("[1,,2]"),
    D("[,1]"),
    D("[,]"),
    D("{\"a\":1,}"),
    D("{,}"),
    D("{\"a\"}"),
    D("{\"a\" 1}"),
    D("{\"a\":}"),
    D("{a:1}"),
    D("{'a':1}"),
    D("{1:1}"),
    D("{\"a\":1 \"b\":2}"),
    D("[1 2]"),
    D("01"),
    D("[01]"),
    D("-01"),
    D("-"),
    D("[-]"),
    D("1."),
    D(".5"),
    D("1.e3"),
    D("1e"),
    D("1e+"),
    D("1E-"),
    D("+1"),
    D("0x10"),
    D("NaN"),
    D("-Infinity"),
    D("Infinity"),
    D("tru"),
    D("True"),
    D("nul"),
    D("[nulll]"),
    D("[truefalse]"),
    D("'a'"),
    D("\"abc"),
    D("\"\\\""),
    D("\"\\x\""),
    D("\"\\a\""),
    D("\"\\U0041\""),
    D("\"\\u12\""),
    D("\"\\u12G4\""),
    D("\"\\ud800\""),        /* lone high surrogate */
    D("\"\\udc00\""),        /* lone low surrogate */
    D("\"\\udc00\\ud800\""), /* pair in the wrong order */
    D("\"\\ud800\\u0041\""), /* high followed by no low */
    D("\"\\ud800\\ud800\""),
    D("\"\\ud800x\""),
    D("\"\\ud800\\"),
    D("\"a\tb\""), /* raw control characters (section 7) */
    D("\"a\nb\""),
    D("\"\x01\""),
    D("\"\x1f\""),
    D("\"a\0b\""),
    D("\"\xed\xa0\x80\""),     /* UTF-8 of a surrogate */
    D("\"\xc0\xaf\""),         /* overlong */
    D("\"\xe0\x80\xaf\""),     /* overlong */
    D("\"\xf0\x80\x80\xaf\""), /* overlong */
    D("\"\xc1\xbf\""),
    D("\"\xff\""),
    D("\"\xfe\""),
    D("\"\x80\""),             /* lone continuation byte */
    D("\"\xf4\x90\x80\x80\""), /* above U+10FFFF */
    D("\"\xf5\x80\x80\x80\""),
    D("\"\xe2\x82\""), /* truncated */
    D("\"\xe2\x82"),
    D("\"\xc3"),
    D("[1] [2]"),
    D("[1]x"),
    D("1 2"),
    D("["),
    D("]"),
    D("{"),
    D("}"),
    D("{\"a\":1"),
    D("[1}"),
    D("{\"a\":1]"),
    D("[[]"),
    D("[]]"),
    D("/* c */ []"),
    D("[] // c"),
    D("[1\0]"),
    D("[]\0"),
    D("\f[]"), /* form feed is no JSON whitespace */
    D("\v[]"),
    D("\xc2\xa0[]"), /* nor is U+00A0 */
    D("[\"a\",]"),
    D("{\"a\":[}"),
    D("[\"\\u0000\"\\u0000]"),
    /* Repeated member names (I-JSON, RFC 7493 section 2.3): RFC 8259
     * section 4 leaves their meaning to each reader. */
    D("{\"a\":1,\"a\":2}"),
    D("{\"a\":1,\"a\":1}"),
    D("{\"\":1,\"\":2}"),
    D("{\"a\":1,\"b\":2,\"a\":3}"),
    D("{\"a\":{},\"a\":[]}"),
    D("[1,{\"x\":{\"y\":1,\"y\":2}}]"),
    D("{\"x\":{\"y\":1},\"z\":{\"w\":1,\"w\":1}}"),
    D("{\"id\":1,\"\\u0069d\":2}"), /* the same name once unescaped */
    D("{\"\\u0069d\":1,\"i\\u0064\":2}"),
    D("{\"a/\":1,\"a\\/\":2}"),
    D("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}"),
    D("{\"\\u00e9\":1,\"\xc3\xa9\":2}"),
    D("{\"a\\u0000\":1,\"a\\u0000\":2}"),
};

static void test_accepted(void) {
  for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
    push_json v;
    int rv = parse_exact(accepted[i].s, accepted[i].n, &v);
    if (rv != 0) {
      fprintf(stderr, "refused y_ case %zu: %s\n", i, accepted[i].s);
    }
    CHECK_EQ(rv, 0);
  }
}

static void test_refused(void) {
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    int rv = parse_exact(refused[i].s, refused[i].n, NULL);
    if (rv != -1) {
      fprintf(stderr, "accepted n_ case %zu: %s\n", i, refused[i].s);
    }
    CHECK_EQ(rv, -1);
  }
}

/* The span leaves out the whitespace around the value, and nothing else. */
static void test_span(void) {
  static const char text[] = " \n\t{\"a\" : [1, 2]}\r\n ";
  push_json v;
  CHECK_EQ(push_json_parse(text, sizeof text - 1, &v), 0);
  CHECK(v.p == text + 3);
  CHECK_EQ(v.n, strlen("{\"a\" : [1, 2]}"));
  CHECK_EQ(push_json_type_of(v), PUSH_JSON_OBJECT);
  CHECK_EQ(parse_exact("42", 2, &v), 0);
  CHECK_EQ(v.n, 2);
  CHECK_EQ(push_json_type_of(v), PUSH_JSON_NUMBER);
}

/* A document with no valid proper prefix: every shorter prefix must be
 * refused, which walks the end-of-input check of every scanner state. */
static void test_prefixes(void) {
  static const char text[] =
      "{\"a\":[1,-2.5e+3,{\"b\":null}],\"c\":\"\\u00e9\\ud83d\\ude00\xc3\xa9\","
      "\"d\":true,\"e\":false,\"f\":{}}";
  size_t n = sizeof text - 1;
  CHECK_EQ(parse_exact(text, n, NULL), 0);
  for (size_t k = 0; k < n; k++) {
    CHECK_EQ(parse_exact(text, k, NULL), -1);
  }
}

static char *nested(const char *open, const char *close, size_t depth,
                    size_t *len) {
  size_t o = strlen(open), c = strlen(close);
  char *s = malloc(depth * (o + c) + 1);
  size_t k = 0;
  if (s == NULL) {
    abort();
  }
  for (size_t i = 0; i < depth; i++, k += o) {
    memcpy(s + k, open, o);
  }
  s[k++] = '1';
  for (size_t i = 0; i < depth; i++, k += c) {
    memcpy(s + k, close, c);
  }
  *len = k;
  return s;
}

static void test_depth(void) {
  size_t n;
  char *s = nested("[", "]", PUSH_JSON_MAX_DEPTH, &n);
  CHECK_EQ(parse_exact(s, n, NULL), 0);
  free(s);
  s = nested("[", "]", PUSH_JSON_MAX_DEPTH + 1, &n);
  CHECK_EQ(parse_exact(s, n, NULL), -1);
  free(s);
  s = nested("{\"a\":", "}", PUSH_JSON_MAX_DEPTH, &n);
  CHECK_EQ(parse_exact(s, n, NULL), 0);
  free(s);
  s = nested("{\"a\":", "}", PUSH_JSON_MAX_DEPTH + 1, &n);
  CHECK_EQ(parse_exact(s, n, NULL), -1);
  free(s);
  /* Deep, unbalanced nesting costs neither stack nor time. */
  s = nested("[", "", 1000000, &n);
  CHECK_EQ(parse_exact(s, n, NULL), -1);
  free(s);
  /* Closing brackets bring the depth back down: siblings do not add up. */
  {
    char many[PUSH_JSON_MAX_DEPTH * 4 + 3];
    size_t k = 0;
    many[k++] = '[';
    for (int i = 0; i < PUSH_JSON_MAX_DEPTH; i++) {
      if (i > 0) {
        many[k++] = ',';
      }
      memcpy(many + k, "[]", 2);
      k += 2;
    }
    many[k++] = ']';
    CHECK_EQ(parse_exact(many, k, NULL), 0);
  }
}

/* ------------------------------------------------------------------------ */
/* Repeated member names                                                     */
/* ------------------------------------------------------------------------ */

/* Parses with push_json_parse_ex from an exact-size copy; returns the fault
 * and, for a repeat, the unescaped name in name[cap]. */
static push_json_fault parse_fault(const char *s, size_t n, char *name,
                                   size_t cap) {
  char *copy = malloc(n ? n : 1);
  push_json v;
  push_json_error e;
  if (copy == NULL) {
    abort();
  }
  memcpy(copy, s, n);
  memset(&e, 0xa5, sizeof e);
  int rv = push_json_parse_ex(copy, n, &v, &e);
  CHECK_EQ(rv, e.fault == PUSH_JSON_OK ? 0 : -1);
  if (name != NULL) {
    name[0] = '\0';
  }
  if (e.fault == PUSH_JSON_DUPLICATE) {
    /* The name is a string value inside the input. */
    CHECK(e.name.p >= copy && e.name.p + e.name.n <= copy + n);
    CHECK_EQ(push_json_type_of(e.name), PUSH_JSON_STRING);
    if (name != NULL) {
      CHECK(push_json_str(e.name, name, cap) >= 0);
    }
  } else {
    CHECK(e.name.p == NULL && e.name.n == 0);
  }
  free(copy);
  return e.fault;
}

/* Appends to a growing buffer (aborts when out of memory). */
typedef struct text {
  char *p;
  size_t n, cap;
} text;

static void put(text *t, const char *s) {
  size_t k = strlen(s);
  if (t->cap - t->n < k + 1) {
    t->cap = (t->cap + k + 1) * 2;
    t->p = realloc(t->p, t->cap);
    if (t->p == NULL) {
      abort();
    }
  }
  memcpy(t->p + t->n, s, k + 1);
  t->n += k;
}

static void test_duplicate_fault(void) {
  char name[64];
  CHECK_EQ(parse_fault(LITN("{\"a\":1,\"b\":2}"), name, sizeof name),
           PUSH_JSON_OK);
  CHECK_EQ(parse_fault(LITN("{\"a\":1,}"), name, sizeof name),
           PUSH_JSON_SYNTAX);
  CHECK_EQ(parse_fault(LITN(""), name, sizeof name), PUSH_JSON_SYNTAX);
  CHECK_EQ(parse_fault(LITN("{\"a\":1,\"b\":2,\"a\":3}"), name, sizeof name),
           PUSH_JSON_DUPLICATE);
  CHECK(strcmp(name, "a") == 0);
  /* The innermost object is judged when it closes, before the rest of the
   * text is read: a repeat is reported even if a syntax error follows. */
  CHECK_EQ(parse_fault(LITN("{\"x\":{\"yy\":1,\"y\\u0079\":2}, oops"), name,
                       sizeof name),
           PUSH_JSON_DUPLICATE);
  CHECK(strcmp(name, "yy") == 0);
  /* err may be NULL, and push_json_parse says -1. */
  push_json v;
  CHECK_EQ(push_json_parse_ex("{\"a\":1,\"a\":1}", 13, &v, NULL), -1);
  CHECK_EQ(push_json_parse("{\"a\":1,\"a\":1}", 13, &v), -1);
  CHECK_EQ(push_json_parse_ex("{\"a\":1}", 7, &v, NULL), 0);
  CHECK_EQ(v.n, 7);
}

/* Objects large enough to be sorted rather than compared pair by pair, and
 * more names open at once than fit the parser's inline buffer. */
static void test_duplicate_large(void) {
  char name[64], buf[64];
  for (int at = 0; at < 3; at++) {
    text t = {NULL, 0, 0};
    put(&t, "{");
    for (int i = 0; i < 200; i++) {
      snprintf(buf, sizeof buf, "%s\"k%03d\":%d", i ? "," : "", i, i);
      put(&t, buf);
    }
    CHECK_EQ(parse_fault(t.p, t.n + 1, NULL, 0), PUSH_JSON_SYNTAX);
    put(&t, "}");
    CHECK_EQ(parse_fault(t.p, t.n, NULL, 0), PUSH_JSON_OK);
    /* The same name again, spelled another way, first, in the middle or
     * last among the names. */
    static const char *const again[] = {"k000", "k1\\u0030\\u0030", "k199"};
    t.n--;
    snprintf(buf, sizeof buf, ",\"%s\":0}", again[at]);
    put(&t, buf);
    CHECK_EQ(parse_fault(t.p, t.n, name, sizeof name), PUSH_JSON_DUPLICATE);
    CHECK(strcmp(name, at == 0 ? "k000" : at == 1 ? "k100" : "k199") == 0);
    free(t.p);
  }
  /* Nesting with many names open at once: each object's names are its
   * own, so the same names at every level are no repeat. */
  for (int repeat = 0; repeat < 2; repeat++) {
    text t = {NULL, 0, 0};
    const int depth = PUSH_JSON_MAX_DEPTH - 2; /* room for [{...}] inside */
    for (int d = 0; d < depth; d++) {
      put(&t, "{");
      for (int i = 0; i < 40; i++) {
        snprintf(buf, sizeof buf, "\"n%d\":[{\"n%d\":1,\"m\":2}],", i, i);
        put(&t, buf);
      }
      put(&t, "\"z\":");
    }
    put(&t, "0");
    for (int d = 0; d < depth; d++) {
      put(&t, repeat && d == 10 ? ",\"n7\":0}" : ",\"zz\":0}");
    }
    CHECK_EQ(parse_fault(t.p, t.n, name, sizeof name),
             repeat ? PUSH_JSON_DUPLICATE : PUSH_JSON_OK);
    CHECK(strcmp(name, repeat ? "n7" : "") == 0);
    free(t.p);
  }
}

/* Hostile objects: the check must stay O(n log n). Comparing every pair of
 * 100000 names would take minutes; sorting them takes milliseconds. */
static void test_duplicate_cost(void) {
  char buf[96];
  const int count = 100000;
  text t = {NULL, 0, 0};
  /* Distinct names with a long common prefix, in reverse order. */
  put(&t, "{");
  for (int i = count; i-- > 0;) {
    snprintf(buf, sizeof buf,
             "%s\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx%07d\":0",
             i == count - 1 ? "" : ",", i);
    put(&t, buf);
  }
  put(&t, "}");
  clock_t t0 = clock();
  CHECK_EQ(parse_fault(t.p, t.n, NULL, 0), PUSH_JSON_OK);
  /* The same names, all escaped. */
  t.n = 0;
  put(&t, "{");
  for (int i = 0; i < count; i++) {
    snprintf(buf, sizeof buf, "%s\"\\u0078\\u0078%07d\":0", i ? "," : "", i);
    put(&t, buf);
  }
  put(&t, "}");
  CHECK_EQ(parse_fault(t.p, t.n, NULL, 0), PUSH_JSON_OK);
  /* Many small objects: no sorting at all. */
  t.n = 0;
  put(&t, "[");
  for (int i = 0; i < count; i++) {
    put(&t, i ? ",{\"a\":1,\"b\":2,\"c\":{\"a\":3}}" : "{\"a\":1}");
  }
  put(&t, "]");
  CHECK_EQ(parse_fault(t.p, t.n, NULL, 0), PUSH_JSON_OK);
  double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
  CHECK(secs < 3.0);
  free(t.p);
}

static push_json must_parse(const char *s) {
  push_json v = {NULL, 0};
  if (push_json_parse(s, strlen(s), &v) != 0) {
    fprintf(stderr, "cannot parse %s\n", s);
    abort();
  }
  return v;
}

static int span_is(push_json v, const char *lit) {
  return v.n == strlen(lit) && memcmp(v.p, lit, v.n) == 0;
}

static void test_type_of(void) {
  push_json none = {NULL, 0};
  CHECK_EQ(push_json_type_of(none), PUSH_JSON_INVALID);
  CHECK_EQ(push_json_type_of(must_parse("null")), PUSH_JSON_NULL);
  CHECK_EQ(push_json_type_of(must_parse("false")), PUSH_JSON_FALSE);
  CHECK_EQ(push_json_type_of(must_parse("true")), PUSH_JSON_TRUE);
  CHECK_EQ(push_json_type_of(must_parse("-1")), PUSH_JSON_NUMBER);
  CHECK_EQ(push_json_type_of(must_parse("7")), PUSH_JSON_NUMBER);
  CHECK_EQ(push_json_type_of(must_parse("\"\"")), PUSH_JSON_STRING);
  CHECK_EQ(push_json_type_of(must_parse("[]")), PUSH_JSON_ARRAY);
  CHECK_EQ(push_json_type_of(must_parse("{}")), PUSH_JSON_OBJECT);
  push_json junk = {"x", 1};
  CHECK_EQ(push_json_type_of(junk), PUSH_JSON_INVALID);
}

static void test_get(void) {
  push_json obj = must_parse("{\"a\" : 1, \"s\":\"]}\\\"\", \"o\":{\"a\":2},"
                             "\"arr\":[{\"a\":3},\"]\"],\"\\u0069d\":5,"
                             "\"e\\u0301\":7, \"\":8, \"z\":null}");
  push_json v;
  CHECK(push_json_get(obj, "a", &v) && span_is(v, "1"));
  CHECK(push_json_get(obj, "s", &v) && span_is(v, "\"]}\\\"\""));
  CHECK(push_json_get(obj, "o", &v) && span_is(v, "{\"a\":2}"));
  CHECK(push_json_get(obj, "arr", &v) && span_is(v, "[{\"a\":3},\"]\"]"));
  CHECK(push_json_get(obj, "id", &v) && span_is(v, "5")); /* unescaped */
  CHECK(push_json_get(obj, "e\xcc\x81", &v) && span_is(v, "7"));
  CHECK(push_json_get(obj, "", &v) && span_is(v, "8"));
  CHECK(push_json_get(obj, "z", &v) && span_is(v, "null"));
  CHECK(!push_json_get(obj, "i", &v));   /* a prefix of a name */
  CHECK(!push_json_get(obj, "idx", &v)); /* a name is a prefix of it */
  CHECK(!push_json_get(obj, "b", &v));
  CHECK(!push_json_get(must_parse("[\"a\",1]"), "a", &v));
  CHECK(!push_json_get(must_parse("\"a\""), "a", &v));
  CHECK(!push_json_get(must_parse("{}"), "a", &v));
  /* A NUL escape in a name does not match a shorter key. */
  CHECK(!push_json_get(must_parse("{\"a\\u0000\":1}"), "a", &v));
}

static void test_next_array(void) {
  static const char *const want[] = {"1",          "\"x,]\"", "[2,[3]]",
                                     "{\"k\":[]}", "null",    "-4.5e1"};
  push_json arr = must_parse("[ 1,\"x,]\" ,[2,[3]],{\"k\":[]}, null,-4.5e1 ]");
  push_json key = {"unchanged", 9}, v;
  size_t pos = 0, i = 0;
  while (push_json_next(arr, &pos, &key, &v)) {
    CHECK(i < 6 && span_is(v, want[i]));
    i++;
  }
  CHECK_EQ(i, 6);
  CHECK(span_is(key, "unchanged"));                 /* keys are for objects */
  CHECK_EQ(push_json_next(arr, &pos, NULL, &v), 0); /* stays at the end */

  pos = 0;
  CHECK_EQ(push_json_next(must_parse("[ ]"), &pos, NULL, &v), 0);
  pos = 0;
  CHECK_EQ(push_json_next(must_parse("[[]]"), &pos, NULL, &v), 1);
  CHECK(span_is(v, "[]"));
  pos = 0;
  CHECK_EQ(push_json_next(must_parse("7"), &pos, NULL, &v), 0);
  pos = 0;
  CHECK_EQ(push_json_next(must_parse("\"[1]\""), &pos, NULL, &v), 0);
}

static void test_next_object(void) {
  push_json obj = must_parse("{\"a\":1 , \"b\\\"\" : {\"c\":\"}\"} ,\"d\":[]}");
  push_json k, v;
  size_t pos = 0;
  CHECK_EQ(push_json_next(obj, &pos, &k, &v), 1);
  CHECK(span_is(k, "\"a\"") && span_is(v, "1"));
  CHECK_EQ(push_json_next(obj, &pos, &k, &v), 1);
  CHECK(span_is(k, "\"b\\\"\"") && span_is(v, "{\"c\":\"}\"}"));
  CHECK_EQ(push_json_next(obj, &pos, NULL, &v), 1);
  CHECK(span_is(v, "[]"));
  CHECK_EQ(push_json_next(obj, &pos, &k, &v), 0);
  pos = 0;
  CHECK_EQ(push_json_next(must_parse("{ }"), &pos, &k, &v), 0);
}

static void test_str(void) {
  char out[64];
  CHECK_EQ(push_json_str(must_parse("\"\""), out, sizeof out), 0);
  CHECK_EQ(out[0], '\0');
  CHECK_EQ(push_json_str(must_parse("\"abc\""), out, sizeof out), 3);
  CHECK(strcmp(out, "abc") == 0);
  CHECK_EQ(push_json_str(must_parse("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\""), out,
                         sizeof out),
           8);
  CHECK(strcmp(out, "\"\\/\b\f\n\r\t") == 0);
  /* \u escapes become UTF-8 of one, two, three and four bytes. */
  CHECK_EQ(push_json_str(must_parse("\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\""),
                         out, sizeof out),
           1 + 2 + 3 + 4);
  CHECK(strcmp(out, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") == 0);
  CHECK_EQ(push_json_str(must_parse("\"\\uDBFF\\uDFFF\\u07ff\\u0800\""), out,
                         sizeof out),
           4 + 2 + 3);
  CHECK(strcmp(out, "\xf4\x8f\xbf\xbf\xdf\xbf\xe0\xa0\x80") == 0);
  /* Raw UTF-8 passes through. */
  CHECK_EQ(push_json_str(must_parse("\"\xc3\xa9t\xc3\xa9\""), out, sizeof out),
           5);
  CHECK(strcmp(out, "\xc3\xa9t\xc3\xa9") == 0);
  /* An embedded NUL is returned in the length. */
  CHECK_EQ(push_json_str(must_parse("\"a\\u0000b\""), out, sizeof out), 3);
  CHECK_MEM(out, "a\0b", 4);
  /* Capacity counts the NUL. */
  CHECK_EQ(push_json_str(must_parse("\"abcd\""), out, 5), 4);
  CHECK_EQ(push_json_str(must_parse("\"abcd\""), out, 4), -1);
  CHECK_EQ(push_json_str(must_parse("\"\\u00e9\""), out, 3), 2);
  CHECK_EQ(push_json_str(must_parse("\"\\u00e9\""), out, 2), -1);
  CHECK_EQ(push_json_str(must_parse("\"\""), out, 0), -1);
  /* Not strings. */
  CHECK_EQ(push_json_str(must_parse("1"), out, sizeof out), -1);
  CHECK_EQ(push_json_str(must_parse("[\"a\"]"), out, sizeof out), -1);
  CHECK_EQ(push_json_str(must_parse("null"), out, sizeof out), -1);
  /* Spans that push_json_parse would not have produced stay in bounds. */
  push_json bad1 = {"\"\\\"", 3}, bad2 = {"\"\\u12\"", 6},
            bad3 = {"\"\\ud800\"", 8}, bad4 = {"\"", 1};
  CHECK_EQ(push_json_str(bad1, out, sizeof out), -1);
  CHECK_EQ(push_json_str(bad2, out, sizeof out), -1);
  CHECK_EQ(push_json_str(bad3, out, sizeof out), -1);
  CHECK_EQ(push_json_str(bad4, out, sizeof out), -1);
}

static void test_u64(void) {
  uint64_t x = 77;
  CHECK_EQ(push_json_u64(must_parse("0"), &x), 0);
  CHECK_EQ(x, 0);
  CHECK_EQ(push_json_u64(must_parse("42"), &x), 0);
  CHECK_EQ(x, 42);
  CHECK_EQ(push_json_u64(must_parse("9007199254740992"), &x), 0);
  CHECK(x == (uint64_t)1 << 53);
  x = 77;
  CHECK_EQ(push_json_u64(must_parse("9007199254740993"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("9999999999999999"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("18446744073709551616"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("-1"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("-0"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("1.0"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("1e3"), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("\"1\""), &x), -1);
  CHECK_EQ(push_json_u64(must_parse("true"), &x), -1);
  CHECK_EQ(x, 77); /* untouched on failure */
  push_json lead = {"01", 2}, empty = {"", 0};
  CHECK_EQ(push_json_u64(lead, &x), -1);
  CHECK_EQ(push_json_u64(empty, &x), -1);
}

static void test_buf_raw_u64(void) {
  push_buf b = {NULL, 0, 0};
  char big[1000];
  memset(big, 'x', sizeof big);
  CHECK_EQ(push_buf_raw(&b, "", 0), 0);
  CHECK_EQ(push_buf_raw(&b, "ab", 2), 0);
  CHECK_EQ(push_buf_raw(&b, big, sizeof big), 0); /* grows past doubling */
  CHECK_EQ(b.len, 1002);
  CHECK(b.cap >= b.len);
  CHECK_MEM(b.p, "abxx", 4);
  b.len = 0;
  CHECK_EQ(push_buf_u64(&b, 0), 0);
  CHECK_EQ(push_buf_raw(&b, " ", 1), 0);
  CHECK_EQ(push_buf_u64(&b, 1234567890), 0);
  CHECK_EQ(push_buf_raw(&b, " ", 1), 0);
  CHECK_EQ(push_buf_u64(&b, UINT64_MAX), 0);
  CHECK(b.len == strlen("0 1234567890 18446744073709551615") &&
        memcmp(b.p, "0 1234567890 18446744073709551615", b.len) == 0);
  /* A size that cannot fit fails before allocating and keeps the data. */
  size_t len = b.len;
  CHECK_EQ(push_buf_raw(&b, big, SIZE_MAX), -1);
  CHECK_EQ(b.len, len);
  CHECK_MEM(b.p, "0 1", 3);
  push_buf_free(&b);
  CHECK(b.p == NULL && b.len == 0 && b.cap == 0);
  push_buf_free(&b); /* twice is harmless */
}

/* Writes s[0..n) as a JSON string, checks the exact text (want), reads it
 * back and checks that it reads back as back[0..backlen): s itself when s
 * is valid UTF-8, else s with U+FFFD for the bytes that are not. */
static void check_str_as(const char *s, size_t n, const char *want,
                         const char *back, size_t backlen) {
  push_buf b = {NULL, 0, 0};
  push_json v;
  char out[512];
  CHECK_EQ(push_buf_str(&b, s, n), 0);
  CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
  CHECK_EQ(push_json_parse(b.p, b.len, &v), 0);
  CHECK_EQ(push_json_type_of(v), PUSH_JSON_STRING);
  long m = push_json_str(v, out, sizeof out);
  CHECK_EQ(m, backlen);
  if (m >= 0 && (size_t)m == backlen) {
    CHECK_MEM(out, back, backlen);
    CHECK_EQ(out[m], 0);
  }
  push_buf_free(&b);
}

/* The same for valid UTF-8, which reads back as itself. */
static void check_str(const char *s, size_t n, const char *want) {
  check_str_as(s, n, want, s, n);
}

static void test_buf_str(void) {
  check_str("", 0, "\"\"");
  check_str("plain", 5, "\"plain\"");
  check_str("\"\\/", 3, "\"\\\"\\\\/\"");
  check_str("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
  check_str("\x01\x1f\0\x7f", 4, "\"\\u0001\\u001f\\u0000\x7f\"");
  check_str("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
            "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
  /* Bytes that are no UTF-8 become U+FFFD (EF BF BD), so the output stays
   * valid. */
  check_str_as("a\xff"
               "b",
               3, "\"a\\ufffdb\"",
               "a\xef\xbf\xbd"
               "b",
               5);
  check_str_as("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\"",
               "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 9);
  check_str_as("\xe2\x82", 2, "\"\\ufffd\\ufffd\"", "\xef\xbf\xbd\xef\xbf\xbd",
               6);

  /* Every byte round-trips exactly when it is valid on its own. */
  char all[128];
  for (int i = 0; i < 128; i++) {
    all[i] = (char)i;
  }
  push_buf b = {NULL, 0, 0};
  push_json arr, e;
  char out[256];
  CHECK_EQ(push_buf_raw(&b, "[1,", 3), 0);
  CHECK_EQ(push_buf_str(&b, all, sizeof all), 0);
  CHECK_EQ(push_buf_raw(&b, "]", 1), 0);
  CHECK_EQ(push_json_parse(b.p, b.len, &arr), 0);
  size_t pos = 0;
  CHECK(push_json_next(arr, &pos, NULL, &e) && span_is(e, "1"));
  CHECK(push_json_next(arr, &pos, NULL, &e));
  CHECK_EQ(push_json_str(e, out, sizeof out), 128);
  CHECK_MEM(out, all, 128);
  push_buf_free(&b);
}

int main(void) {
  RUN(test_accepted);
  RUN(test_refused);
  RUN(test_span);
  RUN(test_prefixes);
  RUN(test_depth);
  RUN(test_duplicate_fault);
  RUN(test_duplicate_large);
  RUN(test_duplicate_cost);
  RUN(test_type_of);
  RUN(test_get);
  RUN(test_next_array);
  RUN(test_next_object);
  RUN(test_str);
  RUN(test_u64);
  RUN(test_buf_raw_u64);
  RUN(test_buf_str);
  return TEST_REPORT();
}
