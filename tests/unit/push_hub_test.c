/* push_hub_test.c - the hub: offsets and epochs, fan-out with balanced
 * references, history bounded by size and TTL, every recovery branch of
 * docs/protocol.md, subscriptions, presence with join/leave pushes,
 * namespaces, channel listing, forgetting idle channels, 10,000
 * subscribers coming and going, and the byte cap on history across
 * channels. Time is always passed in explicitly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "push/push.h"
#include "test.h"

/* ---- A fake client: keeps what the hub delivers, counts references. ---- */

typedef struct fake_client {
  push_pub **got;
  size_t ngot, capgot;
  size_t nevents;
  size_t ngot_at_event; /* ngot when the last presence event came */
  char last_event[512];
} fake_client;

static size_t g_delivered; /* references handed out by deliver */
static size_t g_released;  /* of those, released by the fake clients */

static void fake_deliver(void *client, push_pub *pub) {
  fake_client *c = client;
  if (c->ngot == c->capgot) {
    c->capgot = c->capgot ? c->capgot * 2 : 8;
    c->got = realloc(c->got, c->capgot * sizeof *c->got);
  }
  c->got[c->ngot++] = pub;
  g_delivered++;
}

static void fake_presence(void *client, const char *frame, size_t len) {
  fake_client *c = client;
  size_t n = len < sizeof c->last_event - 1 ? len : sizeof c->last_event - 1;
  memcpy(c->last_event, frame, n);
  c->last_event[n] = '\0';
  c->nevents++;
  c->ngot_at_event = c->ngot;
}

static void fake_release(fake_client *c) {
  for (size_t i = 0; i < c->ngot; i++) {
    push_pub_unref(c->got[i]);
    g_released++;
  }
  free(c->got);
  memset(c, 0, sizeof *c);
}

static push_sub sub_of(fake_client *c) {
  push_sub s = {c, fake_deliver, fake_presence};
  return s;
}

/* ---- Helpers ---------------------------------------------------------- */

static push_ns ns_make(const char *name, uint32_t size, uint32_t ttl_s,
                       int join_leave) {
  push_ns ns;
  memset(&ns, 0, sizeof ns);
  strcpy(ns.name, name);
  ns.publish = 1;
  ns.presence = 1;
  ns.join_leave = join_leave;
  ns.history_size = size;
  ns.history_ttl_s = ttl_s;
  return ns;
}

/* Namespaces used throughout: "" (history 10, no TTL), "chat" (history 3,
 * TTL 10 s, join/leave), "live" (no history). */
static push_hub *hub_make(void) {
  push_ns ns[3] = {ns_make("", 10, 0, 0), ns_make("chat", 3, 10, 1),
                   ns_make("live", 0, 0, 0)};
  push_hub *hub = push_hub_new(ns, 3);
  CHECK(hub != NULL);
  return hub;
}

static const push_json no_json = {NULL, 0};

static push_json js(const char *s) {
  push_json j = {s, strlen(s)};
  return j;
}

/* Publishes and flushes, as a server's pass does for one publication. */
static int publish(push_hub *hub, const char *ch, const char *data,
                   int64_t now_ms, push_pos *pos) {
  push_pos tmp;
  int rv = push_hub_publish(hub, ch, js(data), no_json, NULL, NULL, now_ms,
                            pos != NULL ? pos : &tmp);
  push_hub_flush(hub);
  return rv;
}

static push_pos pos_make(const char *epoch, uint64_t offset) {
  push_pos p;
  memset(&p, 0, sizeof p);
  strncpy(p.epoch, epoch, PUSH_EPOCH_MAX);
  p.offset = offset;
  p.set = 1;
  return p;
}

static int epoch_ok(const char *e) {
  if (strlen(e) != PUSH_EPOCH_MAX) {
    return 0;
  }
  for (size_t i = 0; i < PUSH_EPOCH_MAX; i++) {
    if (!((e[i] >= 'a' && e[i] <= 'z') || (e[i] >= '0' && e[i] <= '9'))) {
      return 0;
    }
  }
  return 1;
}

/* The pubs of r are offsets first, first + 1, ... */
static int pubs_are(const push_result *r, uint64_t first, size_t n) {
  if (r->npubs != n) {
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    if (r->pubs[i]->offset != first + i) {
      return 0;
    }
  }
  return 1;
}

static int buf_is(const push_buf *b, const char *s) {
  return b->len == strlen(s) && memcmp(b->p, s, b->len) == 0;
}

/* ---- Tests ------------------------------------------------------------ */

static void test_offsets_and_epochs(void) {
  push_hub *hub = hub_make();
  push_pos p1, p2, p3, q;
  CHECK_EQ(publish(hub, "news", "{\"a\":1}", 0, &p1), 0);
  CHECK_EQ(publish(hub, "news", "[2]", 0, &p2), 0);
  CHECK_EQ(publish(hub, "news", "3", 0, &p3), 0);
  CHECK_EQ(p1.offset, 1);
  CHECK_EQ(p2.offset, 2);
  CHECK_EQ(p3.offset, 3);
  CHECK(p1.set && p3.set);
  CHECK(epoch_ok(p1.epoch));
  CHECK(strcmp(p1.epoch, p3.epoch) == 0);
  /* Another channel is another stream. */
  CHECK_EQ(publish(hub, "other", "1", 0, &q), 0);
  CHECK_EQ(q.offset, 1);
  CHECK(epoch_ok(q.epoch));
  CHECK(strcmp(q.epoch, p1.epoch) != 0);

  /* The stored publication: the push frame, with the pub inside it. */
  push_result r;
  CHECK_EQ(push_hub_history(hub, "news", 1, NULL, 0, &r), 0);
  CHECK(pubs_are(&r, 3, 1));
  if (r.npubs == 1) {
    const push_pub *pub = r.pubs[0];
    const char *want = "{\"push\":{\"channel\":\"news\",\"pub\":"
                       "{\"offset\":3,\"data\":3}}}";
    CHECK_EQ(pub->frame_len, strlen(want));
    CHECK_MEM(pub->frame, want, strlen(want));
    CHECK_EQ(pub->json_len, strlen("{\"offset\":3,\"data\":3}"));
    CHECK_MEM(pub->frame + pub->json_off, "{\"offset\":3,\"data\":3}",
              pub->json_len);
  }
  push_result_free(&r);

  /* Published by a client: its info is part of the publication. */
  push_pos p4;
  CHECK_EQ(
      push_hub_publish(hub, "news", js("{}"), no_json, "c1", "ann", 0, &p4), 0);
  CHECK_EQ(push_hub_history(hub, "news", 1, NULL, 0, &r), 0);
  if (r.npubs == 1) {
    const push_pub *pub = r.pubs[0];
    const char *json = pub->frame + pub->json_off;
    CHECK(pub->json_len > 20 && json[0] == '{' &&
          json[pub->json_len - 1] == '}');
    CHECK(strstr(pub->frame, "\"c1\"") != NULL);
    CHECK(strstr(pub->frame, "\"ann\"") != NULL);
  }
  push_result_free(&r);

  /* Binary data. */
  CHECK_EQ(push_hub_publish(hub, "news", no_json, js("\"aGk=\""), NULL, NULL, 0,
                            &p4),
           0);
  CHECK_EQ(p4.offset, 5);
  CHECK_EQ(push_hub_history(hub, "news", 1, NULL, 0, &r), 0);
  if (r.npubs == 1) {
    CHECK(strstr(r.pubs[0]->frame, "aGk=") != NULL);
  }
  push_result_free(&r);
  push_hub_del(hub);
}

static void test_fanout(void) {
  enum { NCLIENTS = 200, NPUBS = 7 };
  push_hub *hub = hub_make();
  static fake_client clients[NCLIENTS];
  g_delivered = g_released = 0;
  for (size_t i = 0; i < NCLIENTS; i++) {
    push_sub s = sub_of(&clients[i]);
    push_result r;
    CHECK_EQ(push_hub_subscribe(hub, "room", &s, NULL, 0, &r), 0);
    push_result_free(&r);
  }
  CHECK_EQ(push_hub_nsubscriptions(hub), NCLIENTS);
  for (int i = 0; i < NPUBS; i++) {
    CHECK_EQ(publish(hub, "room", "{}", 0, NULL), 0);
  }
  CHECK_EQ(g_delivered, (size_t)NCLIENTS * NPUBS);
  /* Each client got each publication once, in order, and every one of
   * them is the same shared block. */
  for (size_t i = 0; i < NCLIENTS; i++) {
    CHECK_EQ(clients[i].ngot, NPUBS);
    for (size_t k = 0; k < clients[i].ngot; k++) {
      CHECK_EQ(clients[i].got[k]->offset, k + 1);
      CHECK(clients[i].got[k] == clients[0].got[k]);
    }
  }
  /* References: history holds one, each client one. */
  CHECK_EQ(clients[0].got[0]->refs, NCLIENTS + 1);
  for (size_t i = 0; i < NCLIENTS; i++) {
    fake_release(&clients[i]);
  }
  CHECK_EQ(g_released, g_delivered);
  push_result r;
  CHECK_EQ(push_hub_history(hub, "room", 0, NULL, 0, &r), 0);
  CHECK(pubs_are(&r, 1, NPUBS));
  for (size_t k = 0; k < r.npubs; k++) {
    CHECK_EQ(r.pubs[k]->refs, 2); /* history and this result */
  }
  push_result_free(&r);

  /* A namespace without history: the only references are the clients'. */
  fake_client c;
  memset(&c, 0, sizeof c);
  push_sub s = sub_of(&c);
  CHECK_EQ(push_hub_subscribe(hub, "live:x", &s, NULL, 0, &r), 0);
  CHECK_EQ(publish(hub, "live:x", "1", 0, NULL), 0);
  CHECK_EQ(c.ngot, 1);
  if (c.ngot == 1) {
    CHECK_EQ(c.got[0]->refs, 1);
  }
  fake_release(&c);
  push_hub_del(hub); /* ASan reports any leaked publication */
}

static void test_history_size(void) {
  push_hub *hub = hub_make();
  push_result r;
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(publish(hub, "chat:a", "{}", 1000, NULL), 0);
  }
  CHECK_EQ(push_hub_history(hub, "chat:a", 0, NULL, 1000, &r), 0);
  CHECK(pubs_are(&r, 3, 3)); /* history_size 3 */
  CHECK_EQ(r.pos.offset, 5);
  CHECK_EQ(r.recovered, 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_history(hub, "chat:a", 2, NULL, 1000, &r), 0);
  CHECK(pubs_are(&r, 4, 2));
  push_result_free(&r);
  CHECK_EQ(push_hub_history(hub, "chat:a", 100, NULL, 1000, &r), 0);
  CHECK(pubs_are(&r, 3, 3));
  push_result_free(&r);

  /* Past the ring's first growth (8) in a larger history (10). */
  for (int i = 0; i < 25; i++) {
    CHECK_EQ(publish(hub, "big", "{}", 0, NULL), 0);
  }
  CHECK_EQ(push_hub_history(hub, "big", 0, NULL, 0, &r), 0);
  CHECK(pubs_are(&r, 16, 10));
  push_result_free(&r);

  /* History after since, at most limit (the oldest ones, to page on). */
  push_pos since = pos_make(r.pos.epoch, 18);
  CHECK_EQ(push_hub_history(hub, "big", 3, &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 19, 3));
  push_result_free(&r);
  since.offset = 3; /* gone */
  CHECK_EQ(push_hub_history(hub, "big", 0, &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);

  /* No history at all. */
  CHECK_EQ(publish(hub, "live:a", "{}", 0, NULL), 0);
  CHECK_EQ(push_hub_history(hub, "live:a", 0, NULL, 0, &r), 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 1);
  push_result_free(&r);
  push_hub_del(hub);
}

static void test_history_ttl(void) {
  push_hub *hub = hub_make();
  push_result r;
  /* chat: 3 entries, 10 s. */
  CHECK_EQ(publish(hub, "chat:t", "1", 0, NULL), 0);
  CHECK_EQ(publish(hub, "chat:t", "2", 5000, NULL), 0);
  CHECK_EQ(publish(hub, "chat:t", "3", 9000, NULL), 0);
  CHECK_EQ(push_hub_history(hub, "chat:t", 0, NULL, 9999, &r), 0);
  CHECK(pubs_are(&r, 1, 3));
  push_result_free(&r);
  /* At 10 s the first one has lived its 10 s. */
  CHECK_EQ(push_hub_history(hub, "chat:t", 0, NULL, 10000, &r), 0);
  CHECK(pubs_are(&r, 2, 2));
  push_result_free(&r);
  CHECK_EQ(push_hub_history(hub, "chat:t", 0, NULL, 19000, &r), 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 3); /* offsets survive their history */
  push_result_free(&r);
  /* Publishing after everything expired continues the stream. */
  push_pos p;
  CHECK_EQ(publish(hub, "chat:t", "4", 30000, &p), 0);
  CHECK_EQ(p.offset, 4);
  CHECK_EQ(push_hub_history(hub, "chat:t", 0, NULL, 30000, &r), 0);
  CHECK(pubs_are(&r, 4, 1));
  push_result_free(&r);
  /* Tick drops expired history too, and then the channel. */
  CHECK_EQ(push_hub_nchannels(hub), 1);
  push_hub_tick(hub, 39999);
  CHECK_EQ(push_hub_nchannels(hub), 1);
  push_hub_tick(hub, 40000);
  CHECK_EQ(push_hub_nchannels(hub), 0);
  push_hub_del(hub);
}

/* Subscribes a fresh client with since and returns the result. */
static int sub_since(push_hub *hub, fake_client *c, const char *ch,
                     const push_pos *since, int64_t now_ms, push_result *r) {
  memset(c, 0, sizeof *c);
  push_sub s = sub_of(c);
  return push_hub_subscribe(hub, ch, &s, since, now_ms, r);
}

static void test_recovery(void) {
  push_hub *hub = hub_make();
  push_pos cur;
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(publish(hub, "s", "{}", 0, &cur), 0);
  }
  fake_client c[9];
  push_result r;

  /* Match: everything after 2 is there. Pushes continue after it. */
  push_pos since = pos_make(cur.epoch, 2);
  CHECK_EQ(sub_since(hub, &c[0], "s", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 3, 3));
  CHECK_EQ(r.pos.offset, 5);
  CHECK(strcmp(r.pos.epoch, cur.epoch) == 0);
  push_result_free(&r);
  CHECK_EQ(publish(hub, "s", "{}", 0, NULL), 0);
  CHECK_EQ(c[0].ngot, 1);
  CHECK_EQ(c[0].got[0]->offset, 6);

  /* At the head: recovered, nothing to send. */
  since.offset = 6;
  CHECK_EQ(sub_since(hub, &c[1], "s", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK_EQ(r.npubs, 0);
  CHECK(r.pubs == NULL);
  push_result_free(&r);

  /* From 0 while the whole stream is still kept: all of it. */
  since.offset = 0;
  CHECK_EQ(sub_since(hub, &c[2], "s", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 1, 6));
  push_result_free(&r);

  /* Offset in the future. */
  since.offset = 7;
  CHECK_EQ(sub_since(hub, &c[3], "s", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 6);
  push_result_free(&r);

  /* Wrong epoch (same offsets). */
  push_pos wrong = pos_make("zzzzzzzzzzzzzzzz", 2);
  CHECK_EQ(sub_since(hub, &c[4], "s", &wrong, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  CHECK(strcmp(r.pos.epoch, cur.epoch) == 0);
  push_result_free(&r);

  /* Gap by size: chat keeps 3, so after 1 of 5 two are missing; after 2
   * of 5 nothing is. */
  push_pos head;
  for (int i = 0; i < 5; i++) {
    CHECK_EQ(publish(hub, "chat:g", "{}", 0, &head), 0);
  }
  since = pos_make(head.epoch, 1);
  CHECK_EQ(sub_since(hub, &c[5], "chat:g", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 5);
  push_result_free(&r);
  since.offset = 2;
  CHECK_EQ(sub_since(hub, &c[6], "chat:g", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 3, 3));
  push_result_free(&r);

  /* Gap by TTL: the entries are within size but older than 10 s. */
  CHECK_EQ(publish(hub, "chat:h", "{}", 0, &head), 0);
  CHECK_EQ(publish(hub, "chat:h", "{}", 8000, &head), 0);
  since = pos_make(head.epoch, 0);
  CHECK_EQ(sub_since(hub, &c[7], "chat:h", &since, 12000, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);
  since.offset = 1;
  push_hub_unsubscribe(hub, "chat:h", &c[7]);
  CHECK_EQ(sub_since(hub, &c[7], "chat:h", &since, 12000, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 2, 1));
  push_result_free(&r);

  /* No history: any gap is unrecoverable, the head still is. */
  CHECK_EQ(publish(hub, "live:n", "{}", 0, &head), 0);
  since = pos_make(head.epoch, 0);
  CHECK_EQ(sub_since(hub, &c[8], "live:n", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);
  push_hub_unsubscribe(hub, "live:n", &c[8]);
  since.offset = 1;
  CHECK_EQ(sub_since(hub, &c[8], "live:n", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);

  /* No since (NULL or unset): not asked, the current position. */
  fake_client d;
  CHECK_EQ(sub_since(hub, &d, "chat:g", NULL, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 5);
  push_result_free(&r);
  push_hub_unsubscribe(hub, "chat:g", &d);
  push_pos unset;
  memset(&unset, 0, sizeof unset);
  CHECK_EQ(sub_since(hub, &d, "chat:g", &unset, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);

  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    fake_release(&c[i]);
  }
  fake_release(&d);
  push_hub_del(hub);
}

static void test_subscribe_unsubscribe(void) {
  push_hub *hub = hub_make();
  fake_client a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  push_sub sa = sub_of(&a), sb = sub_of(&b);
  push_result r;
  CHECK_EQ(push_hub_subscribe(hub, "u", &sa, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_subscribe(hub, "u", &sb, NULL, 0, &r), 0);
  push_result_free(&r);
  /* Already subscribed: nothing changes, even with since. */
  push_pos since = pos_make(r.pos.epoch, 0);
  CHECK_EQ(publish(hub, "u", "{}", 0, NULL), 0);
  CHECK_EQ(push_hub_subscribe(hub, "u", &sa, &since, 0, &r), 1);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_nsubscriptions(hub), 2);
  CHECK_EQ(publish(hub, "u", "{}", 0, NULL), 0);
  CHECK_EQ(a.ngot, 2);
  CHECK_EQ(b.ngot, 2);

  CHECK_EQ(push_hub_unsubscribe(hub, "u", &a), 0);
  CHECK_EQ(push_hub_unsubscribe(hub, "u", &a), 1);
  CHECK_EQ(push_hub_unsubscribe(hub, "nowhere", &a), 1);
  CHECK_EQ(push_hub_nsubscriptions(hub), 1);
  CHECK_EQ(publish(hub, "u", "{}", 0, NULL), 0);
  CHECK_EQ(a.ngot, 2);
  CHECK_EQ(b.ngot, 3);
  /* The same client on two channels is two subscriptions. */
  CHECK_EQ(push_hub_subscribe(hub, "v", &sb, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_nsubscriptions(hub), 2);
  CHECK_EQ(push_hub_unsubscribe(hub, "u", &b), 0);
  CHECK_EQ(push_hub_unsubscribe(hub, "v", &b), 0);
  CHECK_EQ(push_hub_nsubscriptions(hub), 0);
  fake_release(&a);
  fake_release(&b);
  push_hub_del(hub);
}

static void test_presence(void) {
  push_hub *hub = hub_make();
  push_buf b = {0};
  fake_client w;
  memset(&w, 0, sizeof w);
  push_sub sw = sub_of(&w);
  push_result r;

  /* chat has join/leave; the default namespace does not. */
  CHECK_EQ(push_hub_subscribe(hub, "chat:p", &sw, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_subscribe(hub, "p", &sw, NULL, 0, &r), 0);
  push_result_free(&r);

  CHECK_EQ(push_hub_presence_json(hub, "chat:p", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{}}"));
  b.len = 0;

  CHECK_EQ(push_hub_presence_add(hub, "chat:p", "c1", "ann", "{\"x\":1}"), 0);
  CHECK_EQ(w.nevents, 1);
  CHECK(strstr(w.last_event, "\"join\"") != NULL);
  CHECK(strstr(w.last_event, "\"c1\"") != NULL);
  CHECK(strstr(w.last_event, "\"ann\"") != NULL);
  CHECK(strstr(w.last_event, "\"chat:p\"") != NULL);
  CHECK(strstr(w.last_event, "{\"x\":1}") != NULL);
  CHECK_EQ(push_hub_presence_add(hub, "chat:p", "c2", "bob", NULL), 0);
  CHECK_EQ(w.nevents, 2);
  CHECK_EQ(push_hub_presence_json(hub, "chat:p", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{\"c1\":{\"user\":\"ann\",\"info\":{\"x\":1}},"
                   "\"c2\":{\"user\":\"bob\"}}}"));
  b.len = 0;

  /* Replace: new info, no second join. */
  CHECK_EQ(push_hub_presence_add(hub, "chat:p", "c1", "ann", "[2]"), 0);
  CHECK_EQ(w.nevents, 2);
  CHECK_EQ(push_hub_presence_json(hub, "chat:p", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{\"c1\":{\"user\":\"ann\",\"info\":[2]},"
                   "\"c2\":{\"user\":\"bob\"}}}"));
  b.len = 0;

  /* Remove: a leave push; removing an absent client does nothing. */
  push_hub_presence_remove(hub, "chat:p", "c1");
  CHECK_EQ(w.nevents, 3);
  CHECK(strstr(w.last_event, "\"leave\"") != NULL);
  CHECK(strstr(w.last_event, "\"c1\"") != NULL);
  push_hub_presence_remove(hub, "chat:p", "c1");
  push_hub_presence_remove(hub, "nowhere", "c1");
  CHECK_EQ(w.nevents, 3);
  CHECK_EQ(push_hub_presence_json(hub, "chat:p", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{\"c2\":{\"user\":\"bob\"}}}"));
  b.len = 0;

  /* Without join_leave: presence kept, no pushes. */
  CHECK_EQ(push_hub_presence_add(hub, "p", "c3", "cy", NULL), 0);
  push_hub_presence_remove(hub, "p", "c3");
  CHECK_EQ(push_hub_presence_add(hub, "p", "c4", "dee", NULL), 0);
  CHECK_EQ(w.nevents, 3);
  CHECK_EQ(push_hub_presence_json(hub, "p", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{\"c4\":{\"user\":\"dee\"}}}"));
  b.len = 0;

  /* Presence of a channel nobody uses: empty, and not created. */
  size_t n = push_hub_nchannels(hub);
  CHECK_EQ(push_hub_presence_json(hub, "chat:none", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{}}"));
  CHECK_EQ(push_hub_nchannels(hub), n);
  b.len = 0;

  /* Presence keeps a channel alive through tick; removing it lets go. */
  CHECK_EQ(push_hub_presence_add(hub, "q", "c5", "eve", NULL), 0);
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_presence_json(hub, "q", &b), 0);
  CHECK(buf_is(&b, "{\"clients\":{\"c5\":{\"user\":\"eve\"}}}"));
  b.len = 0;
  n = push_hub_nchannels(hub);
  push_hub_presence_remove(hub, "q", "c5");
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_nchannels(hub), n - 1);

  push_buf_free(&b);
  fake_release(&w);
  push_hub_del(hub);
}

/* Many presence entries in one channel, removed in a scattered order: the
 * index must find every survivor after the backward shifts. */
static void test_presence_many(void) {
  push_hub *hub = hub_make();
  char id[32];
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "c%d", i);
    CHECK_EQ(push_hub_presence_add(hub, "crowd", id, "u", NULL), 0);
  }
  for (int i = 0; i < 3000; i += 3) {
    snprintf(id, sizeof id, "c%d", (i * 7) % 3000);
    push_hub_presence_remove(hub, "crowd", id);
  }
  push_buf b = {0};
  CHECK_EQ(push_hub_presence_json(hub, "crowd", &b), 0);
  CHECK_EQ(push_buf_raw(&b, "", 1), 0); /* NUL for strstr */
  int present = 0;
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "\"c%d\"", i);
    present += strstr(b.p, id) != NULL;
  }
  CHECK_EQ(present, 2000);
  push_buf_free(&b);
  push_hub_del(hub);
}

static void test_namespaces(void) {
  push_hub *hub = hub_make();
  const push_ns *ns = push_hub_ns(hub, "chat:lobby");
  CHECK(ns != NULL && strcmp(ns->name, "chat") == 0);
  ns = push_hub_ns(hub, "lobby");
  CHECK(ns != NULL && strcmp(ns->name, "") == 0);
  ns = push_hub_ns(hub, "chat:a:b"); /* only the first ':' counts */
  CHECK(ns != NULL && strcmp(ns->name, "chat") == 0);
  CHECK(push_hub_ns(hub, "nope:x") == NULL);
  CHECK(push_hub_ns(hub, "cha:x") == NULL);
  CHECK(push_hub_ns(hub, "chats:x") == NULL);
  ns = push_hub_ns(hub, ":x"); /* empty prefix: the default namespace */
  CHECK(ns != NULL && strcmp(ns->name, "") == 0);

  /* The hub refuses channels of unconfigured namespaces. */
  fake_client c;
  memset(&c, 0, sizeof c);
  push_sub s = sub_of(&c);
  push_result r;
  push_pos p;
  CHECK_EQ(publish(hub, "nope:x", "{}", 0, &p), -1);
  CHECK_EQ(push_hub_subscribe(hub, "nope:x", &s, NULL, 0, &r), -1);
  CHECK_EQ(push_hub_nchannels(hub), 0);
  CHECK_EQ(push_hub_nsubscriptions(hub), 0);
  push_hub_del(hub);

  /* Without a default namespace, plain names are unknown. */
  push_ns only = ns_make("chat", 1, 0, 0);
  hub = push_hub_new(&only, 1);
  CHECK(hub != NULL);
  CHECK(push_hub_ns(hub, "lobby") == NULL);
  CHECK(push_hub_ns(hub, "chat:lobby") != NULL);
  push_hub_del(hub);
  hub = push_hub_new(NULL, 0);
  CHECK(hub != NULL);
  CHECK(push_hub_ns(hub, "lobby") == NULL);
  push_hub_del(hub);
}

static void test_channels_json(void) {
  push_hub *hub = hub_make();
  push_buf b = {0};
  CHECK_EQ(push_hub_channels_json(hub, &b), 0);
  CHECK(buf_is(&b, "{\"channels\":{}}"));
  b.len = 0;
  fake_client c[3];
  memset(c, 0, sizeof c);
  push_result r;
  for (int i = 0; i < 3; i++) {
    push_sub s = sub_of(&c[i]);
    CHECK_EQ(push_hub_subscribe(hub, "chat:a", &s, NULL, 0, &r), 0);
    push_result_free(&r);
  }
  push_sub s = sub_of(&c[0]);
  CHECK_EQ(push_hub_subscribe(hub, "b", &s, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(publish(hub, "history-only", "{}", 0, NULL), 0);
  CHECK_EQ(push_hub_nchannels(hub), 3);
  CHECK_EQ(push_hub_channels_json(hub, &b), 0);
  CHECK(buf_is(&b, "{\"channels\":{\"chat:a\":{\"subscribers\":3},"
                   "\"b\":{\"subscribers\":1}}}"));
  push_buf_free(&b);
  push_hub_del(hub);
}

static void test_tick_forgets(void) {
  push_hub *hub = hub_make();
  fake_client c;
  memset(&c, 0, sizeof c);
  push_sub s = sub_of(&c);
  push_result r;
  push_pos first, again;

  /* A subscriber keeps a channel without history. */
  CHECK_EQ(push_hub_subscribe(hub, "live:k", &s, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(publish(hub, "live:k", "{}", 0, &first), 0);
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_nchannels(hub), 1);
  CHECK_EQ(push_hub_unsubscribe(hub, "live:k", &c), 0);
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_nchannels(hub), 0);

  /* It comes back as a new stream: new epoch, offsets from 1. */
  CHECK_EQ(publish(hub, "live:k", "{}", 0, &again), 0);
  CHECK_EQ(again.offset, 1);
  CHECK(epoch_ok(again.epoch));
  CHECK(strcmp(again.epoch, first.epoch) != 0);

  /* History without TTL keeps a channel for good. */
  CHECK_EQ(publish(hub, "kept", "{}", 0, NULL), 0);
  push_hub_tick(hub, INT64_MAX / 2);
  CHECK_EQ(push_hub_nchannels(hub), 1);

  /* Many channels, half forgotten: the rest are still found. */
  char name[32];
  for (int i = 0; i < 2000; i++) {
    snprintf(name, sizeof name, "n%d", i);
    if (i % 2 == 0) {
      CHECK_EQ(publish(hub, name, "{}", 0, NULL), 0);
    } else {
      CHECK_EQ(push_hub_history(hub, name, 0, NULL, 0, &r), 0);
      push_result_free(&r);
    }
  }
  CHECK_EQ(push_hub_nchannels(hub), 2001);
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_nchannels(hub), 1001);
  for (int i = 0; i < 2000; i += 2) {
    snprintf(name, sizeof name, "n%d", i);
    CHECK_EQ(push_hub_history(hub, name, 0, NULL, 0, &r), 0);
    CHECK_EQ(r.pos.offset, 1);
    CHECK_EQ(r.npubs, 1);
    push_result_free(&r);
  }
  CHECK_EQ(push_hub_nchannels(hub), 1001);
  fake_release(&c);
  push_hub_del(hub);
}

/* ---- Callbacks that call back into the hub, as a server dropping a slow
 * client from inside deliver does. ------------------------------------ */

typedef struct rude_client {
  fake_client fc; /* first: the fake callbacks take it as their client */
  push_hub *hub;
  const char *channel;
  void *victim;   /* unsubscribed (and its presence removed) on delivery */
  void *newcomer; /* subscribed on delivery */
} rude_client;

static void rude_deliver(void *client, push_pub *pub) {
  rude_client *c = client;
  fake_deliver(&c->fc, pub);
  if (c->victim != NULL) {
    CHECK_EQ(push_hub_unsubscribe(c->hub, c->channel, c->victim), 0);
    push_hub_presence_remove(c->hub, c->channel, "victim");
    c->victim = NULL;
  }
  if (c->newcomer != NULL) {
    fake_client *n = c->newcomer;
    push_sub s = sub_of(n);
    push_result r;
    CHECK_EQ(push_hub_subscribe(c->hub, c->channel, &s, NULL, 0, &r), 0);
    push_result_free(&r);
    c->newcomer = NULL;
  }
  /* Publishing to the channel being delivered would reorder it. */
  CHECK_EQ(publish(c->hub, c->channel, "{}", 0, NULL), -1);
  push_hub_tick(c->hub, 0); /* no-op from here */
}

static void test_reentrant_callbacks(void) {
  enum { N = 40 };
  push_hub *hub = hub_make();
  static fake_client plain[N];
  fake_client newcomer;
  memset(plain, 0, sizeof plain);
  memset(&newcomer, 0, sizeof newcomer);
  rude_client rude[3];
  memset(rude, 0, sizeof rude);
  push_result r;
  g_delivered = g_released = 0;
  /* Order in the array: rude[0], plain..., rude[1], plain..., rude[2]. Each
   * rude client drops itself, someone before it, or someone after it. */
  for (int i = 0; i < 3; i++) {
    rude[i].hub = hub;
    rude[i].channel = "chat:rude";
  }
  rude[0].victim = &plain[N - 1]; /* not reached yet */
  rude[1].victim = &rude[1];      /* itself */
  rude[2].victim = &plain[0];     /* already served */
  rude[0].newcomer = &newcomer;
  push_sub s0 = {&rude[0], rude_deliver, fake_presence};
  CHECK_EQ(push_hub_subscribe(hub, "chat:rude", &s0, NULL, 0, &r), 0);
  for (int i = 0; i < N; i++) {
    push_sub s = sub_of(&plain[i]);
    CHECK_EQ(push_hub_subscribe(hub, "chat:rude", &s, NULL, 0, &r), 0);
    if (i == N / 2) {
      push_sub s1 = {&rude[1], rude_deliver, fake_presence};
      CHECK_EQ(push_hub_subscribe(hub, "chat:rude", &s1, NULL, 0, &r), 0);
    }
  }
  push_sub s2 = {&rude[2], rude_deliver, fake_presence};
  CHECK_EQ(push_hub_subscribe(hub, "chat:rude", &s2, NULL, 0, &r), 0);
  CHECK_EQ(push_hub_presence_add(hub, "chat:rude", "victim", "v", NULL), 0);
  CHECK_EQ(push_hub_nsubscriptions(hub), N + 3);

  CHECK_EQ(publish(hub, "chat:rude", "{}", 0, NULL), 0);
  /* Everyone but the one dropped before its turn got it once; the newcomer
   * subscribed after the publication and did not. */
  for (int i = 0; i < N - 1; i++) {
    CHECK_EQ(plain[i].ngot, 1);
  }
  CHECK_EQ(plain[N - 1].ngot, 0);
  CHECK_EQ(newcomer.ngot, 0);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(rude[i].fc.ngot, 1);
  }
  CHECK_EQ(g_delivered, N + 2);
  /* Three left, one came. The leave push went out once. */
  CHECK_EQ(push_hub_nsubscriptions(hub), N + 3 - 3 + 1);
  CHECK_EQ(plain[1].nevents, 2); /* the join earlier, then the leave */
  CHECK(strstr(plain[1].last_event, "\"leave\"") != NULL);

  /* The next publication reaches exactly the subscribers left. */
  CHECK_EQ(publish(hub, "chat:rude", "{}", 0, NULL), 0);
  CHECK_EQ(plain[0].ngot, 1);
  CHECK_EQ(plain[1].ngot, 2);
  CHECK_EQ(plain[N - 1].ngot, 0);
  CHECK_EQ(newcomer.ngot, 1);
  CHECK_EQ(rude[0].fc.ngot, 2);
  CHECK_EQ(rude[1].fc.ngot, 1);
  CHECK_EQ(rude[2].fc.ngot, 2);
  push_buf b = {0};
  CHECK_EQ(push_hub_channels_json(hub, &b), 0);
  char want[64];
  snprintf(want, sizeof want,
           "{\"channels\":{\"chat:rude\":{\"subscribers\":%d}}}", N + 1);
  CHECK(buf_is(&b, want));
  push_buf_free(&b);
  /* Everyone can still leave: the index survived the compaction. */
  for (int i = 1; i < N - 1; i++) {
    CHECK_EQ(push_hub_unsubscribe(hub, "chat:rude", &plain[i]), 0);
  }
  CHECK_EQ(push_hub_unsubscribe(hub, "chat:rude", &newcomer), 0);
  CHECK_EQ(push_hub_unsubscribe(hub, "chat:rude", &rude[0]), 0);
  CHECK_EQ(push_hub_unsubscribe(hub, "chat:rude", &rude[2]), 0);
  CHECK_EQ(push_hub_nsubscriptions(hub), 0);

  for (int i = 0; i < N; i++) {
    fake_release(&plain[i]);
  }
  fake_release(&newcomer);
  for (int i = 0; i < 3; i++) {
    fake_release(&rude[i].fc);
  }
  CHECK_EQ(g_released, g_delivered);
  push_hub_del(hub);
}

/* A client that releases at once (as the SSE path does) and reads history
 * far in the future from inside deliver: the TTL prune drops the history's
 * reference mid-delivery, and the next subscriber must still get a live
 * publication (ASan would catch a use after free). */
static push_hub *g_prune_hub;

static void eager_deliver(void *client, push_pub *pub) {
  fake_client *c = client;
  c->ngot++;
  push_pub_unref(pub);
  push_result r;
  CHECK_EQ(push_hub_history(g_prune_hub, "chat:eager", 0, NULL, 1000000, &r),
           0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);
}

static void test_prune_during_delivery(void) {
  push_hub *hub = hub_make();
  g_prune_hub = hub;
  fake_client a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  push_sub sa = {&a, eager_deliver, NULL}, sb = {&b, eager_deliver, NULL};
  push_result r;
  CHECK_EQ(push_hub_subscribe(hub, "chat:eager", &sa, NULL, 0, &r), 0);
  CHECK_EQ(push_hub_subscribe(hub, "chat:eager", &sb, NULL, 0, &r), 0);
  CHECK_EQ(publish(hub, "chat:eager", "{}", 0, NULL), 0);
  CHECK_EQ(a.ngot, 1);
  CHECK_EQ(b.ngot, 1);
  push_hub_del(hub);
}

/* ---- Batched hand-out: publish queues, push_hub_flush delivers. ------ */

static uint64_t frame_bytes(const push_pub *p) {
  return p->wshdr_len + p->frame_len;
}

static void test_flush_batches(void) {
  push_hub *hub = hub_make();
  fake_client a, b, c;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  push_result r;
  g_delivered = g_released = 0;
  push_sub sa = sub_of(&a), sb = sub_of(&b), sc = sub_of(&c);
  CHECK_EQ(push_hub_subscribe(hub, "news", &sa, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(push_hub_subscribe(hub, "news", &sb, NULL, 0, &r), 0);
  push_result_free(&r);

  /* Nothing is delivered before the flush; what is pending is counted for
   * the live subscribers of the moment. */
  push_pos pos;
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(
        push_hub_publish(hub, "news", js("{}"), no_json, NULL, NULL, 0, &pos),
        0);
  }
  CHECK_EQ(a.ngot, 0);
  CHECK_EQ(b.ngot, 0);
  push_result h;
  CHECK_EQ(push_hub_history(hub, "news", 0, NULL, 0, &h), 0);
  CHECK_EQ(h.npubs, 2); /* history has them at once */
  CHECK_EQ(push_hub_pending_bytes(hub),
           2 * (frame_bytes(h.pubs[0]) + frame_bytes(h.pubs[1])));
  push_result_free(&h);

  /* c subscribes between the publications and the flush: its result's
   * position covers offsets 1 and 2, so it gets only what follows. b
   * leaves before the flush and gets nothing. */
  CHECK_EQ(push_hub_subscribe(hub, "news", &sc, NULL, 0, &r), 0);
  CHECK_EQ(r.pos.offset, 2);
  push_result_free(&r);
  CHECK_EQ(push_hub_unsubscribe(hub, "news", &b), 0);
  CHECK_EQ(
      push_hub_publish(hub, "news", js("{}"), no_json, NULL, NULL, 0, &pos), 0);
  CHECK_EQ(pos.offset, 3);
  push_hub_flush(hub);
  CHECK_EQ(push_hub_pending_bytes(hub), 0);
  CHECK_EQ(a.ngot, 3);
  for (size_t i = 0; i < a.ngot; i++) {
    CHECK_EQ(a.got[i]->offset, i + 1);
  }
  CHECK_EQ(b.ngot, 0);
  CHECK_EQ(c.ngot, 1);
  CHECK_EQ(c.got[0]->offset, 3);
  push_hub_flush(hub); /* nothing left: nothing twice */
  CHECK_EQ(a.ngot, 3);

  /* A burst past the kept pending capacity, delivered in order. */
  for (int i = 0; i < 100; i++) {
    CHECK_EQ(
        push_hub_publish(hub, "news", js("{}"), no_json, NULL, NULL, 0, &pos),
        0);
  }
  push_hub_flush(hub);
  CHECK_EQ(a.ngot, 103);
  CHECK_EQ(c.ngot, 101);
  for (size_t i = 0; i < a.ngot; i++) {
    CHECK_EQ(a.got[i]->offset, i + 1);
  }

  /* A channel nobody is subscribed to queues nothing. */
  CHECK_EQ(
      push_hub_publish(hub, "empty", js("{}"), no_json, NULL, NULL, 0, &pos),
      0);
  CHECK_EQ(push_hub_pending_bytes(hub), 0);

  /* Pending publications of a channel everyone left are released at tick,
   * which then forgets the channel (no history in "live"). */
  push_sub sa2 = sub_of(&a);
  CHECK_EQ(push_hub_subscribe(hub, "live:x", &sa2, NULL, 0, &r), 0);
  push_result_free(&r);
  CHECK_EQ(
      push_hub_publish(hub, "live:x", js("{}"), no_json, NULL, NULL, 0, &pos),
      0);
  CHECK(push_hub_pending_bytes(hub) > 0);
  size_t before = push_hub_nchannels(hub);
  CHECK_EQ(push_hub_unsubscribe(hub, "live:x", &a), 0);
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_pending_bytes(hub), 0);
  CHECK_EQ(push_hub_nchannels(hub), before - 1);
  CHECK_EQ(a.ngot, 103);

  /* Deleting a hub with publications pending releases them (ASan). */
  CHECK_EQ(
      push_hub_publish(hub, "news", js("{}"), no_json, NULL, NULL, 0, &pos), 0);
  fake_release(&a);
  fake_release(&b);
  fake_release(&c);
  CHECK_EQ(g_released, g_delivered);
  push_hub_del(hub);
}

/* A join or leave push comes after the publications made before it, and
 * a load (the engine moving the position) delivers what was pending at the
 * old one first. */
static void test_flush_order(void) {
  push_hub *hub = hub_make();
  fake_client a;
  memset(&a, 0, sizeof a);
  push_result r;
  g_delivered = g_released = 0;
  push_sub sa = sub_of(&a);
  CHECK_EQ(push_hub_subscribe(hub, "chat:room", &sa, NULL, 0, &r), 0);
  push_result_free(&r);
  push_pos pos;
  CHECK_EQ(push_hub_publish(hub, "chat:room", js("{}"), no_json, NULL, NULL, 0,
                            &pos),
           0);
  CHECK_EQ(push_hub_presence_add(hub, "chat:room", "c9", "bo", NULL), 0);
  CHECK_EQ(a.nevents, 1);
  CHECK_EQ(a.ngot_at_event, 1);
  CHECK(strstr(a.last_event, "\"join\"") != NULL);
  push_hub_flush(hub);
  CHECK_EQ(a.ngot, 1);

  /* Engine-fed: load a position, append one (pending), load another. */
  push_buf tail = {0};
  CHECK_EQ(push_pub_tail(&tail, js("{\"n\":1}"), no_json, NULL, NULL), 0);
  CHECK_EQ(push_hub_load(hub, "news", "ep1", 10, NULL, 0, 0), 0);
  push_sub sa2 = sub_of(&a);
  CHECK_EQ(push_hub_subscribe(hub, "news", &sa2, NULL, 0, &r), 0);
  CHECK_EQ(r.pos.offset, 10);
  push_result_free(&r);
  push_ext_pub e = {11, 0, tail.p, tail.len};
  CHECK_EQ(push_hub_append(hub, "news", "ep1", &e), 0);
  CHECK_EQ(a.ngot, 1);
  CHECK_EQ(push_hub_load(hub, "news", "ep2", 20, NULL, 0, 0), 0);
  CHECK_EQ(a.ngot, 2);
  CHECK_EQ(a.got[1]->offset, 11);
  e.offset = 21;
  CHECK_EQ(push_hub_append(hub, "news", "ep2", &e), 0);
  push_hub_flush(hub);
  CHECK_EQ(a.ngot, 3);
  CHECK_EQ(a.got[2]->offset, 21);
  push_buf_free(&tail);
  fake_release(&a);
  CHECK_EQ(g_released, g_delivered);
  push_hub_del(hub);
}

/* A publication copied from another hub's frame (the threads engine's
 * followers): the same bytes, offsets and WebSocket frame as the source's,
 * kept in history like any other; one that does not follow is refused
 * with 1, a pub object outside the frame with -1. */
static void test_append_frame(void) {
  push_hub *src = hub_make(), *dst = hub_make();
  fake_client a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  push_result r;
  g_delivered = g_released = 0;
  push_sub sa = sub_of(&a), sb = sub_of(&b);
  CHECK_EQ(push_hub_subscribe(src, "news", &sa, NULL, 0, &r), 0);
  push_result_free(&r);
  push_pos pos;
  CHECK_EQ(publish(src, "news", "{\"x\":\"\\u00e9\"}", 5, &pos), 0);
  CHECK_EQ(publish(src, "news", "[1,2]", 6, &pos), 0);
  CHECK_EQ(a.ngot, 2);
  CHECK_EQ(push_hub_load(dst, "news", pos.epoch, 0, NULL, 0, 0), 0);
  CHECK_EQ(push_hub_subscribe(dst, "news", &sb, NULL, 0, &r), 0);
  push_result_free(&r);
  for (size_t i = 0; i < a.ngot; i++) {
    const push_pub *p = a.got[i];
    push_ext_frame f = {p->offset,    p->time_ms,  p->frame,
                        p->frame_len, p->json_off, p->json_len};
    CHECK_EQ(push_hub_append_frame(dst, "news", pos.epoch, &f), 0);
    /* Again: it no longer follows. */
    CHECK_EQ(push_hub_append_frame(dst, "news", pos.epoch, &f), 1);
  }
  push_hub_flush(dst);
  CHECK_EQ(b.ngot, 2);
  for (size_t i = 0; i < 2; i++) {
    size_t la, lb;
    const uint8_t *fa = push_pub_ws_frame(a.got[i], &la);
    const uint8_t *fb = push_pub_ws_frame(b.got[i], &lb);
    CHECK(la == lb && memcmp(fa, fb, la) == 0);
    CHECK_EQ(b.got[i]->offset, a.got[i]->offset);
    CHECK_EQ(b.got[i]->json_len, a.got[i]->json_len);
    CHECK(memcmp(b.got[i]->frame + b.got[i]->json_off,
                 a.got[i]->frame + a.got[i]->json_off,
                 a.got[i]->json_len) == 0);
  }
  CHECK_EQ(push_hub_history(dst, "news", 0, NULL, 10, &r), 0);
  CHECK(pubs_are(&r, 1, 2));
  push_result_free(&r);
  /* Another epoch, and a pub object that does not lie in the frame. */
  const push_pub *p = a.got[1];
  push_ext_frame f = {3, 0, p->frame, p->frame_len, p->json_off, p->json_len};
  CHECK_EQ(push_hub_append_frame(dst, "news", "other", &f), 1);
  f.json_len = p->frame_len - p->json_off + 1;
  CHECK_EQ(push_hub_append_frame(dst, "news", pos.epoch, &f), -1);
  f.json_len = p->json_len;
  f.json_off = p->frame_len + 1;
  CHECK_EQ(push_hub_append_frame(dst, "news", pos.epoch, &f), -1);
  CHECK_EQ(push_hub_append_frame(dst, "nowhere", pos.epoch, &f), -1);
  fake_release(&a);
  fake_release(&b);
  CHECK_EQ(g_released, g_delivered);
  push_hub_del(src);
  push_hub_del(dst);
}

/* ---- The byte cap on history across channels ------------------------- */

/* Entries kept in channel's history now. */
static size_t hist_len(push_hub *hub, const char *channel, int64_t now_ms) {
  push_result r;
  CHECK_EQ(push_hub_history(hub, channel, 0, NULL, now_ms, &r), 0);
  size_t n = r.npubs;
  push_result_free(&r);
  return n;
}

/* A flood of new channels evicts the oldest history, never more than the
 * cap, oldest first, each eviction counted. Every publication here has the
 * same size: same channel name length, offset 1, same data. */
static void test_history_cap_many_channels(void) {
  enum { N = 1000, KEEP = 50 };
  push_hub *hub = hub_make();
  char name[32];
  CHECK_EQ(push_hub_history_bytes(hub), 0);
  CHECK_EQ(publish(hub, "f00000", "1", 0, NULL), 0);
  uint64_t one = push_hub_history_bytes(hub);
  /* What a publication costs: its whole allocation, struct and frame. */
  push_result r;
  CHECK_EQ(push_hub_history(hub, "f00000", 0, NULL, 0, &r), 0);
  CHECK_EQ(r.npubs, 1);
  if (r.npubs == 1) {
    uint64_t least = sizeof(push_pub) + r.pubs[0]->frame_len;
    CHECK(one >= least);
    CHECK(one <= least + 64);
  }
  push_result_free(&r);

  uint64_t cap = KEEP * one + one / 2;
  push_hub_set_history_limit(hub, cap);
  CHECK_EQ(push_hub_history_bytes(hub), one);
  size_t over = 0;
  for (int i = 1; i < N; i++) {
    snprintf(name, sizeof name, "f%05d", i);
    CHECK_EQ(publish(hub, name, "1", 0, NULL), 0);
    over += push_hub_history_bytes(hub) > cap;
  }
  CHECK_EQ(over, 0);
  CHECK_EQ(push_hub_history_bytes(hub), KEEP * one);
  CHECK_EQ(push_hub_history_evictions(hub), N - KEEP);
  /* The oldest went: exactly the last KEEP channels have history. */
  size_t wrong = 0;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "f%05d", i);
    wrong += hist_len(hub, name, 0) != (i >= N - KEEP ? 1u : 0u);
  }
  CHECK_EQ(wrong, 0);

  /* Exactly at the cap is within it. */
  push_hub_set_history_limit(hub, KEEP * one);
  CHECK_EQ(push_hub_history_evictions(hub), N - KEEP);
  /* A lower cap evicts at once, oldest first. */
  push_hub_set_history_limit(hub, 10 * one);
  CHECK_EQ(push_hub_history_bytes(hub), 10 * one);
  CHECK_EQ(push_hub_history_evictions(hub), N - 10);
  CHECK_EQ(hist_len(hub, "f00989", 0), 0);
  CHECK_EQ(hist_len(hub, "f00990", 0), 1);
  /* Channels left with nothing are forgotten at tick. */
  push_hub_tick(hub, 0);
  CHECK_EQ(push_hub_nchannels(hub), 10);
  /* No cap: history grows again, and nothing more is evicted. */
  push_hub_set_history_limit(hub, 0);
  for (int i = 0; i < 100; i++) {
    snprintf(name, sizeof name, "g%05d", i);
    CHECK_EQ(publish(hub, name, "1", 0, NULL), 0);
  }
  CHECK_EQ(push_hub_history_bytes(hub), 110 * one);
  CHECK_EQ(push_hub_history_evictions(hub), N - 10);
  push_hub_del(hub);
}

/* A channel whose oldest entries were evicted cannot claim recovery across
 * them; what is left still serves recovery; live delivery is untouched. */
static void test_history_cap_recovery(void) {
  push_hub *hub = hub_make();
  fake_client c, d;
  push_result r;
  push_pos p1;
  g_delivered = g_released = 0;
  CHECK_EQ(publish(hub, "a", "1", 0, &p1), 0);
  CHECK_EQ(publish(hub, "a", "1", 0, NULL), 0);
  CHECK_EQ(publish(hub, "a", "1", 0, NULL), 0);
  uint64_t one = push_hub_history_bytes(hub) / 3;
  push_hub_set_history_limit(hub, 5 * one);
  memset(&c, 0, sizeof c);
  push_sub sc = sub_of(&c);
  CHECK_EQ(push_hub_subscribe(hub, "b", &sc, NULL, 0, &r), 0);
  push_result_free(&r);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(publish(hub, "b", "1", 0, NULL), 0);
  }
  CHECK_EQ(c.ngot, 3);
  CHECK_EQ(push_hub_history_evictions(hub), 1); /* a's offset 1 */
  CHECK_EQ(push_hub_history_bytes(hub), 5 * one);

  push_pos since = pos_make(p1.epoch, 0);
  CHECK_EQ(sub_since(hub, &d, "a", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  CHECK_EQ(r.pos.offset, 3);
  push_result_free(&r);
  CHECK_EQ(push_hub_unsubscribe(hub, "a", &d), 0);
  since.offset = 1;
  CHECK_EQ(sub_since(hub, &d, "a", &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 2, 2));
  push_result_free(&r);
  CHECK_EQ(push_hub_unsubscribe(hub, "a", &d), 0);

  /* One more on b evicts a's offset 2: recovery from 1 is gone now. */
  CHECK_EQ(publish(hub, "b", "1", 0, NULL), 0);
  CHECK_EQ(push_hub_history_evictions(hub), 2);
  CHECK_EQ(push_hub_history(hub, "a", 0, &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 0);
  CHECK_EQ(r.npubs, 0);
  push_result_free(&r);
  since.offset = 2;
  CHECK_EQ(push_hub_history(hub, "a", 0, &since, 0, &r), 0);
  CHECK_EQ(r.recovered, 1);
  CHECK(pubs_are(&r, 3, 1));
  push_result_free(&r);

  /* Evicted while still pending for a subscriber: delivered all the same. */
  CHECK_EQ(push_hub_publish(hub, "b", js("1"), no_json, NULL, NULL, 0, NULL),
           0);
  push_hub_set_history_limit(hub, one);
  CHECK_EQ(push_hub_history_bytes(hub), one);
  push_hub_flush(hub);
  CHECK_EQ(c.ngot, 5);
  CHECK_EQ(c.got[4]->offset, 5);

  /* A publication larger than the whole cap is delivered, not kept, and
   * takes only its own channel's older history with it. */
  push_hub_set_history_limit(hub, 5 * one);
  CHECK_EQ(publish(hub, "a", "1", 0, NULL), 0); /* a: offset 4 */
  CHECK_EQ(push_hub_history_bytes(hub), 2 * one);
  uint64_t ev = push_hub_history_evictions(hub);
  size_t big = (size_t)(6 * one);
  char *data = malloc(big + 3);
  data[0] = '"';
  memset(data + 1, 'x', big);
  data[big + 1] = '"';
  data[big + 2] = '\0';
  CHECK_EQ(publish(hub, "b", data, 0, NULL), 0);
  CHECK_EQ(c.ngot, 6);
  CHECK_EQ(c.got[5]->offset, 6);
  CHECK_EQ(hist_len(hub, "b", 0), 0);
  CHECK_EQ(hist_len(hub, "a", 0), 1);
  CHECK_EQ(push_hub_history_bytes(hub), one);
  CHECK_EQ(push_hub_history_evictions(hub), ev + 1); /* b's offset 5 */
  free(data);

  fake_release(&c);
  fake_release(&d);
  CHECK_EQ(g_released, g_delivered);
  push_hub_del(hub);
}

/* The count stays exact through history_size, TTL, load, append,
 * drop_history and tick, and returns to 0. */
static void test_history_cap_accounting(void) {
  push_hub *hub = hub_make();
  /* chat: history 3, TTL 10 s. */
  CHECK_EQ(publish(hub, "chat:x", "1", 0, NULL), 0);
  uint64_t one = push_hub_history_bytes(hub);
  CHECK(one > 0);
  for (int i = 0; i < 4; i++) {
    CHECK_EQ(publish(hub, "chat:x", "1", 0, NULL), 0);
  }
  CHECK_EQ(push_hub_history_bytes(hub), 3 * one);
  CHECK_EQ(publish(hub, "chat:y", "1", 5000, NULL), 0);
  CHECK_EQ(publish(hub, "chat:y", "1", 5000, NULL), 0);
  CHECK_EQ(push_hub_history_bytes(hub), 5 * one);
  push_hub_tick(hub, 10000);
  CHECK_EQ(push_hub_history_bytes(hub), 2 * one);
  push_hub_tick(hub, 15000);
  CHECK_EQ(push_hub_history_bytes(hub), 0);
  CHECK_EQ(push_hub_nchannels(hub), 0);

  /* Engine-fed histories count too. Offsets 10..13 and one tail: the same
   * size each. */
  push_buf tail = {0};
  CHECK_EQ(push_pub_tail(&tail, js("1"), no_json, NULL, NULL), 0);
  push_ext_pub e[3] = {{10, 0, tail.p, tail.len},
                       {11, 0, tail.p, tail.len},
                       {12, 0, tail.p, tail.len}};
  CHECK_EQ(push_hub_load(hub, "news", "ep", 12, e, 3, 0), 0);
  uint64_t three = push_hub_history_bytes(hub);
  CHECK_EQ(push_hub_load(hub, "news", "ep", 12, &e[2], 1, 0), 0);
  uint64_t eone = push_hub_history_bytes(hub);
  CHECK(eone > 0);
  CHECK_EQ(three, 3 * eone);
  push_ext_pub e13 = {13, 0, tail.p, tail.len};
  CHECK_EQ(push_hub_append(hub, "news", "ep", &e13), 0);
  CHECK_EQ(push_hub_history_bytes(hub), 2 * eone);
  push_hub_drop_history(hub, "news");
  CHECK_EQ(push_hub_history_bytes(hub), 0);
  /* A load under the cap keeps its newest entries. */
  push_hub_set_history_limit(hub, 2 * eone);
  CHECK_EQ(push_hub_load(hub, "news", "ep", 12, e, 3, 0), 0);
  CHECK_EQ(push_hub_history_bytes(hub), 2 * eone);
  CHECK_EQ(push_hub_history_evictions(hub), 1);
  push_result r;
  CHECK_EQ(push_hub_history(hub, "news", 0, NULL, 0, &r), 0);
  CHECK(pubs_are(&r, 11, 2));
  push_result_free(&r);
  /* and evicts others' older history in favour of its own. */
  push_hub_set_history_limit(hub, 3 * eone);
  CHECK_EQ(push_hub_load(hub, "wens", "ep", 12, &e[1], 2, 0), 0);
  CHECK_EQ(push_hub_history_bytes(hub), 3 * eone);
  CHECK_EQ(push_hub_history_evictions(hub), 2);
  CHECK_EQ(hist_len(hub, "news", 0), 1);
  CHECK_EQ(hist_len(hub, "wens", 0), 2);
  /* A load prunes by TTL as it goes. */
  push_hub_set_history_limit(hub, 0);
  CHECK_EQ(push_hub_load(hub, "chat:n", "ep", 12, e, 3, 10000), 0);
  CHECK_EQ(push_hub_history_bytes(hub), 3 * eone);
  CHECK_EQ(push_hub_load(hub, "chat:n", "ep", 12, e, 3, 9999), 0);
  CHECK(push_hub_history_bytes(hub) > 3 * eone);
  push_hub_tick(hub, 10000);
  CHECK_EQ(push_hub_history_bytes(hub), 3 * eone);
  push_hub_drop_history(hub, "news");
  push_hub_drop_history(hub, "wens");
  CHECK_EQ(push_hub_history_bytes(hub), 0);
  push_hub_tick(hub, 20000);
  CHECK_EQ(push_hub_nchannels(hub), 0);
  push_buf_free(&tail);
  push_hub_del(hub);
}

/* Random publishing, ticks, drops and caps over 40 channels in two
 * namespaces, against a recount of every history. Channel names have one
 * length and the data makes up for the offset's digits, so every
 * publication costs the same. */
static void test_history_cap_random(void) {
  enum { NCH = 40, STEPS = 4000 };
  push_hub *hub = hub_make();
  char name[32], data[16];
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  int64_t now = 0;
  uint64_t one = 0, cap = 0;
  size_t over = 0, off = 0;
  for (int step = 0; step < STEPS; step++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    int c = (int)(x % NCH);
    snprintf(name, sizeof name, c % 2 ? "chat:%02d" : "chat_%02d", c);
    unsigned op = (unsigned)(x >> 20) % 100;
    now += (int64_t)((x >> 40) % 400);
    if (op < 80) {
      push_pos pos;
      uint64_t next = push_hub_pos(hub, name, &pos) == 0 ? pos.offset + 1 : 1;
      int digits = next < 10 ? 1 : next < 100 ? 2 : next < 1000 ? 3 : 4;
      snprintf(data, sizeof data, "\"%.*s\"", 6 - digits, "xxxxxx");
      CHECK_EQ(publish(hub, name, data, now, NULL), 0);
      if (one == 0) {
        one = push_hub_history_bytes(hub);
      }
    } else if (op < 88) {
      push_hub_tick(hub, now);
    } else if (op < 94) {
      push_hub_drop_history(hub, name);
    } else if (op < 98) {
      (void)hist_len(hub, name, now);
    } else {
      cap = (x >> 32) % 4 == 0 ? 0 : one * ((x >> 34) % 60);
      push_hub_set_history_limit(hub, cap);
    }
    over += cap != 0 && push_hub_history_bytes(hub) > cap;
    if (step % 50 == 0) {
      size_t n = 0;
      for (int k = 0; k < NCH; k++) {
        snprintf(name, sizeof name, k % 2 ? "chat:%02d" : "chat_%02d", k);
        n += hist_len(hub, name, now);
      }
      off += push_hub_history_bytes(hub) != n * one;
    }
  }
  CHECK(one > 0);
  CHECK_EQ(over, 0);
  CHECK_EQ(off, 0);
  CHECK(push_hub_history_evictions(hub) > 0);
  for (int k = 0; k < NCH; k++) {
    snprintf(name, sizeof name, k % 2 ? "chat:%02d" : "chat_%02d", k);
    push_hub_drop_history(hub, name);
  }
  CHECK_EQ(push_hub_history_bytes(hub), 0);
  push_hub_tick(hub, now);
  CHECK_EQ(push_hub_nchannels(hub), 0);
  push_hub_del(hub);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_many_subscribers(void) {
  enum { N = 10000 };
  push_hub *hub = hub_make();
  fake_client *c = calloc(N, sizeof *c);
  size_t *order = malloc(N * sizeof *order);
  push_result r;
  g_delivered = g_released = 0;
  double t0 = now_s();
  for (size_t i = 0; i < N; i++) {
    push_sub s = sub_of(&c[i]);
    CHECK_EQ(push_hub_subscribe(hub, "room10k", &s, NULL, 0, &r), 0);
    push_result_free(&r);
    order[i] = i;
  }
  CHECK_EQ(push_hub_nsubscriptions(hub), N);
  CHECK_EQ(publish(hub, "room10k", "{}", 0, NULL), 0);
  CHECK_EQ(g_delivered, N);
  /* Leave in a shuffled order (fixed seed), half first. */
  uint64_t x = 88172645463325252ULL;
  for (size_t i = N - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t j = (size_t)(x % (i + 1));
    size_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  for (size_t i = 0; i < N / 2; i++) {
    CHECK_EQ(push_hub_unsubscribe(hub, "room10k", &c[order[i]]), 0);
  }
  CHECK_EQ(publish(hub, "room10k", "{}", 0, NULL), 0);
  size_t second = 0;
  for (size_t i = 0; i < N; i++) {
    second += c[i].ngot == 2;
  }
  CHECK_EQ(second, N / 2);
  for (size_t i = N / 2; i < N; i++) {
    CHECK_EQ(c[order[i]].ngot, 2);
    CHECK_EQ(push_hub_unsubscribe(hub, "room10k", &c[order[i]]), 0);
  }
  double dt = now_s() - t0;
  CHECK(dt < 2.0); /* linear: milliseconds even under sanitizers */
  CHECK_EQ(push_hub_nsubscriptions(hub), 0);
  for (size_t i = 0; i < N; i++) {
    fake_release(&c[i]);
  }
  CHECK_EQ(g_released, g_delivered);
  free(order);
  free(c);
  push_hub_del(hub);
}

int main(void) {
  RUN(test_offsets_and_epochs);
  RUN(test_fanout);
  RUN(test_history_size);
  RUN(test_history_ttl);
  RUN(test_recovery);
  RUN(test_subscribe_unsubscribe);
  RUN(test_presence);
  RUN(test_presence_many);
  RUN(test_namespaces);
  RUN(test_channels_json);
  RUN(test_tick_forgets);
  RUN(test_reentrant_callbacks);
  RUN(test_prune_during_delivery);
  RUN(test_many_subscribers);
  RUN(test_flush_batches);
  RUN(test_flush_order);
  RUN(test_append_frame);
  RUN(test_history_cap_many_channels);
  RUN(test_history_cap_recovery);
  RUN(test_history_cap_accounting);
  RUN(test_history_cap_random);
  return TEST_REPORT();
}
