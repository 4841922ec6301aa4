/* push_redis_test.c - the Redis engine's parts that need no Redis: Redis
 * Cluster's hash slots, the "redis" configuration keys (addresses,
 * sentinel, shards, cluster), and one connection (redis_conn) against a
 * scripted server on loopback: a keep connection hands each refused
 * command's exact bytes to its redirect hook and empties its buffer once
 * everything is answered; a subscriber connection tells unsubscribe
 * pushes apart from replies. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "push/config.h"
#include "push/redis_int.h"
#include "test.h"

/* ---- hash slots --------------------------------------------------------- */

static void test_slots(void) {
  /* CLUSTER KEYSLOT "herald.{chat:x}.s" is 13414; the CRC16 (XMODEM) of
   * "123456789" is 0x31c3. */
  CHECK_EQ(redis_cluster_slot("chat:x", 6), 13414);
  CHECK_EQ(redis_cluster_slot("123456789", 9), 0x31c3);
  CHECK_EQ(redis_cluster_slot("", 0), 0);
  /* Every slot is below 16384. */
  char name[16];
  for (int i = 0; i < 1000; i++) {
    int n = snprintf(name, sizeof name, "feed:%d", i);
    CHECK(redis_cluster_slot(name, (size_t)n) < REDIS_NSLOTS);
  }
}

/* ---- configuration ------------------------------------------------------ */

/* Loads text as a config file over the defaults. Returns 0 or -1. */
static int load(push_config *c, const char *text, char *err, size_t errlen) {
  char path[] = "/tmp/herald-redis-test-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
    return -1;
  }
  close(fd);
  push_config_defaults(c);
  int rv = push_config_load(c, path, err, errlen);
  unlink(path);
  return rv;
}

static void test_config_sentinel(void) {
  push_config c;
  char err[256];
  CHECK_EQ(load(&c,
                "{\"redis\":{\"sentinel\":{\"master_name\":\"m\","
                "\"addresses\":[\"10.0.0.1:26379\",\"10.0.0.2:26379\"],"
                "\"password\":\"pw\"}}}",
                err, sizeof err),
           0);
  CHECK_EQ(c.redis.naddrs, 1);
  CHECK(c.redis.addrs[0] == NULL);
  CHECK(c.redis.sentinel[0] != NULL);
  CHECK(strcmp(c.redis.sentinel[0]->master_name, "m") == 0);
  CHECK_EQ(c.redis.sentinel[0]->naddrs, 2);
  CHECK(strcmp(c.redis.sentinel[0]->addrs[1], "10.0.0.2:26379") == 0);
  CHECK(strcmp(c.redis.sentinel[0]->password, "pw") == 0);
  /* --redis replaces what the file gave. */
  push_config_clear_redis(&c);
  CHECK_EQ(push_config_add_redis(&c, "127.0.0.1:6379", err, sizeof err), 0);
  CHECK_EQ(c.redis.naddrs, 1);
  CHECK(c.redis.sentinel[0] == NULL);
  push_config_free(&c);
}

static void test_config_shards(void) {
  push_config c;
  char err[256];
  CHECK_EQ(load(&c,
                "{\"engine\":\"redis\",\"redis\":{\"shards\":["
                "{\"sentinel\":{\"master_name\":\"a\",\"addresses\":"
                "[\"s1:26379\"]}},{\"address\":\"r2:6379\"},"
                "{\"sentinel\":{\"master_name\":\"c\",\"addresses\":"
                "[\"s1:26379\",\"s2:26379\"]}}]}}",
                err, sizeof err),
           0);
  CHECK_EQ(c.redis.naddrs, 3);
  CHECK(c.redis.sentinel[0] &&
        strcmp(c.redis.sentinel[0]->master_name, "a") == 0);
  CHECK(c.redis.addrs[1] && strcmp(c.redis.addrs[1], "r2:6379") == 0);
  CHECK(c.redis.sentinel[1] == NULL);
  CHECK(c.redis.sentinel[2] && c.redis.sentinel[2]->naddrs == 2);
  CHECK_EQ(push_config_finish(&c, err, sizeof err), 0);
  push_config_free(&c);
}

static void test_config_cluster(void) {
  push_config c;
  char err[256];
  CHECK_EQ(load(&c,
                "{\"engine\":\"redis\",\"redis\":{\"cluster\":{"
                "\"addresses\":[\"n1:7000\",\"n2:7000\"]}}}",
                err, sizeof err),
           0);
  CHECK_EQ(c.redis.naddrs, 0);
  CHECK_EQ(c.redis.ncluster, 2);
  CHECK(strcmp(c.redis.cluster[1], "n2:7000") == 0);
  CHECK_EQ(push_config_finish(&c, err, sizeof err), 0);
  push_config_clear_redis(&c);
  CHECK_EQ(c.redis.ncluster, 0);
  push_config_free(&c);
}

static void test_config_refused(void) {
  static const char *const bad[] = {
      "{\"redis\":{\"addresses\":[\"a:1\"],\"cluster\":{\"addresses\":"
      "[\"b:1\"]}}}",
      "{\"redis\":{\"sentinel\":{\"addresses\":[\"a:1\"]}}}",
      "{\"redis\":{\"sentinel\":{\"master_name\":\"m\"}}}",
      "{\"redis\":{\"sentinel\":{\"master_name\":\"\",\"addresses\":"
      "[\"a:1\"]}}}",
      "{\"redis\":{\"sentinel\":{\"master_name\":\"m\",\"addresses\":[]}}}",
      "{\"redis\":{\"shards\":[]}}",
      "{\"redis\":{\"shards\":[{}]}}",
      "{\"redis\":{\"shards\":[{\"address\":\"a:1\",\"port\":1}]}}",
      "{\"redis\":{\"shards\":[\"a:1\"]}}",
      "{\"redis\":{\"cluster\":{}}}",
      "{\"redis\":{\"cluster\":{\"addresses\":[1]}}}",
      "{\"redis\":{\"cluster\":{\"seeds\":[\"a:1\"]}}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    push_config c;
    char err[256] = "";
    int rv = load(&c, bad[i], err, sizeof err);
    if (rv == 0) {
      fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    CHECK(rv != 0 && err[0] != 0);
    push_config_free(&c);
  }
}

/* ---- one connection against a scripted server --------------------------- */

typedef struct scripted {
  int ready, failed, replies, errors, messages, unsubs, redirects;
  int take_redirect; /* what the redirect hook answers */
  char raw[4][128];  /* the bytes each redirect was given */
  size_t rawlen[4];
  char unsub[4][16];
} scripted;

static scripted S;

static void on_ready(redis_conn *c) {
  (void)c;
  S.ready++;
}
static void on_failed(redis_conn *c, const char *why) {
  (void)c;
  fprintf(stderr, "connection failed: %s\n", why);
  S.failed++;
}
static void on_message(redis_conn *c, const char *ch, size_t clen,
                       const char *msg, size_t len) {
  (void)c, (void)ch, (void)clen, (void)msg, (void)len;
  S.messages++;
}
static void on_unsub(redis_conn *c, const char *ch, size_t clen) {
  (void)c;
  if (S.unsubs < 4 && clen < sizeof S.unsub[0]) {
    memcpy(S.unsub[S.unsubs], ch, clen);
    S.unsub[S.unsubs][clen] = 0;
  }
  S.unsubs++;
}
static void on_error(redis_conn *c, const redisReply *r,
                     const redis_pending *p) {
  (void)c, (void)r, (void)p;
  S.errors++;
}
static int on_redirect(redis_conn *c, const redisReply *r,
                       const redis_pending *p, const char *raw, size_t len) {
  (void)c, (void)r, (void)p;
  if (S.redirects < 4 && len < sizeof S.raw[0]) {
    memcpy(S.raw[S.redirects], raw, len);
    S.rawlen[S.redirects] = len;
  }
  S.redirects++;
  if (S.take_redirect > 0) {
    S.take_redirect--;
    return 1;
  }
  return 0;
}
static void on_closed(redis_conn *c) {
  (void)c;
}
static void on_reply(redis_conn *c, redisReply *r, const redis_pending *p) {
  (void)c, (void)p;
  if (r != NULL) {
    S.replies++;
  }
}

static const redis_conn_events EV = {
    .ready = on_ready,
    .failed = on_failed,
    .message = on_message,
    .unsubscribed = on_unsub,
    .error_reply = on_error,
    .redirect = on_redirect,
    .handle_closed = on_closed,
};

/* Runs the loop until cond holds (at most ~2 s). */
#define RUN_UNTIL(loop, cond)                                                  \
  do {                                                                         \
    for (int k_ = 0; k_ < 2000 && !(cond); k_++) {                             \
      uv_run((loop), UV_RUN_NOWAIT);                                           \
      usleep(1000);                                                            \
    }                                                                          \
  } while (0)

/* A listening socket on 127.0.0.1 and a connection to it; *sfd: the
 * server's end. */
static int connect_pair(uv_loop_t *loop, redis_conn *c, unsigned *handles,
                        int pubsub, int *sfd) {
  struct sockaddr_in sa;
  socklen_t sl = sizeof sa;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
    return -1;
  }
  memset(&S, 0, sizeof S);
  redis_conn_init(c, &EV, NULL, loop, handles, pubsub);
  redis_conn_start(c, (struct sockaddr *)&sa, sizeof sa);
  *sfd = accept(lfd, NULL, NULL);
  close(lfd);
  RUN_UNTIL(loop, S.ready || S.failed);
  return *sfd >= 0 && S.ready == 1 ? 0 : -1;
}

/* Reads exactly n bytes the connection sent. */
static int read_n(uv_loop_t *loop, redis_conn *c, int fd, char *buf, size_t n) {
  size_t got = 0;
  RUN_UNTIL(loop, redis_conn_unsent(c) == 0);
  while (got < n) {
    ssize_t k = recv(fd, buf + got, n - got, 0);
    if (k <= 0) {
      return -1;
    }
    got += (size_t)k;
  }
  return 0;
}

static void finish(uv_loop_t *loop, redis_conn *c, int sfd) {
  redis_conn_close(c);
  redis_conn_free(c);
  close(sfd);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(loop), 0);
}

static void test_keep_redirect(void) {
  uv_loop_t loop;
  redis_conn c;
  unsigned handles = 0;
  int sfd;
  uv_loop_init(&loop);
  if (connect_pair(&loop, &c, &handles, 0, &sfd) != 0) {
    CHECK(0);
    return;
  }
  c.keep = 1;
  const char *a[3] = {"SET", "a", "1"}, *b[2] = {"GET", "b"},
             *e[3] = {"EVALSHA", "x", "0"};
  size_t al[3] = {3, 1, 1}, bl[2] = {3, 1}, el[3] = {7, 1, 1};
  CHECK_EQ(redis_conn_cmd(&c, on_reply, NULL, NULL, 3, a, al), 0);
  CHECK_EQ(redis_conn_cmd(&c, on_reply, NULL, NULL, 2, b, bl), 0);
  CHECK_EQ(redis_conn_cmd(&c, on_reply, NULL, NULL, 3, e, el), 0);
  static const char ra[] = "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n";
  static const char rb[] = "*2\r\n$3\r\nGET\r\n$1\r\nb\r\n";
  static const char re[] = "*3\r\n$7\r\nEVALSHA\r\n$1\r\nx\r\n$1\r\n0\r\n";
  char sent[256];
  size_t n = strlen(ra) + strlen(rb) + strlen(re);
  CHECK_EQ(read_n(&loop, &c, sfd, sent, n), 0);
  CHECK_MEM(sent, ra, strlen(ra));
  /* Everything was written, nothing answered: the bytes stay. */
  CHECK_EQ(c.out.len, n);
  S.take_redirect = 1; /* the first redirect is taken over, not the second */
  static const char answers[] =
      "-MOVED 3999 127.0.0.1:7000\r\n$-1\r\n-ASK 1 127.0.0.1:7001\r\n";
  CHECK_EQ(send(sfd, answers, strlen(answers), 0), (ssize_t)strlen(answers));
  RUN_UNTIL(&loop, S.redirects == 2 && S.replies == 2);
  CHECK_EQ(S.redirects, 2);
  CHECK_EQ(S.rawlen[0], strlen(ra));
  CHECK_MEM(S.raw[0], ra, strlen(ra));
  CHECK_EQ(S.rawlen[1], strlen(re));
  CHECK_MEM(S.raw[1], re, strlen(re));
  /* The taken one: neither its reply function nor error_reply ran. */
  CHECK_EQ(S.replies, 2);
  CHECK_EQ(S.errors, 1);
  /* All answered: the buffer is empty again. */
  CHECK_EQ(c.out.len, 0);
  CHECK_EQ(c.out_head, 0);
  CHECK_EQ(c.qlen, 0);
  CHECK_EQ(S.failed, 0);
  finish(&loop, &c, sfd);
}

static void test_unsubscribe_pushes(void) {
  uv_loop_t loop;
  redis_conn c;
  unsigned handles = 0;
  int sfd;
  uv_loop_init(&loop);
  if (connect_pair(&loop, &c, &handles, 1, &sfd) != 0) {
    CHECK(0);
    return;
  }
  const char *s[2] = {"SSUBSCRIBE", "x"}, *u[2] = {"SUNSUBSCRIBE", "x"};
  size_t sl[2] = {10, 1}, ul[2] = {12, 1};
  CHECK_EQ(redis_conn_cmd(&c, on_reply, NULL, NULL, 2, s, sl), 0);
  CHECK_EQ(redis_conn_cmd(&c, NULL, NULL, NULL, 2, u, ul), 0);
  CHECK_EQ(c.qlen, 1); /* the unsubscribe waits for no reply */
  static const char rs[] = "*2\r\n$10\r\nSSUBSCRIBE\r\n$1\r\nx\r\n";
  static const char ru[] = "*2\r\n$12\r\nSUNSUBSCRIBE\r\n$1\r\nx\r\n";
  char sent[128];
  CHECK_EQ(read_n(&loop, &c, sfd, sent, strlen(rs) + strlen(ru)), 0);
  CHECK_MEM(sent, rs, strlen(rs));
  CHECK_MEM(sent + strlen(rs), ru, strlen(ru));
  static const char answers[] =
      "*3\r\n$10\r\nssubscribe\r\n$1\r\nx\r\n:1\r\n"
      "*3\r\n$8\r\nsmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n"
      "*3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:0\r\n"
      "*3\r\n$12\r\nsunsubscribe\r\n$1\r\ny\r\n:0\r\n";
  CHECK_EQ(send(sfd, answers, strlen(answers), 0), (ssize_t)strlen(answers));
  RUN_UNTIL(&loop, S.unsubs == 2);
  CHECK_EQ(S.replies, 1);
  CHECK_EQ(S.messages, 1);
  CHECK_EQ(S.unsubs, 2);
  CHECK(strcmp(S.unsub[0], "x") == 0 && strcmp(S.unsub[1], "y") == 0);
  CHECK_EQ(S.failed, 0);
  finish(&loop, &c, sfd);
}

int main(void) {
  RUN(test_slots);
  RUN(test_config_sentinel);
  RUN(test_config_shards);
  RUN(test_config_cluster);
  RUN(test_config_refused);
  RUN(test_keep_redirect);
  RUN(test_unsubscribe_pushes);
  return TEST_REPORT();
}
