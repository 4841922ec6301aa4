/* client_tls.c - TLS for `herald client` (wss://): OpenSSL directly on
 * the non-blocking socket, the CA, client certificate and key files of the
 * command line, -k, the server's name checked, and the handshake and I/O
 * steps the socket's readiness drives. */
#include "app/client_net_int.h"

/* ---- TLS ---------------------------------------------------------------- */

/* A file named on the command line that cannot be read: say so plainly
 * rather than through OpenSSL's error stack. Returns 0 when it can. */
static int unreadable(cnet *n, const char *what, const char *file) {
  if (file == NULL || access(file, R_OK) == 0) {
    return 0;
  }
  n->end.usage = 1;
  cn_fail(n, "cannot read %s %s: %s", what, file, strerror(errno));
  return -1;
}

void cn_start_tls(cnet *n) {
  const client_opts *o = n->o;
  char eb[256];
  if (unreadable(n, "the CA file", o->ca_file) ||
      unreadable(n, "the client certificate", o->cert_file) ||
      unreadable(n, "the client key", o->key_file)) {
    return;
  }
  n->ctx = SSL_CTX_new(TLS_client_method());
  if (n->ctx == NULL) {
    cn_fail(n, "cannot set up TLS: %s", cn_ssl_errors(eb, sizeof(eb)));
    return;
  }
  SSL_CTX_set_min_proto_version(n->ctx, TLS1_2_VERSION);
  if (o->insecure) {
    SSL_CTX_set_verify(n->ctx, SSL_VERIFY_NONE, NULL);
  } else {
    SSL_CTX_set_verify(n->ctx, SSL_VERIFY_PEER, NULL);
    int ok = o->ca_file
                 ? SSL_CTX_load_verify_locations(n->ctx, o->ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(n->ctx);
    if (ok != 1) {
      n->end.usage = o->ca_file != NULL;
      cn_fail(n, "cannot load the CA certificates%s%s: %s",
              o->ca_file ? " of " : "", o->ca_file ? o->ca_file : "",
              cn_ssl_errors(eb, sizeof(eb)));
      return;
    }
  }
  if (o->cert_file) {
    const char *key = o->key_file ? o->key_file : o->cert_file;
    if (SSL_CTX_use_certificate_chain_file(n->ctx, o->cert_file) != 1) {
      n->end.usage = 1;
      cn_fail(n, "cannot load the client certificate %s: %s", o->cert_file,
              cn_ssl_errors(eb, sizeof(eb)));
      return;
    }
    if (SSL_CTX_use_PrivateKey_file(n->ctx, key, SSL_FILETYPE_PEM) != 1) {
      n->end.usage = 1;
      cn_fail(n, "cannot load the client key %s: %s", key,
              cn_ssl_errors(eb, sizeof(eb)));
      return;
    }
    if (SSL_CTX_check_private_key(n->ctx) != 1) {
      n->end.usage = 1;
      cn_fail(n, "the key %s does not belong to the certificate %s", key,
              o->cert_file);
      return;
    }
  }
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(n->ctx, alpn, sizeof(alpn) - 1);
  n->ssl = SSL_new(n->ctx);
  n->tlsw = malloc(TLS_WCHUNK);
  if (n->ssl == NULL || n->tlsw == NULL) {
    cn_fail(n, "cannot set up TLS: out of memory");
    return;
  }
  const char *name = o->server_name ? o->server_name : n->host;
  struct in6_addr a;
  int is_ip =
      inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a) == 1;
  if (!is_ip) {
    SSL_set_tlsext_host_name(n->ssl, name); /* SNI is for names only */
  }
  if (!o->insecure) {
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(n->ssl), name);
    } else {
      SSL_set1_host(n->ssl, name);
    }
  }
  SSL_set_fd(n->ssl, n->fd);
  n->state = N_TLS;
  cn_vlog(n, "TLS handshake with %s (verifying %s)", n->target,
          o->insecure ? "nothing: -k" : name);
  cn_tls_step(n);
}

void cn_tls_step(cnet *n) {
  ERR_clear_error();
  int r = SSL_connect(n->ssl);
  if (r == 1) {
    const SSL_CIPHER *c = SSL_get_current_cipher(n->ssl);
    X509 *peer = SSL_get1_peer_certificate(n->ssl);
    char subject[256] = "";
    if (peer) {
      X509_NAME_oneline(X509_get_subject_name(peer), subject, sizeof(subject));
      X509_free(peer);
    }
    cn_vlog(n, "TLS: %s, %s, server certificate %s", SSL_get_version(n->ssl),
            c ? SSL_CIPHER_get_name(c) : "?", subject[0] ? subject : "(none)");
    cn_start_handshake(n);
    return;
  }
  int e = SSL_get_error(n->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    cn_poll_set(n, UV_READABLE);
    return;
  }
  if (e == SSL_ERROR_WANT_WRITE) {
    cn_poll_set(n, UV_READABLE | UV_WRITABLE);
    return;
  }
  long vr = SSL_get_verify_result(n->ssl);
  unsigned long err = ERR_peek_error();
  int reason = ERR_GET_REASON(err);
  char eb[256];
  if (vr != X509_V_OK && !n->o->insecure) {
    cn_fail(n,
            "the certificate of %s did not verify: %s (trust its CA with --ca "
            "FILE, or skip the check with -k)",
            n->target, X509_verify_cert_error_string(vr));
  } else if (reason == SSL_R_WRONG_VERSION_NUMBER ||
             reason == SSL_R_PACKET_LENGTH_TOO_LONG) {
    ERR_clear_error();
    cn_fail(n,
            "%s did not answer in TLS: is it a plain TCP port? Use ws:// "
            "rather than wss://",
            n->target);
  } else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
    cn_fail(n,
            "%s closed the connection during the TLS handshake%s%s (is it a "
            "plain ws:// port?)",
            n->target, errno ? ": " : "", errno ? strerror(errno) : "");
  } else {
    cn_fail(n, "TLS handshake with %s failed: %s", n->target,
            cn_ssl_errors(eb, sizeof(eb)));
  }
}
