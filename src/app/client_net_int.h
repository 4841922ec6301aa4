/* client_net_int.h - what the files of one `herald client` connection
 * share (client_net.c: the stages and the socket; client_url.c: URLs,
 * userinfo and NO_PROXY; client_tls.c: TLS with OpenSSL; client_proxy.c:
 * CONNECT through a proxy; client_listen.c: --listen; client_connect.c:
 * DNS and connect). Internal to
 * src/app. */
#ifndef HERALD_APP_CLIENT_NET_INT_H
#define HERALD_APP_CLIENT_NET_INT_H

#include "app/client.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef HERALD_VERSION_STRING
#define HERALD_VERSION_STRING "0.0.0"
#endif

#define CLOSE_GRACE_MS 3000
#define READ_CHUNK (64 * 1024)
#define TLS_WCHUNK (16 * 1024)
#define HIGH_WATER (1u << 20)
#define LOW_WATER (256u << 10)
#define PROXY_HEAD_MAX 8192

enum nstate {
  N_RESOLVE,
  N_CONNECT,
  N_PROXY,
  N_TLS,
  N_HANDSHAKE,
  N_LISTEN,
  N_OPEN,
  N_DONE
};

struct cnet {
  uv_loop_t *loop;
  const client_opts *o;
  cnet_callbacks cb;
  void *ud;
  enum nstate state;
  herald_config cfg;
  herald_conn *conn;

  /* What the URL says. */
  int tls;
  char *host;     /* for DNS, TLS name and the proxy's CONNECT */
  char *hostport; /* the Host header */
  char *path;
  char *auth; /* "Basic ..." from user:password@ in the URL, or NULL */
  int port;
  /* The proxy, when one is used. */
  char *phost;
  int pport;
  char *pauth;
  char target[300]; /* what we connect to, for messages: "host:port" */

  /* The socket and its handles. Every handle counts in `handles` until its
   * close callback has run; the struct is freed when none is left. */
  int fd;
  uv_poll_t *poll; /* one per socket: a closing handle cannot be reused */
  int poll_events;
  int lfd; /* --listen: the listening socket */
  uv_poll_t *lpoll;
  uv_timer_t timer;
  uv_timer_t ping_timer;
  uv_getaddrinfo_t dns;
  int dns_pending;
  int handles;
  struct addrinfo *addrs, *next_addr;
  char peer[INET6_ADDRSTRLEN + 8];

  SSL_CTX *ctx;
  SSL *ssl;
  uint8_t *tlsw; /* a chunk of output SSL_write must be given again */
  size_t tlswlen;

  uint8_t *ibuf; /* received bytes the core has not consumed yet */
  size_t ilen, icap;
  char *raw; /* bytes of our own to write before the core's (CONNECT) */
  size_t rawlen, rawoff;

  int dropped;      /* --listen: the input buffer was emptied mid-feed */
  int busy;         /* cnet_busy() said so: on_drain is owed */
  int ping_pending; /* --ping-interval: a ping awaits its pong */
  int close_sent;
  char subprotocol[128];
  int deflate;
  cnet_end end;
  char reason[128];
  char error[640];
  int ended; /* on_close has run */
};

/* ---- client_net.c ---- */

/* -v: one line on stderr, "* ..." like curl. */
void cn_vlog(const cnet *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Fails the connection with a sentence saying why. */
void cn_fail(cnet *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The OpenSSL error queue as text in buf, and cleared. Returns buf. */
const char *cn_ssl_errors(char *buf, size_t len);
/* Sets the socket poll's events (UV_READABLE, UV_WRITABLE). */
void cn_poll_set(cnet *n, int events);
/* Sends the opening handshake (after TCP, the proxy or TLS). */
void cn_start_handshake(cnet *n);
/* -v: an HTTP head, each line behind mark ("> " sent, "< " received). */
void cn_vhead(const cnet *n, const char *mark, const char *p, size_t len);
/* Writes what can be written. Returns 0, or -1 after failing n. */
int cn_flush(cnet *n);
/* Watches fd; *slot gets the new handle. Returns 0 or -1. */
int cn_poll_open(cnet *n, uv_poll_t **slot, int fd);
/* The poll callback of the connection's and the listener's sockets. */
void cn_on_poll(uv_poll_t *p, int status, int events);
/* Closes the poll handle in *slot (if any) and clears it. */
void cn_poll_drop(uv_poll_t **slot);
/* Frees n once its last handle has closed. */
void cn_release(cnet *n);
/* The stage n is in, for messages ("connecting", "TLS handshake", ...). */
const char *cn_stage(const cnet *n);

/* ---- client_connect.c ---- */

/* The libuv DNS callback for n->dns: connects to the first address. */
void cn_on_dns(uv_getaddrinfo_t *req, int status, struct addrinfo *res);
/* Connects to the next resolved address, or fails n naming the last
 * error when none is left. */
void cn_try_next_address(cnet *n);
/* The socket became writable while connecting: the connect's outcome. */
void cn_on_connect_ready(cnet *n);

/* ---- client_proxy.c ---- */

/* Sends CONNECT host:port to the proxy (connected). */
void cn_start_proxy(cnet *n);
/* The proxy's answer is in ibuf. Returns 1 when more is needed, else 0:
 * the tunnel is up and TLS or the handshake started, or n was failed
 * (with a sentence naming the proxy and its answer). */
int cn_proxy_answer(cnet *n);

/* ---- client_listen.c ---- */

/* Binds [ADDR:]PORT (ADDR defaults to 127.0.0.1). Returns 0, or -1 after
 * writing why into n->error. */
int cn_start_listen(cnet *n, const char *spec);
/* The listening socket is readable: accepts the one connection. */
void cn_on_accept(cnet *n);

/* ---- client_url.c ---- */

/* Splits a ws:// or wss:// URL (or, with proxy, an http:// one) into its
 * parts, each malloc'd for the caller to free. On failure writes a
 * sentence naming the wrong part into err and returns -1. */
int cn_parse_url(const char *url, int proxy, int *tls, char **host,
                 char **hostport, int *port, char **path, char **auth,
                 char *err, size_t errlen);
/* Whether host matches NO_PROXY (or no_proxy). */
int cn_no_proxy_for(const char *host);

/* ---- client_tls.c ---- */

/* Starts TLS on the connected socket (wss://, or after the proxy). */
void cn_start_tls(cnet *n);
/* Runs the TLS handshake or I/O as far as the socket allows. */
void cn_tls_step(cnet *n);

#endif
