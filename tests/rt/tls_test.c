/* tls_test.c - wss:// end to end: certificates made at test time with the
 * openssl command-line tool (a CA, a server certificate for localhost, a
 * second one for SNI, an expired one), a TLS server on a thread, and our
 * client connecting through each failure the issue names. Every failure
 * must come back as an on_close with a clear error, and leak nothing
 * (ASan). */
#include <arpa/inet.h>
#include <netinet/in.h>
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
  herald_ws_callbacks cb = {.on_message = echo};
  herald_server_route(r->srv, "*", &cb, NULL);
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
  stop(&tls_srv);
  char cmd[sizeof(dir) + 16];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  (void)!system(cmd);
  return TEST_REPORT();
}
