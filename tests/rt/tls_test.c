/* tls_test.c - wss:// end to end: certificates made at test time with the
 * openssl command-line tool (a CA, a server certificate for localhost, a
 * second one for SNI, an expired one), a TLS server on a thread, and our
 * client connecting through each failure the issue names. Every failure
 * must come back as an on_close with a clear error, and leak nothing
 * (ASan). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herald/rt.h"
#include "test.h"

static char dir[256];

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static int sh(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  char full[4096 + 512];
  snprintf(full, sizeof(full), "cd %s && (%s) >/dev/null 2>&1", dir, cmd);
  return system(full);
}

/* A CA, and server certificates signed by it: localhost (valid),
 * other.test (valid, for SNI) and localhost expired in 2020. */
static int make_certs(void) {
  snprintf(dir, sizeof(dir), "/tmp/herald-tls-test-%d", (int)getpid());
  char cmd[sizeof(dir) * 2 + 32];
  snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s", dir, dir);
  if (system(cmd) != 0) {
    return -1;
  }
  int rv = 0;
  rv |=
      sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
         "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=herald-test-ca");
  const char *names[] = {"localhost", "other.test"};
  for (int i = 0; i < 2; i++) {
    rv |= sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout %s.key -out %s.csr -subj /CN=%s && "
             "printf 'subjectAltName=DNS:%s,IP:127.0.0.1' > %s.ext && "
             "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -days 2 -extfile %s.ext -out %s.pem",
             names[i], names[i], names[i], names[i], names[i], names[i],
             names[i], names[i]);
  }
  /* Expired: `openssl ca` takes explicit dates. */
  rv |=
      sh("mkdir -p ca && touch ca/index.txt && echo 1000 > ca/serial && "
         "printf '[ca]\\ndefault_ca=d\\n[d]\\ndir=ca\\ndatabase=ca/index.txt\\n"
         "serial=ca/serial\\nnew_certs_dir=ca\\ndefault_md=sha256\\n"
         "policy=p\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > "
         "ca.cnf && openssl req -newkey ec -pkeyopt "
         "ec_paramgen_curve:P-256 -nodes -keyout expired.key -out "
         "expired.csr -subj /CN=localhost -addext "
         "subjectAltName=DNS:localhost && openssl ca -batch -config ca.cnf "
         "-cert ca.pem -keyfile ca.key -startdate 200101000000Z -enddate "
         "200102000000Z -in expired.csr -out expired.pem");
  return rv;
}

static char path_buf[8][300];
static const char *path(int slot, const char *name) {
  snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", dir, name);
  return path_buf[slot];
}

/* ---- server ------------------------------------------------------------ */

typedef struct srv_run {
  herald_server *srv;
  pthread_t thread;
  int port;
} srv_run;

static void *srv_thread(void *arg) {
  srv_run *r = arg;
  herald_server_run(r->srv);
  return NULL;
}

static void echo(herald_ws *ws, herald_opcode op, uint8_t *data, size_t len,
                 void *ud) {
  (void)ud;
  herald_ws_send(ws, op, data, len);
}

/* Echoes, then pauses reading and resumes on the next pass: the records
 * read ahead of the pause wait meanwhile. */
static void echo_pausing(herald_ws *ws, herald_opcode op, uint8_t *data,
                         size_t len, void *ud) {
  (void)ud;
  herald_ws_send(ws, op, data, len);
  herald_ws_pause_read(ws);
  herald_ws_resume_read(ws);
}

/* The last connection the servers closed: its code and error. */
static pthread_mutex_t closed_mu = PTHREAD_MUTEX_INITIALIZER;
static int closed_count;
static uint16_t closed_code;
static char closed_error[128];

static void on_server_close(herald_ws *ws, const herald_close_info *info,
                            void *ud) {
  (void)ws;
  (void)ud;
  pthread_mutex_lock(&closed_mu);
  closed_count++;
  closed_code = info->code;
  snprintf(closed_error, sizeof(closed_error), "%s",
           info->error ? info->error : "");
  pthread_mutex_unlock(&closed_mu);
}

static int closed_seen(void) {
  pthread_mutex_lock(&closed_mu);
  int n = closed_count;
  pthread_mutex_unlock(&closed_mu);
  return n;
}

static void start(srv_run *r, const herald_tls_cert *certs, size_t n) {
  herald_server_config cfg;
  herald_server_config_init(&cfg);
  static const char *listen[] = {"127.0.0.1:0"};
  cfg.listen = listen;
  cfg.nlisten = 1;
  cfg.handle_signals = 0;
  cfg.tls.certs = certs;
  cfg.tls.ncerts = n;
  cfg.limits.handshake_timeout_ms = 2000;
  CHECK_EQ(herald_server_new(&r->srv, &cfg), 0);
  herald_ws_callbacks cb = {.on_message = echo, .on_close = on_server_close};
  herald_server_route(r->srv, "*", &cb, NULL);
  herald_ws_callbacks pcb = {.on_message = echo_pausing,
                             .on_close = on_server_close};
  herald_server_route(r->srv, "/pause", &pcb, NULL);
  pthread_create(&r->thread, NULL, srv_thread, r);
  for (int i = 0; i < 300 && herald_server_port(r->srv) == 0; i++) {
    usleep(10000);
  }
  r->port = herald_server_port(r->srv);
}

static void stop(srv_run *r) {
  herald_server_stop(r->srv);
  pthread_join(r->thread, NULL);
  herald_server_del(r->srv);
}

/* ---- client ------------------------------------------------------------ */

typedef struct cli_run {
  int opened, echoed;
  uint16_t code;
  char error[256];
} cli_run;

static void c_open(herald_ws *ws, void *ud) {
  cli_run *r = ud;
  r->opened = 1;
  static uint8_t big[200000];
  memset(big, 'x', sizeof(big));
  herald_ws_send(ws, HERALD_OP_TEXT, "over tls", 8);
  herald_ws_send(ws, HERALD_OP_BINARY, big, sizeof(big));
}

static void c_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                      size_t len, void *ud) {
  cli_run *r = ud;
  (void)op;
  (void)data;
  r->echoed++;
  if (r->echoed == 2) {
    (void)len;
    herald_ws_close(ws, 1000, NULL, 0);
  }
}

static void c_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  cli_run *r = ud;
  (void)ws;
  r->code = info->code;
  snprintf(r->error, sizeof(r->error), "%s", info->error ? info->error : "");
}

static void connect_to(const char *url, const char *ca, const char *name,
                       int insecure, cli_run *r) {
  memset(r, 0, sizeof(*r));
  herald_loop *loop;
  CHECK_EQ(herald_loop_new(&loop, NULL), 0);
  herald_client_config cfg;
  herald_client_config_init(&cfg);
  cfg.url = url;
  cfg.tls_ca_file = ca;
  cfg.tls_server_name = name;
  cfg.tls_insecure = insecure;
  cfg.connect_timeout_ms = 3000;
  herald_ws_callbacks cb = {
      .on_open = c_open, .on_message = c_message, .on_close = c_close};
  CHECK_EQ(herald_connect(loop, &cfg, &cb, r, NULL), 0);
  herald_loop_run(loop);
  herald_loop_del(loop);
}

/* ---- tests -------------------------------------------------------------- */

static srv_run tls_srv;
static herald_tls_cert certs[2];

static void test_ok(void) {
  char url[64];
  snprintf(url, sizeof(url), "wss://localhost:%d/", tls_srv.port);
  cli_run r;
  connect_to(url, path(0, "ca.pem"), NULL, 0, &r);
  CHECK(r.opened);
  CHECK_EQ(r.echoed, 2);
  CHECK_EQ(r.code, 1000);
  /* SNI picks the second certificate for other.test. */
  snprintf(url, sizeof(url), "wss://127.0.0.1:%d/", tls_srv.port);
  connect_to(url, path(0, "ca.pem"), "other.test", 0, &r);
  CHECK(r.opened);
  CHECK_EQ(r.echoed, 2);
}

static void test_refusals(void) {
  char url[64];
  snprintf(url, sizeof(url), "wss://127.0.0.1:%d/", tls_srv.port);
  cli_run r;
  /* Wrong host: the certificate names localhost and other.test only. */
  connect_to(url, path(0, "ca.pem"), "wrong.test", 0, &r);
  CHECK(!r.opened);
  CHECK(strstr(r.error, "mismatch") != NULL);
  fprintf(stderr, "  wrong host: %s\n", r.error);
  /* Untrusted: the system store does not know our CA. */
  connect_to(url, NULL, "localhost", 0, &r);
  CHECK(!r.opened);
  CHECK(strlen(r.error) > 0);
  fprintf(stderr, "  untrusted: %s\n", r.error);
  /* --insecure skips verification on purpose. */
  connect_to(url, NULL, "wrong.test", 1, &r);
  CHECK(r.opened);
  /* Missing CA file. */
  connect_to(url, "/nonexistent/ca.pem", NULL, 0, &r);
  CHECK(!r.opened);
  CHECK(strstr(r.error, "CA") != NULL);
}

static void test_expired(void) {
  srv_run s;
  herald_tls_cert exp = {path(3, "expired.pem"), path(4, "expired.key")};
  start(&s, &exp, 1);
  char url[64];
  snprintf(url, sizeof(url), "wss://localhost:%d/", s.port);
  cli_run r;
  connect_to(url, path(0, "ca.pem"), NULL, 0, &r);
  CHECK(!r.opened);
  CHECK(strstr(r.error, "expired") != NULL);
  fprintf(stderr, "  expired: %s\n", r.error);
  stop(&s);
}

/* Plain HTTP to the TLS port: the server drops it; TLS to a plain port: the
 * client fails with a clear error. */
static void test_wrong_protocol(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)tls_srv.port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  CHECK_EQ(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  const char *req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(write(fd, req, strlen(req)) > 0);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  char buf[256];
  int closed = 0;
  for (int i = 0; i < 20 && !closed; i++) {
    if (poll(&p, 1, 100) > 0) {
      closed = read(fd, buf, sizeof(buf)) <= 0;
    }
  }
  CHECK(closed);
  close(fd);

  srv_run plain;
  herald_server_config cfg;
  herald_server_config_init(&cfg);
  static const char *listen[] = {"127.0.0.1:0"};
  cfg.listen = listen;
  cfg.nlisten = 1;
  cfg.handle_signals = 0;
  CHECK_EQ(herald_server_new(&plain.srv, &cfg), 0);
  herald_ws_callbacks cb = {.on_message = echo};
  herald_server_route(plain.srv, "*", &cb, NULL);
  pthread_create(&plain.thread, NULL, srv_thread, &plain);
  for (int i = 0; i < 300 && herald_server_port(plain.srv) == 0; i++) {
    usleep(10000);
  }
  char url[64];
  snprintf(url, sizeof(url), "wss://localhost:%d/",
           herald_server_port(plain.srv));
  cli_run r;
  connect_to(url, path(0, "ca.pem"), NULL, 0, &r);
  CHECK(!r.opened);
  CHECK(strlen(r.error) > 0);
  fprintf(stderr, "  TLS to a plain port: %s\n", r.error);
  stop(&plain);
}

/* Reload swaps certificates for new connections. Bad files are refused and
 * the old certificates stay. */
static void test_reload(void) {
  const char *why = NULL;
  CHECK_EQ(herald_server_reload_tls(tls_srv.srv, &why), 0);
  char url[64];
  snprintf(url, sizeof(url), "wss://localhost:%d/", tls_srv.port);
  cli_run r;
  connect_to(url, path(0, "ca.pem"), NULL, 0, &r);
  CHECK(r.opened);
  /* Break the key file, reload: refused, service continues. */
  CHECK_EQ(sh("cp localhost.key localhost.key.bak && "
              "echo broken > localhost.key"),
           0);
  CHECK_EQ(herald_server_reload_tls(tls_srv.srv, &why), HERALD_ERR_INVALID_ARG);
  CHECK(why != NULL && strlen(why) > 0);
  CHECK_EQ(sh("mv localhost.key.bak localhost.key"), 0);
  connect_to(url, path(0, "ca.pem"), NULL, 0, &r);
  CHECK(r.opened);
}

static void test_bad_config(void) {
  herald_server_config cfg;
  herald_server_config_init(&cfg);
  static const char *listen[] = {"127.0.0.1:0"};
  cfg.listen = listen;
  cfg.nlisten = 1;
  herald_tls_cert bad = {"/nonexistent.pem", "/nonexistent.key"};
  cfg.tls.certs = &bad;
  cfg.tls.ncerts = 1;
  herald_server *srv;
  CHECK_EQ(herald_server_new(&srv, &cfg), HERALD_ERR_INVALID_ARG);
}

/* ---- a raw TLS client -------------------------------------------------- */

/* OpenSSL reads the (non-blocking) socket itself; what it writes goes to a
 * memory BIO that raw_send() puts on the wire in slices, so the server can
 * be made to see records a byte at a time, or only half of one. */
typedef struct raw_tls {
  int fd;
  SSL_CTX *ctx;
  SSL *ssl;
  BIO *wmem;
} raw_tls;

/* Sends what OpenSSL wrote, `slice` bytes per send() with a pause between
 * (0: all at once); at most `limit` bytes (0: all), the rest dropped. */
static void raw_send(raw_tls *c, size_t slice, size_t limit) {
  char buf[65536];
  int n;
  size_t total = 0;
  while ((n = BIO_read(c->wmem, buf, sizeof(buf))) > 0) {
    for (size_t off = 0; off < (size_t)n;) {
      size_t len = slice ? slice : (size_t)n - off;
      if (len > (size_t)n - off) {
        len = (size_t)n - off;
      }
      if (limit && total + len > limit) {
        len = limit - total;
      }
      if (len == 0) {
        return;
      }
      struct pollfd p = {.fd = c->fd, .events = POLLOUT};
      (void)poll(&p, 1, 1000);
      ssize_t w = send(c->fd, buf + off, len, MSG_NOSIGNAL);
      if (w <= 0) {
        return;
      }
      off += (size_t)w;
      total += (size_t)w;
      if (slice) {
        usleep(200);
      }
    }
  }
}

/* Waits up to ms for the socket to be readable; 1 if it is. */
static int raw_wait(raw_tls *c, int ms) {
  struct pollfd p = {.fd = c->fd, .events = POLLIN};
  return poll(&p, 1, ms) > 0;
}

static void raw_close(raw_tls *c) {
  SSL_free(c->ssl);
  SSL_CTX_free(c->ctx);
  close(c->fd);
}

/* Connects to the TLS server and completes the handshake, sending in
 * slices. max_version: 0 or TLS1_2_VERSION. Returns 0 or -1. */
static int raw_rcvbuf; /* nonzero: SO_RCVBUF set before connecting */
static int raw_connect(raw_tls *c, int port, int max_version, size_t slice) {
  memset(c, 0, sizeof(*c));
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (raw_rcvbuf) {
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &raw_rcvbuf, sizeof(raw_rcvbuf));
  }
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(c->fd);
    return -1;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
  c->ctx = SSL_CTX_new(TLS_client_method());
  if (max_version) {
    SSL_CTX_set_max_proto_version(c->ctx, max_version);
  }
  SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_load_verify_locations(c->ctx, path(7, "ca.pem"), NULL);
  c->ssl = SSL_new(c->ctx);
  SSL_set_tlsext_host_name(c->ssl, "localhost");
  c->wmem = BIO_new(BIO_s_mem());
  SSL_set_bio(c->ssl, BIO_new_socket(c->fd, BIO_NOCLOSE), c->wmem);
  for (int i = 0; i < 200; i++) {
    int r = SSL_connect(c->ssl);
    raw_send(c, slice, 0);
    if (r == 1) {
      return 0;
    }
    if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
      break;
    }
    raw_wait(c, 100);
  }
  ERR_clear_error();
  return -1;
}

/* Reads plaintext until `want` bytes are in buf or ms pass. Returns the
 * count, or -1 at EOF/error before any. */
static int raw_read(raw_tls *c, uint8_t *buf, size_t want, int ms) {
  size_t got = 0;
  for (int waited = 0; got < want && waited < ms; waited += 20) {
    int r = SSL_read(c->ssl, buf + got, (int)(want - got));
    raw_send(c, 0, 0); /* KeyUpdate answers and the like */
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
      ERR_clear_error();
      return got ? (int)got : -1;
    }
    raw_wait(c, 20);
  }
  return (int)got;
}

/* The upgrade, then one masked text frame; returns 0 when the server
 * echoed it. */
static int raw_upgrade_to(raw_tls *c, const char *path, size_t slice) {
  char req[512];
  snprintf(req, sizeof(req),
           "GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n",
           path);
  SSL_write(c->ssl, req, (int)strlen(req));
  raw_send(c, slice, 0);
  char resp[1024];
  size_t got = 0;
  while (got < sizeof(resp) - 1) {
    if (raw_read(c, (uint8_t *)resp + got, 1, 2000) != 1) {
      return -1;
    }
    got++;
    resp[got] = 0;
    if (got >= 4 && memcmp(resp + got - 4, "\r\n\r\n", 4) == 0) {
      break;
    }
  }
  return strstr(resp, " 101 ") ? 0 : -1;
}

static int raw_upgrade(raw_tls *c, size_t slice) {
  return raw_upgrade_to(c, "/", slice);
}

/* Writes a masked text frame with payload msg through TLS (not yet sent). */
static void raw_frame(raw_tls *c, const char *msg) {
  uint8_t f[256];
  size_t n = strlen(msg);
  f[0] = 0x81;
  f[1] = (uint8_t)(0x80 | n);
  const uint8_t mask[4] = {1, 2, 3, 4};
  memcpy(f + 2, mask, 4);
  for (size_t i = 0; i < n; i++) {
    f[6 + i] = (uint8_t)(msg[i] ^ mask[i % 4]);
  }
  SSL_write(c->ssl, f, (int)(6 + n));
}

/* Reads the server's unmasked text frame; 0 when its payload is msg. */
static int raw_echoed(raw_tls *c, const char *msg) {
  uint8_t f[256];
  size_t n = strlen(msg);
  if (raw_read(c, f, 2 + n, 3000) != (int)(2 + n)) {
    return -1;
  }
  return f[0] == 0x81 && f[1] == n && memcmp(f + 2, msg, n) == 0 ? 0 : -1;
}

/* Every record, the handshake's too, arrives a byte at a time. */
static void test_byte_at_a_time(void) {
  raw_tls c;
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 1), 0);
  CHECK_EQ(raw_upgrade(&c, 1), 0);
  raw_frame(&c, "one byte at a time");
  raw_send(&c, 1, 0);
  CHECK_EQ(raw_echoed(&c, "one byte at a time"), 0);
  raw_close(&c);
}

/* The peer sends half a record and closes: the server ends the
 * connection as abnormal (1006), and goes on serving. */
static void test_close_mid_record(void) {
  raw_tls c;
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 0), 0);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  int before = closed_seen();
  raw_frame(&c, "never completed");
  raw_send(&c, 0, 12); /* the 5-byte header and 7 bytes of the body */
  shutdown(c.fd, SHUT_WR);
  for (int i = 0; i < 200 && closed_seen() == before; i++) {
    usleep(10000);
  }
  CHECK_EQ(closed_seen(), before + 1);
  pthread_mutex_lock(&closed_mu);
  CHECK_EQ(closed_code, HERALD_CLOSE_ABNORMAL);
  pthread_mutex_unlock(&closed_mu);
  /* The server closed its side: we read EOF. */
  uint8_t b[16];
  CHECK(raw_read(&c, b, sizeof(b), 2000) <= 0);
  raw_close(&c);
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 0), 0);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  raw_close(&c);
}

/* TLS 1.3 KeyUpdate with a request for the server's: the server answers
 * with its own from the read path, and the echo keeps working both ways. */
static void test_key_update(void) {
  raw_tls c;
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 0), 0);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  CHECK_EQ(SSL_version(c.ssl), TLS1_3_VERSION);
  CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
  raw_frame(&c, "after the update");
  raw_send(&c, 0, 0);
  CHECK_EQ(raw_echoed(&c, "after the update"), 0);
  raw_frame(&c, "and again");
  raw_send(&c, 0, 0);
  CHECK_EQ(raw_echoed(&c, "and again"), 0);
  raw_close(&c);
}

/* TLS 1.2 renegotiation asked by the client is refused: the server never
 * completes a second handshake, and the connection cannot carry on under
 * one. */
static void test_renegotiation_refused(void) {
  raw_tls c;
  CHECK_EQ(raw_connect(&c, tls_srv.port, TLS1_2_VERSION, 0), 0);
  CHECK_EQ(SSL_version(c.ssl), TLS1_2_VERSION);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  CHECK_EQ(SSL_renegotiate(c.ssl), 1);
  int r = 0, done = 0;
  for (int i = 0; i < 50 && !done; i++) {
    r = SSL_do_handshake(c.ssl);
    raw_send(&c, 0, 0);
    int e = SSL_get_error(c.ssl, r);
    done = r == 1 || e != SSL_ERROR_WANT_READ;
    if (!done) {
      raw_wait(&c, 50);
    }
  }
  fprintf(stderr, "  renegotiation: SSL_do_handshake %d, pending %d\n", r,
          SSL_renegotiate_pending(c.ssl));
  ERR_clear_error();
  CHECK(r != 1);
  raw_close(&c);
  /* And the server serves the next connection. */
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 0), 0);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  raw_close(&c);
}

/* Writes a masked binary frame of n (126..65535) bytes of byte v. */
static void raw_frame16(raw_tls *c, size_t n, uint8_t v) {
  static uint8_t f[8 + 65536];
  f[0] = 0x82;
  f[1] = 0x80 | 126;
  f[2] = (uint8_t)(n >> 8);
  f[3] = (uint8_t)n;
  const uint8_t mask[4] = {9, 8, 7, 6};
  memcpy(f + 4, mask, 4);
  for (size_t i = 0; i < n; i++) {
    f[8 + i] = (uint8_t)(v ^ mask[i % 4]);
  }
  SSL_write(c->ssl, f, (int)(8 + n));
}

/* Reads the server's binary frame of n (126..65535) bytes; 0 when each is
 * v. */
static int raw_echoed16(raw_tls *c, size_t n, uint8_t v) {
  static uint8_t f[4 + 65536];
  if (raw_read(c, f, 4 + n, 3000) != (int)(4 + n) || f[0] != 0x82 ||
      f[1] != 126 || ((size_t)f[2] << 8 | f[3]) != n) {
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    if (f[4 + i] != v) {
      return -1;
    }
  }
  return 0;
}

/* 40 messages of 16,000 bytes (a record each) sent at once, the server
 * pausing after each: a pause finds ciphertext read ahead beyond what the
 * plaintext buffer took (in the loop's scratch space, moved to the heap),
 * and every echo must still come back, in order. */
static void test_pause_with_read_ahead(void) {
  raw_tls c;
  CHECK_EQ(raw_connect(&c, tls_srv.port, 0, 0), 0);
  CHECK_EQ(raw_upgrade_to(&c, "/pause", 0), 0);
  for (int i = 0; i < 40; i++) {
    raw_frame16(&c, 16000, (uint8_t)i);
  }
  raw_send(&c, 0, 0);
  int ok = 0;
  for (int i = 0; i < 40 && raw_echoed16(&c, 16000, (uint8_t)i) == 0; i++) {
    ok++;
  }
  CHECK_EQ(ok, 40);
  raw_close(&c);
}

/* 3,000 messages of 1,000 bytes sent one at a time while the client reads
 * nothing, its receive buffer shrunk: each echo is a flush of one record,
 * which the server's BIO sends at once (direct), until the socket is full
 * and a record goes out only in part, the rest kept for EPOLLOUT. Every
 * echo must come back whole and in order once the client reads. */
static void test_direct_sends_fill_the_socket(void) {
  raw_tls c;
  raw_rcvbuf = 4096;
  int rv = raw_connect(&c, tls_srv.port, 0, 0);
  raw_rcvbuf = 0;
  CHECK_EQ(rv, 0);
  CHECK_EQ(raw_upgrade(&c, 0), 0);
  for (int i = 0; i < 3000; i++) {
    raw_frame16(&c, 1000, (uint8_t)i);
    raw_send(&c, 0, 0);
    usleep(50);
  }
  int ok = 0;
  for (int i = 0; i < 3000 && raw_echoed16(&c, 1000, (uint8_t)i) == 0; i++) {
    ok++;
  }
  CHECK_EQ(ok, 3000);
  raw_close(&c);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (system("command -v openssl >/dev/null 2>&1") != 0) {
    printf("SKIPPED: the openssl command is not installed\n");
    return 77;
  }
  if (make_certs() != 0) {
    printf("could not create certificates in %s\n", dir);
    return 1;
  }
  certs[0] =
      (herald_tls_cert){path(1, "localhost.pem"), path(2, "localhost.key")};
  certs[1] =
      (herald_tls_cert){path(5, "other.test.pem"), path(6, "other.test.key")};
  start(&tls_srv, certs, 2);
  RUN(test_ok);
  RUN(test_refusals);
  RUN(test_expired);
  RUN(test_wrong_protocol);
  RUN(test_reload);
  RUN(test_bad_config);
  RUN(test_byte_at_a_time);
  RUN(test_close_mid_record);
  RUN(test_key_update);
  RUN(test_renegotiation_refused);
  RUN(test_pause_with_read_ahead);
  RUN(test_direct_sends_fill_the_socket);
  stop(&tls_srv);
  char cmd[sizeof(dir) + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  (void)!system(cmd);
  return TEST_REPORT();
}
