/*
 * tls.c - TLS between the socket and the protocol core, with OpenSSL 3 over
 * a BIO of our own (bio_method below) in place of a pair of memory BIOs:
 *
 *  - reading, OpenSSL's record layer (with read-ahead) receives ciphertext
 *    from the socket straight into its own record buffer (its default
 *    size, one record and a little more: a larger one would be allocated
 *    and freed on every pass by each connection, see docs/design.md): no
 *    copy through a memory BIO. A read goes on into the loop's scratch
 *    space when the socket holds more (spill, handed to OpenSSL next).
 *    The BIO follows the runtime's read rules: it stops after a short read
 *    (the socket is empty) or once a round's budget is read, and says
 *    "retry" until the next round, so each round costs one recvmsg() when
 *    the socket holds less than the space.
 *  - writing, each record OpenSSL encrypts is appended to this connection's
 *    output buffer (out), which goes to the socket with one send() per
 *    64 KiB batch: one copy instead of two (into a memory BIO, out of it
 *    again). A flush whose output fits one record sends that record
 *    straight from OpenSSL's buffer instead (t->direct), keeping in out
 *    only what the socket refuses.
 *
 * OpenSSL never holds ciphertext we have not given it, and everything it
 * writes is counted in herald__tls_pending(), so the runtime's
 * backpressure accounting stays whole.
 *
 * Kernel TLS (SSL_OP_ENABLE_KTLS) is not used: OpenSSL enables it only
 * through its own socket BIO's internal controls, which this BIO cannot
 * take (docs/design.md, "TLS", says why and what it would take).
 *
 * Certificates live in a refcounted set (one SSL_CTX per certificate, the
 * first the default). Each connection holds a reference to the set it was
 * accepted with, so a reload (SIGHUP) swaps the set for new connections
 * while open ones keep theirs.
 *
 * This file calls nothing else in the runtime: it moves bytes between the
 * socket, OpenSSL and the core's output, and reports the end of a
 * connection to its caller (ws.c) instead of ending it, and plaintext
 * likewise goes back to the caller to process.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rt/internal.h"
#include "rt/tls.h"

/* Plaintext is handed to SSL_write in records of up to this size: small
 * frames are coalesced so that they do not each cost a TLS record. */
#define TLS_RECORD 16384
/* SSL_write stops while this much ciphertext waits for the socket, so the
 * rest stays in the core's queue where backpressure counts it; once the
 * socket takes it, the flush encrypts the next batch into the same buffer.
 * The output buffer holds at most this plus one record's ciphertext
 * (TLS_OUT_MAX), below malloc's mmap threshold. */
#define TLS_MAX_PENDING (64 * 1024)
#define TLS_OUT_MAX (TLS_MAX_PENDING + TLS_RECORD + 1024)
/* The output buffer's smallest allocation; it doubles as needed, and
 * starts at the size the last flush needed. */
#define TLS_OUT_MIN 4096
/* The scratch space a round's reads go on into: the second half of the
 * loop's read buffer up to herald__tls_flush's record at its end. */
#define TLS_SCRATCH (READ_BUFFER_SIZE / 2 - TLS_RECORD)

struct herald_tls_set {
  atomic_int refs;
  SSL_CTX **ctx;
  size_t n;
};

struct tls_state {
  SSL *ssl;
  BIO *bio; /* bio_method: the socket for reads, out for writes */
  herald_tls_set *set;
  int fd;
  uint8_t *out; /* ciphertext for the socket, [out_off, out_len) unsent */
  size_t out_len, out_off, out_cap;
  size_t out_hint; /* out's first size: fits the last flush */
  /* This round's reading (herald__tls_read starts a round): bytes
   * received, and whether the socket is done for the round (it was short,
   * or the budget is read). */
  size_t rx_got;
  int rx_dry;
  /* During a round: the loop's scratch space (the second half of its read
   * buffer, less herald__tls_flush's record), where a read goes on past
   * what OpenSSL asked for. What landed there (spill) is handed to OpenSSL
   * before the socket is read again, and moved to the heap if the round
   * ends before it is (spill_heap). */
  uint8_t *scratch;
  uint8_t *spill;
  size_t spill_off, spill_len;
  int spill_heap;
  int eof;              /* the peer's FIN was read */
  const char *io_error; /* a read failed, or out could not grow */
  int shutdown_sent;
  /* Set by tls_encrypt around the SSL_write of a flush's last record while
   * out is empty: bio_write sends it straight away and keeps only what the
   * socket refuses (no copy, no buffer for a reply that goes out whole). */
  int direct;
};

/* ---- errors ------------------------------------------------------------- */

/* A static text for the last failure on ssl: verification results first,
 * since they are what users need to see ("certificate has expired"). */
static const char *tls_error(SSL *ssl, int ret) {
  long vr = SSL_get_verify_result(ssl);
  if (vr != X509_V_OK) {
    return X509_verify_cert_error_string(vr);
  }
  unsigned long e = ERR_peek_last_error();
  int code = SSL_get_error(ssl, ret);
  ERR_clear_error();
  if (e != 0) {
    const char *r = ERR_reason_error_string(e);
    if (r) {
      return r;
    }
  }
  if (code == SSL_ERROR_SYSCALL) {
    return "TLS: connection closed during the handshake";
  }
  return "TLS handshake failed";
}

/* ---- certificate sets --------------------------------------------------- */

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  (void)ssl;
  (void)arg;
  /* We speak HTTP/1.1 only (WebSocket upgrades and the HTTP API). */
  for (unsigned i = 0; i + 1 <= inlen;) {
    unsigned len = in[i];
    if (i + 1 + len > inlen) {
      break;
    }
    if (len == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
      *out = in + i + 1;
      *outlen = (unsigned char)len;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

/* SNI: move the connection to the context whose certificate names the
 * requested host; the default (first) otherwise. */
static int servername(SSL *ssl, int *al, void *arg) {
  (void)al;
  herald_tls_set *set = arg;
  const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == NULL) {
    return SSL_TLSEXT_ERR_OK;
  }
  for (size_t i = 0; i < set->n; i++) {
    X509 *cert = SSL_CTX_get0_certificate(set->ctx[i]);
    if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
      if (i > 0) {
        SSL_set_SSL_CTX(ssl, set->ctx[i]);
      }
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK;
}

static void set_common(SSL_CTX *ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
}

void herald__tls_set_unref(herald_tls_set *set) {
  if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1) {
    return;
  }
  for (size_t i = 0; i < set->n; i++) {
    SSL_CTX_free(set->ctx[i]);
  }
  free(set->ctx);
  free(set);
}

herald_tls_set *herald__tls_set_ref(herald_tls_set *set) {
  atomic_fetch_add(&set->refs, 1);
  return set;
}

int herald__tls_set_new(const herald_tls_server_config *cfg,
                        herald_tls_set **pset, const char **error) {
  herald_tls_set *set = calloc(1, sizeof(*set));
  if (set == NULL ||
      (set->ctx = calloc(cfg->ncerts, sizeof(SSL_CTX *))) == NULL) {
    free(set);
    *error = "out of memory";
    return HERALD_ERR_NOMEM;
  }
  atomic_init(&set->refs, 1);
  for (size_t i = 0; i < cfg->ncerts; i++) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
      *error = "cannot create a TLS context";
      herald__tls_set_unref(set);
      return HERALD_ERR_NOMEM;
    }
    set->ctx[set->n++] = ctx;
    set_common(ctx);
    if (cfg->certs[i].cert_file == NULL || cfg->certs[i].key_file == NULL ||
        SSL_CTX_use_certificate_chain_file(ctx, cfg->certs[i].cert_file) != 1) {
      *error = "cannot load the certificate chain file";
      ERR_clear_error();
      herald__tls_set_unref(set);
      return HERALD_ERR_INVALID_ARG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->certs[i].key_file,
                                    SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      *error = "cannot load the private key, or it does not match the "
               "certificate";
      ERR_clear_error();
      herald__tls_set_unref(set);
      return HERALD_ERR_INVALID_ARG;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, set);
  }
  *pset = set;
  return 0;
}

HERALD_API int herald_tls_check(const herald_tls_server_config *cfg,
                                const char **error) {
  const char *why = NULL;
  herald_tls_set *set = NULL;
  int rv = HERALD_ERR_INVALID_ARG;
  if (cfg == NULL || cfg->ncerts == 0) {
    why = "no certificate given";
  } else if ((rv = herald__tls_set_new(cfg, &set, &why)) == 0) {
    herald__tls_set_unref(set);
    why = NULL;
  }
  if (error) {
    *error = why;
  }
  return rv;
}

/* ---- the BIO ------------------------------------------------------------ */

/* Reads ciphertext from the socket into OpenSSL's buffer. Returns the bytes
 * read; -1 with the retry flag when the round is done (see tls_state);
 * 0 at the peer's FIN (t->eof); -1 without it when the read failed
 * (t->io_error). */
static int bio_read(BIO *b, char *buf, int len) {
  tls_state *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (t->spill_off < t->spill_len && len > 0) {
    size_t n = t->spill_len - t->spill_off;
    n = n < (size_t)len ? n : (size_t)len;
    memcpy(buf, t->spill + t->spill_off, n);
    t->spill_off += n;
    if (t->spill_off == t->spill_len) {
      if (t->spill_heap) {
        free(t->spill);
      }
      t->spill = NULL;
      t->spill_off = t->spill_len = 0;
      t->spill_heap = 0;
    }
    return (int)n;
  }
  if (t->eof) {
    return 0;
  }
  if (t->rx_dry || len <= 0) {
    BIO_set_retry_read(b);
    return -1;
  }
  /* OpenSSL asks for the rest of a record, or for what its buffer holds
   * (one record and a little more): read on into the scratch space, so
   * that a stream of large records costs one recv() per 128 KiB, not two
   * per record. */
  struct iovec iov[2] = {{buf, (size_t)len}, {t->scratch, TLS_SCRATCH}};
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = t->scratch ? 2 : 1};
  ssize_t n;
  do {
    n = recvmsg(t->fd, &msg, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    size_t asked = (size_t)len + (t->scratch ? TLS_SCRATCH : 0);
    t->rx_got += (size_t)n;
    if ((size_t)n < asked || t->rx_got >= HERALD_TLS_READ_MAX) {
      t->rx_dry = 1;
    }
    if (n > len) {
      t->spill = t->scratch;
      t->spill_off = 0;
      t->spill_len = (size_t)n - (size_t)len;
      t->spill_heap = 0;
      return len;
    }
    return (int)n;
  }
  if (n == 0) {
    t->eof = 1;
    return 0;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    t->rx_dry = 1;
    BIO_set_retry_read(b);
    return -1;
  }
  t->io_error = "read failed";
  return -1;
}

/* Sends what it can of buf[0..len) (t->direct, out empty). Returns the
 * bytes the socket took (0 when it is full), or -1 (t->io_error) when the
 * send failed. */
static ssize_t bio_send_direct(tls_state *t, const char *buf, size_t len) {
  ssize_t w;
  do {
    w = send(t->fd, buf, len, MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  if (w >= 0) {
    return w;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return 0;
  }
  t->io_error = "write failed";
  return -1;
}

/* Appends a record's ciphertext to out (in direct mode: sends it, and
 * appends what the socket did not take). Returns len, or -1
 * (t->io_error) when out cannot grow or a direct send failed. */
static int bio_write(BIO *b, const char *rec, int reclen) {
  tls_state *t = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (reclen <= 0) {
    return 0;
  }
  const char *buf = rec;
  size_t len = (size_t)reclen;
  if (t->out_off == t->out_len) {
    t->out_off = t->out_len = 0;
    if (t->direct) {
      ssize_t w = bio_send_direct(t, buf, len);
      if (w < 0) {
        return -1;
      }
      if ((size_t)w == len) {
        return reclen;
      }
      /* The rest waits in out, as if it had been batched. */
      buf += w;
      len -= (size_t)w;
    }
  }
  size_t need = t->out_len + len;
  if (need > t->out_cap) {
    size_t cap = t->out_cap    ? t->out_cap
                 : t->out_hint ? t->out_hint
                               : TLS_OUT_MIN;
    while (cap < need) {
      cap = cap * 2 < TLS_OUT_MAX ? cap * 2 : TLS_OUT_MAX;
      if (cap == TLS_OUT_MAX && cap < need) {
        cap = need; /* more than a record past the limit: not from us */
      }
    }
    uint8_t *p = realloc(t->out, cap);
    if (p == NULL) {
      t->io_error = "out of memory";
      return -1;
    }
    t->out = p;
    t->out_cap = cap;
  }
  memcpy(t->out + t->out_len, buf, len);
  t->out_len += len;
  return reclen;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  tls_state *t = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_FLUSH: /* sent by tls_send, when the socket takes it */
    return 1;
  case BIO_CTRL_WPENDING:
    return t ? (long)(t->out_len - t->out_off) : 0;
  case BIO_CTRL_EOF:
    return t ? t->eof : 0;
  default: /* no ktls, no duplication, nothing else */
    return 0;
  }
}

static int bio_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *bio_method_ptr;

static void bio_method_init(void) {
  BIO_METHOD *m =
      BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "herald");
  if (m && BIO_meth_set_write(m, bio_write) == 1 &&
      BIO_meth_set_read(m, bio_read) == 1 &&
      BIO_meth_set_ctrl(m, bio_ctrl) == 1 &&
      BIO_meth_set_create(m, bio_create) == 1) {
    bio_method_ptr = m; /* kept for the life of the process */
    return;
  }
  BIO_meth_free(m);
}

/* The BIO method, made once; NULL when OpenSSL could not make it. */
static const BIO_METHOD *bio_method(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, bio_method_init);
  return bio_method_ptr;
}

/* ---- connections -------------------------------------------------------- */

static int tls_state_new(herald_ws *ws, SSL_CTX *ctx) {
  const BIO_METHOD *m = bio_method();
  tls_state *t = calloc(1, sizeof(*t));
  if (t == NULL || m == NULL) {
    free(t);
    return HERALD_ERR_NOMEM;
  }
  t->ssl = SSL_new(ctx);
  t->bio = BIO_new(m);
  if (t->ssl == NULL || t->bio == NULL) {
    SSL_free(t->ssl);
    BIO_free(t->bio);
    free(t);
    return HERALD_ERR_NOMEM;
  }
  t->fd = ws->io.fd;
  BIO_set_data(t->bio, t);
  /* One BIO both ways: the SSL takes the reference we have and one more. */
  BIO_up_ref(t->bio);
  SSL_set_bio(t->ssl, t->bio, t->bio);
  /* Read-ahead: one recv() fills OpenSSL's buffer with as many records as
   * the socket holds, instead of a header and a body per record. */
  SSL_set_read_ahead(t->ssl, 1);
  /* A FIN without close_notify ends the connection like a FIN on plain
   * TCP (WebSocket's close handshake says whether it was clean); without
   * the option OpenSSL would also queue an alert for a closed peer. */
  SSL_set_options(t->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
  ws->tls = t;
  return 0;
}

int herald__tls_attach_server(herald_ws *ws, herald_tls_set *set) {
  int rv = tls_state_new(ws, set->ctx[0]);
  if (rv != 0) {
    return rv;
  }
  ws->tls->set = herald__tls_set_ref(set);
  SSL_set_accept_state(ws->tls->ssl);
  return 0;
}

int herald__tls_attach_client(herald_ws *ws, const char *host,
                              const char *ca_file, int insecure,
                              const char **error) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) {
    *error = "cannot create a TLS context";
    return HERALD_ERR_NOMEM;
  }
  set_common(ctx);
  if (!insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if ((ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
      SSL_CTX_free(ctx);
      ERR_clear_error();
      *error = "cannot load the CA certificates";
      return HERALD_ERR_INVALID_ARG;
    }
  }
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
  int rv = tls_state_new(ws, ctx);
  SSL_CTX_free(ctx); /* the SSL holds its own reference */
  if (rv != 0) {
    *error = "out of memory";
    return rv;
  }
  SSL *ssl = ws->tls->ssl;
  SSL_set_connect_state(ssl);
  /* SNI and name checks take a host name, never an IP literal's brackets. */
  SSL_set_tlsext_host_name(ssl, host);
  if (!insecure) {
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, host) != 1) {
      *error = "invalid host name for verification";
      return HERALD_ERR_INVALID_ARG;
    }
  }
  return 0;
}

void herald__tls_free(herald_ws *ws) {
  tls_state *t = ws->tls;
  if (t == NULL) {
    return;
  }
  SSL_free(t->ssl); /* drops the SSL's reference to the BIO */
  BIO_free(t->bio); /* and ours */
  herald__tls_set_unref(t->set);
  if (t->spill_heap) {
    free(t->spill);
  }
  free(t->out);
  free(t);
  ws->tls = NULL;
}

size_t herald__tls_pending(const herald_ws *ws) {
  const tls_state *t = ws->tls;
  return t->out_len - t->out_off;
}

/* Sends the ciphertext in out. Returns 0 when all of it went out, 1 when
 * the socket is full, -1 with *error set when the connection must end. */
static int tls_send(herald_ws *ws, const char **error) {
  tls_state *t = ws->tls;
  t->fd = ws->io.fd; /* a client's socket may be set after the attach */
  while (t->out_off < t->out_len) {
    ssize_t w =
        send(t->fd, t->out + t->out_off, t->out_len - t->out_off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return 1;
      }
      *error = "write failed";
      return -1;
    }
    t->out_off += (size_t)w;
  }
  return 0;
}

/* Frees out once all of it is sent: an idle connection keeps no buffer.
 * The next starts at the size this one reached. */
static void tls_out_release(tls_state *t) {
  if (t->out != NULL && t->out_off == t->out_len) {
    t->out_hint = t->out_cap;
    free(t->out);
    t->out = NULL;
    t->out_off = t->out_len = t->out_cap = 0;
  }
}

/* The text for a failed call on t->ssl that returned ret: our own I/O's
 * failure first, then a FIN, then what OpenSSL says. */
static const char *tls_failure(tls_state *t, int ret, const char *on_eof) {
  if (t->io_error) {
    ERR_clear_error();
    return t->io_error;
  }
  if (t->eof && on_eof) {
    ERR_clear_error();
    return on_eof;
  }
  return tls_error(t->ssl, ret);
}

/* Drives the handshake. Returns 1 once established, 0 while it continues,
 * -1 with *error set when it failed. */
static int tls_handshake(herald_ws *ws, const char **error) {
  tls_state *t = ws->tls;
  if (SSL_is_init_finished(t->ssl)) {
    return 1;
  }
  t->fd = ws->io.fd;
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    return 1;
  }
  int e = SSL_get_error(t->ssl, r);
  if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && !t->eof &&
      t->io_error == NULL) {
    return 0;
  }
  const char *why =
      tls_failure(t, r, "TLS: connection closed during the handshake");
  const char *ignored;
  (void)tls_send(ws, &ignored); /* the alert, if the socket takes it */
  tls_out_release(t);
  *error = why;
  return -1;
}

/* Encrypts what the core has queued into out, until TLS_MAX_PENDING
 * waits there. Returns the plaintext bytes taken, or -1 with *error set
 * when the connection must end. */
static long tls_encrypt(herald_ws *ws, const char **error) {
  tls_state *t = ws->tls;
  uint8_t *rec = ws->loop->rbuf + READ_BUFFER_SIZE - TLS_RECORD;
  struct iovec iov[64];
  int cnt;
  long taken = 0;
  t->fd = ws->io.fd; /* direct sends, see bio_write */
  while (herald__tls_pending(ws) < TLS_MAX_PENDING &&
         (cnt = herald_conn_output(ws->conn, iov, 64)) > 0) {
    size_t left = herald_conn_output_size(ws->conn); /* all of it queued */
    size_t done = 0;
    for (int i = 0; i < cnt && herald__tls_pending(ws) < TLS_MAX_PENDING; i++) {
      const uint8_t *p = iov[i].iov_base;
      size_t len = iov[i].iov_len;
      if (len >= TLS_RECORD) {
        /* Partial-write mode: one record per call. */
        int w = SSL_write(t->ssl, p, (int)(len > INT32_MAX ? INT32_MAX : len));
        if (w <= 0) {
          *error = tls_failure(t, w, NULL);
          return -1;
        }
        done += (size_t)w;
        if ((size_t)w < len) {
          break;
        }
        continue;
      }
      /* Coalesce small pieces into one record. */
      size_t fill = 0;
      while (i < cnt && iov[i].iov_len < TLS_RECORD &&
             fill + iov[i].iov_len <= TLS_RECORD) {
        memcpy(rec + fill, iov[i].iov_base, iov[i].iov_len);
        fill += iov[i].iov_len;
        i++;
      }
      i--;
      if (fill == 0) {
        /* A piece that does not fit after others: write it alone. */
        continue;
      }
      /* The flush's last record, nothing batched before it: one send()
       * from OpenSSL's buffer, none from ours. */
      t->direct = done + fill == left && herald__tls_pending(ws) == 0;
      int w = SSL_write(t->ssl, rec, (int)fill);
      t->direct = 0;
      if (w <= 0 || (size_t)w != fill) {
        *error = tls_failure(t, w, NULL);
        return -1;
      }
      done += fill;
    }
    herald_conn_output_consumed(ws->conn, done);
    taken += (long)done;
    if (done == 0) {
      break;
    }
  }
  if (herald_conn_done(ws->conn) && !t->shutdown_sent) {
    /* The WebSocket is closed: end TLS with close_notify before FIN. */
    t->shutdown_sent = 1;
    (void)SSL_shutdown(t->ssl);
  }
  return taken;
}

/*
 * Encrypts what the core has queued (once the handshake is done) and sends
 * the ciphertext, a batch at a time while the socket takes it. Returns 0,
 * or -1 with *error set when the connection must end. Sets WS_WANT_WRITE
 * when the socket is full.
 */
int herald__tls_flush(herald_ws *ws, const char **error) {
  tls_state *t = ws->tls;
  int hs = tls_handshake(ws, error);
  if (hs < 0) {
    return -1;
  }
  int s;
  for (;;) {
    long taken = hs == 1 ? tls_encrypt(ws, error) : 0;
    if (taken < 0) {
      return -1;
    }
    s = tls_send(ws, error);
    if (s != 0 || taken == 0 || herald_conn_output_size(ws->conn) == 0) {
      break;
    }
  }
  if (s < 0) {
    return -1;
  }
  tls_out_release(t);
  if (s == 1) {
    ws->flags |= WS_WANT_WRITE;
  } else if (herald_conn_output_size(ws->conn) == 0 || hs != 1) {
    ws->flags &= (uint16_t)~WS_WANT_WRITE;
  } else {
    ws->flags |= WS_WANT_WRITE; /* more plaintext waits for the socket */
  }
  return 0;
}

/*
 * Starts a round of reading: the BIO may receive again, up to
 * HERALD_TLS_READ_MAX bytes. Before the handshake is done it is moved on
 * here. Returns 0 when there is nothing to decrypt yet (the handshake
 * continues), 2 when the handshake is done (decrypt with
 * herald__tls_decrypt(), which reads the socket), 1 at EOF (the caller
 * ends the connection), or -1 with *error set when the connection must
 * end.
 */
int herald__tls_read(herald_ws *ws, const char **error) {
  tls_state *t = ws->tls;
  t->rx_got = 0;
  t->rx_dry = 0;
  t->scratch = ws->loop->rbuf + READ_BUFFER_SIZE / 2;
  if (t->eof) {
    return 1;
  }
  int hs = tls_handshake(ws, error);
  if (hs < 0) {
    return -1;
  }
  if (hs == 0) {
    int sent = tls_send(ws, error);
    tls_out_release(t);
    return sent < 0 ? -1 : 0;
  }
  return 2;
}

int herald__tls_round_end(herald_ws *ws) {
  tls_state *t = ws->tls;
  t->scratch = NULL;
  if (t->spill_off == t->spill_len || t->spill_heap) {
    return 0;
  }
  /* The round ended (a pause, an error) before OpenSSL took it all. */
  size_t n = t->spill_len - t->spill_off;
  uint8_t *p = malloc(n);
  if (p == NULL) {
    t->spill = NULL;
    t->spill_off = t->spill_len = 0;
    return -1;
  }
  memcpy(p, t->spill + t->spill_off, n);
  t->spill = p;
  t->spill_off = 0;
  t->spill_len = n;
  t->spill_heap = 1;
  return 0;
}

size_t herald__tls_received(const herald_ws *ws) {
  const tls_state *t = ws->tls;
  return t->rx_got < HERALD_TLS_READ_MAX ? t->rx_got : HERALD_TLS_READ_MAX;
}

int herald__tls_established(const herald_ws *ws) {
  return SSL_is_init_finished(ws->tls->ssl);
}

/*
 * Decrypts the next record into out[0..cap), reading the socket when
 * OpenSSL's buffer holds no whole record and the round allows. Returns 0
 * with *n > 0 bytes of plaintext, 0 with *n == 0 when OpenSSL needs more
 * ciphertext, 1 at close_notify or the peer's FIN (EOF), or -1 with *error
 * set when the connection must end.
 */
int herald__tls_decrypt(herald_ws *ws, uint8_t *out, size_t cap, size_t *n,
                        const char **error) {
  tls_state *t = ws->tls;
  *n = 0;
  if (t->rx_dry && t->spill_off == t->spill_len && !t->eof &&
      !SSL_has_pending(t->ssl)) {
    /* The socket is done for the round and OpenSSL holds no byte of a
     * record: SSL_read could only fail and SSL_get_error say "want read",
     * which costs more than this check (one of each per round). */
    return 0;
  }
  int r = SSL_read(t->ssl, out, (int)(cap > INT32_MAX ? INT32_MAX : cap));
  if (r > 0) {
    *n = (size_t)r;
    return 0;
  }
  int e = SSL_get_error(t->ssl, r);
  if (t->io_error) {
    *error = tls_failure(t, r, NULL);
    return -1;
  }
  if (e == SSL_ERROR_ZERO_RETURN || t->eof) {
    ERR_clear_error();
    return 1;
  }
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    return 0;
  }
  *error = tls_error(t->ssl, r);
  return -1;
}
