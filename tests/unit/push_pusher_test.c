/* push_pusher_test.c - the Pusher side's pure parts: the string map under
 * churn, the presence roster (live pushes, snapshots, the pushes that race
 * a snapshot in either order, the first snapshot's replay), member lists,
 * the directory's counts, signatures against known vectors, socket ids,
 * channel kinds and hub names, finding the event in a publication, the
 * loop that announces a client's changes, and the pusher.apps
 * configuration with its refusals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "push/pusher_int.h"
#include "test.h"

/* ---- the map ---------------------------------------------------------- */

static void test_map_churn(void) {
  pusher_map m = {0};
  char k[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof(k), "key-%d", i);
    CHECK_EQ(pusher_map_put(&m, k, (void *)(intptr_t)(i + 1)), 0);
  }
  CHECK_EQ(m.n, 5000);
  /* Remove every third: backward shifts must keep the others findable. */
  for (int i = 0; i < 5000; i += 3) {
    snprintf(k, sizeof(k), "key-%d", i);
    CHECK_EQ((intptr_t)pusher_map_del(&m, k), i + 1);
  }
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof(k), "key-%d", i);
    intptr_t v = (intptr_t)pusher_map_get(&m, k);
    CHECK_EQ(v, i % 3 == 0 ? 0 : i + 1);
  }
  CHECK(pusher_map_del(&m, "absent") == NULL);
  size_t pos = 0, n = 0;
  const char *key;
  void *val;
  while (pusher_map_next(&m, &pos, &key, &val)) {
    n++;
  }
  CHECK_EQ(n, m.n);
  pusher_map_free(&m);
}

/* ---- the roster ------------------------------------------------------- */

typedef struct changes {
  char log[2048];
} changes;

static void note(const pusher_change *c, void *ud) {
  changes *ch = ud;
  size_t n = strlen(ch->log);
  snprintf(ch->log + n, sizeof(ch->log) - n, "%s%s%s;", c->added ? "+" : "-",
           c->user, c->client ? "" : "(s)");
}

static void test_roster_live(void) {
  pusher_roster r = {0};
  changes c = {""};
  uint64_t t = pusher_roster_begin(&r);
  CHECK_EQ(pusher_roster_end(&r, t, "{\"clients\":{}}", 14, note, &c), 0);
  CHECK(r.ready);
  pusher_roster_event(&r, 0, "a-1", "ann", "{\"n\":1}", note, &c);
  pusher_roster_event(&r, 0, "a-2", "ann", NULL, note, &c); /* 2nd tab */
  pusher_roster_event(&r, 0, "b-1", "bob", NULL, note, &c);
  pusher_roster_event(&r, 0, "b-1", "bob", NULL, note, &c); /* twice */
  CHECK_EQ(pusher_roster_nusers(&r), 2);
  pusher_roster_event(&r, 1, "a-1", NULL, NULL, note, &c);
  CHECK(pusher_roster_has_user(&r, "ann"));
  pusher_roster_event(&r, 1, "a-2", NULL, NULL, note, &c);
  pusher_roster_event(&r, 1, "zz-9", NULL, NULL, note, &c); /* unknown */
  CHECK(strcmp(c.log, "+ann;+bob;-ann;") == 0);
  push_buf b = {0};
  CHECK_EQ(pusher_roster_json(&r, &b, "cy", "{\"x\":1}"), 0);
  CHECK(strstr(b.p, "\"count\":2") != NULL);
  CHECK(strstr(b.p, "\"cy\":{\"x\":1}") != NULL);
  CHECK(strstr(b.p, "\"bob\":null") != NULL);
  b.len = 0;
  CHECK_EQ(pusher_roster_json(&r, &b, "bob", NULL), 0);
  CHECK(strstr(b.p, "\"count\":1") != NULL);
  push_buf_free(&b);
  pusher_roster_free(&r);
}

/* Pushes that arrive while a snapshot is on its way: whether they ran
 * before it or after it in Redis, the result is the true state. */
static void test_roster_race(void) {
  pusher_roster r = {0};
  changes c = {""};
  uint64_t t = pusher_roster_begin(&r);
  const char snap0[] = "{\"clients\":{\"x-1\":{\"user\":\"u1\"}}}";
  CHECK_EQ(pusher_roster_end(&r, t, snap0, sizeof(snap0) - 1, note, &c), 0);
  /* Nobody was told anything before: the first snapshot is no change. */
  CHECK(strcmp(c.log, "") == 0);
  CHECK(pusher_roster_has_user(&r, "u1"));
  /* Second snapshot: x-1 left before it ran (the snapshot lacks it) but
   * the leave arrives after the request; y-1 joined after it ran. */
  t = pusher_roster_begin(&r);
  pusher_roster_event(&r, 1, "x-1", NULL, NULL, note, &c);
  pusher_roster_event(&r, 0, "y-1", "u2", NULL, note, &c);
  CHECK(strcmp(c.log, "-u1;+u2;") == 0); /* live */
  c.log[0] = 0;
  const char snap[] = "{\"clients\":{}}";
  pusher_roster_end(&r, t, snap, sizeof(snap) - 1, note, &c);
  CHECK_EQ(pusher_roster_nusers(&r), 1);
  CHECK(pusher_roster_has_user(&r, "u2"));
  CHECK(strcmp(c.log, "") == 0); /* nothing differs from what was told */
  /* A third: the snapshot holds z-1 whose join had not come; a leave of
   * y-1 comes after the snapshot ran. */
  t = pusher_roster_begin(&r);
  const char snap2[] =
      "{\"clients\":{\"y-1\":{\"user\":\"u2\"},\"z-1\":{\"user\":\"u3\"}}}";
  pusher_roster_event(&r, 1, "y-1", NULL, NULL, note, &c);
  pusher_roster_end(&r, t, snap2, sizeof(snap2) - 1, note, &c);
  CHECK(pusher_roster_has_user(&r, "u3"));
  CHECK(!pusher_roster_has_user(&r, "u2"));
  CHECK(strcmp(c.log, "-u2;+u3(s);") == 0);
  pusher_roster_free(&r);
}

/* Before the first snapshot nothing is applied; the replay after it tells
 * of each change with the push's client (so its node sends the webhook). */
static void test_roster_first_replay(void) {
  pusher_roster r = {0};
  changes c = {""};
  pusher_roster_event(&r, 0, "early", "nobody", NULL, note, &c); /* dropped */
  uint64_t t = pusher_roster_begin(&r);
  pusher_roster_event(&r, 0, "a-1", "ann", NULL, note, &c);
  pusher_roster_event(&r, 0, "b-1", "bob", NULL, note, &c);
  CHECK(strcmp(c.log, "") == 0);
  const char snap[] = "{\"clients\":{\"b-1\":{\"user\":\"bob\"}}}";
  pusher_roster_end(&r, t, snap, sizeof(snap) - 1, note, &c);
  /* bob was in the snapshot: only ann is a change. */
  CHECK(strcmp(c.log, "+ann;") == 0);
  CHECK(!pusher_roster_has_user(&r, "nobody"));
  /* A failed read leaves the roster as it was. */
  t = pusher_roster_begin(&r);
  CHECK_EQ(pusher_roster_end(&r, t, NULL, 0, note, &c), 0);
  CHECK_EQ(pusher_roster_nusers(&r), 2);
  pusher_roster_free(&r);
}

static void test_presence_users_and_dir(void) {
  const char snap[] =
      "{\"clients\":{\"a-1\":{\"user\":\"u1\"},\"a-2\":{"
      "\"user\":\"u1\"},\"b-7\":{\"user\":\"u2\",\"info\":{}}}}";
  push_buf b = {0};
  size_t n = 0;
  CHECK_EQ(pusher_presence_users(snap, sizeof(snap) - 1, &b, &n), 0);
  CHECK_EQ(n, 2);
  CHECK(strstr(b.p, "{\"id\":\"u1\"}") != NULL);
  push_buf_free(&b);
  const char dir[] =
      "{\"clients\":{\"a/x\":{\"user\":\"x\",\"info\":{\"n\":2}},\"b/x\":{"
      "\"user\":\"x\",\"info\":{\"n\":3}},\"b/y\":{\"user\":\"y\",\"info\":{"
      "\"n\":1}}}}";
  pusher_map counts = {0};
  CHECK_EQ(pusher_dir_counts(dir, sizeof(dir) - 1, &counts), 0);
  CHECK_EQ((uintptr_t)pusher_map_get(&counts, "x"), 5);
  CHECK_EQ((uintptr_t)pusher_map_get(&counts, "y"), 1);
  pusher_map_free(&counts);
  CHECK(pusher_dir_counts("nope", 4, &counts) != 0);
  pusher_map_free(&counts);
}

/* ---- signatures and names ---------------------------------------------- */

static void test_signatures(void) {
  char hex[65], md5[33];
  /* RFC 4231 test case 2. */
  CHECK_EQ(pusher_hmac_hex("Jefe", "what do ya want for nothing?", 28, hex), 0);
  CHECK(strcmp(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b9"
                    "64ec3843") == 0);
  CHECK_EQ(pusher_md5_hex("", 0, md5), 0);
  CHECK(strcmp(md5, "d41d8cd98f00b204e9800998ecf8427e") == 0);
  push_pusher_app app;
  memset(&app, 0, sizeof(app));
  strcpy(app.key, "k");
  strcpy(app.secret, "Jefe");
  char auth[70];
  snprintf(auth, sizeof(auth), "k:%s", hex);
  CHECK(pusher_auth_ok(&app, auth, strlen(auth), "what do ya want for nothing?",
                       28));
  CHECK(!pusher_auth_ok(&app, auth, strlen(auth), "what do ya want", 15));
  auth[0] = 'x';
  CHECK(!pusher_auth_ok(&app, auth, strlen(auth),
                        "what do ya want for nothing?", 28));
  CHECK(!pusher_auth_ok(&app, "k:", 2, "", 0));
  CHECK(pusher_hex_equal("abc", "abc", 3));
  CHECK(!pusher_hex_equal("abc", "abd", 3));
  CHECK(!pusher_hex_equal("abc", "ab", 2));
}

static void test_names(void) {
  CHECK(pusher_socket_id_valid("123.456", 7));
  CHECK(!pusher_socket_id_valid("123.", 4));
  CHECK(!pusher_socket_id_valid(".5", 2));
  CHECK(!pusher_socket_id_valid("1.2.3", 5));
  CHECK(!pusher_socket_id_valid("12a.3", 5));
  CHECK_EQ(pusher_channel_kind("orders", 6), 0);
  CHECK_EQ(pusher_channel_kind("private-x", 9), PUSHER_K_PRIVATE);
  CHECK_EQ(pusher_channel_kind("presence-cache-x", 16),
           PUSHER_K_PRIVATE | PUSHER_K_PRESENCE | PUSHER_K_CACHE);
  CHECK_EQ(pusher_channel_kind("private-encrypted-cache-x", 25),
           PUSHER_K_PRIVATE | PUSHER_K_ENCRYPTED | PUSHER_K_CACHE);
  CHECK_EQ(pusher_channel_kind("cache-x", 7), PUSHER_K_CACHE);
  CHECK_EQ(pusher_channel_kind("#server-to-user-7", 17), PUSHER_K_USER);
  CHECK_EQ(pusher_channel_kind("#server-to-user-", 16), -1);
  CHECK_EQ(pusher_channel_kind("has space", 9), -1);
  CHECK_EQ(pusher_channel_kind("a:b", 3), -1);
  CHECK_EQ(pusher_channel_kind("foo-bar_1234@=,.;", 17), 0);
  char longname[200];
  memset(longname, 'a', sizeof(longname));
  CHECK_EQ(pusher_channel_kind(longname, 164), 0);
  CHECK_EQ(pusher_channel_kind(longname, 165), -1);

  push_pusher_app cfg;
  memset(&cfg, 0, sizeof(cfg));
  strcpy(cfg.id, "42");
  pusher_app app;
  memset(&app, 0, sizeof(app));
  app.cfg = &cfg;
  char hub[PUSHER_HUB_MAX];
  CHECK_EQ(pusher_hub_name(&app, "presence-x",
                           PUSHER_K_PRIVATE | PUSHER_K_PRESENCE, hub),
           0);
  CHECK(strcmp(hub, "pusher;42;p:presence-x") == 0);
  CHECK_EQ(pusher_hub_name(&app, "#server-to-user-a:b{c}é", PUSHER_K_USER, hub),
           0);
  CHECK(strcmp(hub, "pusher;42;u:a%3Ab%7Bc%7D%C3%A9") == 0);
}

/* The event inside a publication the hub encoded. */
static void test_pub_event(void) {
  push_hub *hub;
  push_ns ns;
  memset(&ns, 0, sizeof(ns));
  strcpy(ns.name, "pusher;1");
  ns.history_size = 1;
  hub = push_hub_new(&ns, 1);
  const char data[] = "[\"12.34\",{\"event\":\"e\",\"channel\":\"c\","
                      "\"data\":\"{}\"}]";
  push_json d = {data, sizeof(data) - 1}, none = {NULL, 0};
  push_pos pos;
  CHECK_EQ(push_hub_publish(hub, "pusher;1:c", d, none, NULL, NULL, 1000, &pos),
           0);
  push_result r;
  push_pos since = {0};
  memset(&r, 0, sizeof(r));
  CHECK_EQ(push_hub_history(hub, "pusher;1:c", 1, &since, 1000, &r), 0);
  CHECK_EQ(r.npubs, 1);
  const char *skip;
  size_t sl = 0, el = 0;
  const char *ev = pusher_pub_event(r.pubs[0], &skip, &sl, &el);
  CHECK(ev != NULL);
  CHECK(sl == 5 && memcmp(skip, "12.34", 5) == 0);
  const char want[] = "{\"event\":\"e\",\"channel\":\"c\",\"data\":\"{}\"}";
  CHECK(el == sizeof(want) - 1 && memcmp(ev, want, el) == 0);
  push_result_free(&r);
  push_hub_del(hub);

  pusher_join j;
  const char frame[] = "{\"push\":{\"channel\":\"c\",\"join\":{\"client\":"
                       "\"a-1\",\"user\":\"u\",\"info\":{\"k\":1}}}}";
  CHECK_EQ(pusher_parse_join(frame, sizeof(frame) - 1, &j), 0);
  CHECK(!j.leave && strcmp(j.client, "a-1") == 0 &&
        strcmp(j.info, "{\"k\":1}") == 0);
  free(j.info);
  CHECK(pusher_parse_join("{}", 2, &j) != 0);
}

/* ---- configuration ------------------------------------------------------ */

static int load(const char *text, char *err, size_t errlen,
                push_pusher_config *pc) {
  push_json v;
  memset(pc, 0, sizeof(*pc));
  if (push_json_parse(text, strlen(text), &v) != 0) {
    return -2;
  }
  return push_pusher_config_load(pc, v, err, errlen);
}

static void test_config(void) {
  push_pusher_config pc;
  char err[256];
  CHECK_EQ(load("{\"apps\":[{\"id\":7,\"key\":\"k\",\"secret\":\"s\","
                "\"enable_client_messages\":true,\"max_connections\":5,"
                "\"webhooks\":{\"url\":\"http://x/h\",\"events\":["
                "\"member_added\"]}}]}",
                err, sizeof(err), &pc),
           0);
  CHECK_EQ(pc.napps, 1);
  CHECK(strcmp(pc.apps[0].id, "7") == 0);
  CHECK_EQ(pc.apps[0].max_connections, 5);
  CHECK_EQ(pc.apps[0].hooks, PUSHER_HOOK_MEMBER_ADDED);
  CHECK_EQ(pc.apps[0].max_event_bytes, 10240);
  push_ns *ns = NULL;
  size_t nns = 0;
  CHECK_EQ(push_pusher_namespaces(&pc, &ns, &nns), 0);
  CHECK_EQ(nns, 6);
  CHECK(strcmp(ns[2].name, "pusher;7;p") == 0 && ns[2].join_leave);
  CHECK(strcmp(ns[1].name, "pusher;7;c") == 0 && ns[1].history_size == 1);
  free(ns);
  push_pusher_config_free(&pc);
  static const char *const bad[] = {
      "{\"apps\":[{\"key\":\"k\",\"secret\":\"s\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"secret\":\"s\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\"}]}",
      "{\"apps\":[{\"id\":\"a b\",\"key\":\"k\",\"secret\":\"s\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k/x\",\"secret\":\"s\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"change-me\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\",\"x\":1}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\"},"
      "{\"id\":\"2\",\"key\":\"k\",\"secret\":\"t\"}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\","
      "\"webhooks\":{\"url\":\"ftp://x\"}}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\","
      "\"webhooks\":{\"url\":\"http://x\",\"events\":[\"nope\"]}}]}",
      "{\"apps\":[{\"id\":\"1\",\"key\":\"k\",\"secret\":\"s\","
      "\"max_event_bytes\":0}]}",
      "{\"applications\":[]}",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = 0;
    int rv = load(bad[i], err, sizeof(err), &pc);
    if (rv != -1 || err[0] == 0) {
      fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    CHECK_EQ(rv, -1);
    CHECK(err[0] != 0);
    push_pusher_config_free(&pc);
  }
}

/* Which loop of a node announces a client's changes: the node's name
 * leads the id, and its number modulo the loops is the loop. */
static void test_client_here(void) {
  push_server ps;
  memset(&ps, 0, sizeof(ps));
  strcpy(ps.node, "a");
  ps.nthreads = 1;
  CHECK_EQ(pusher_client_here(&ps, "a-1"), 1);
  CHECK_EQ(pusher_client_here(&ps, "a-17"), 1);
  CHECK_EQ(pusher_client_here(&ps, "ab-1"), 0); /* another node */
  CHECK_EQ(pusher_client_here(&ps, "b-1"), 0);
  CHECK_EQ(pusher_client_here(&ps, "a-"), 0);
  CHECK_EQ(pusher_client_here(&ps, "a-x"), 0);
  CHECK_EQ(pusher_client_here(&ps, "a-1x"), 0);
  CHECK_EQ(pusher_client_here(&ps, "a"), 0);
  ps.nthreads = 3;
  ps.thread = 1;
  CHECK_EQ(pusher_client_here(&ps, "a-4"), 1);
  CHECK_EQ(pusher_client_here(&ps, "a-7"), 1);
  CHECK_EQ(pusher_client_here(&ps, "a-3"), 0);
  CHECK_EQ(pusher_client_here(&ps, "a-5"), 0);
  ps.thread = 0;
  CHECK_EQ(pusher_client_here(&ps, "a-3"), 1);
  CHECK_EQ(pusher_client_here(&ps, "a-4"), 0);
}

int main(void) {
  RUN(test_map_churn);
  RUN(test_client_here);
  RUN(test_roster_live);
  RUN(test_roster_race);
  RUN(test_roster_first_replay);
  RUN(test_presence_users_and_dir);
  RUN(test_signatures);
  RUN(test_names);
  RUN(test_pub_event);
  RUN(test_config);
  return TEST_REPORT();
}
