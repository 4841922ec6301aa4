/* tls.h - the runtime's TLS layer (OpenSSL over a BIO that reads the socket
 * and writes the connection's output buffer). Internal. */
#ifndef HERALD_RT_TLS_H
#define HERALD_RT_TLS_H

#include "rt/internal.h"

/* A refcounted set of server contexts, one per certificate. */
int herald__tls_set_new(const herald_tls_server_config *cfg,
                        herald_tls_set **pset, const char **error);
herald_tls_set *herald__tls_set_ref(herald_tls_set *set);
void herald__tls_set_unref(herald_tls_set *set);

/* Puts TLS under a connection: server side with set, client side verifying
 * host (unless insecure) against ca_file or the system store. Return 0 or a
 * negative error (with *error set for the client). */
int herald__tls_attach_server(herald_ws *ws, herald_tls_set *set);
int herald__tls_attach_client(herald_ws *ws, const char *host,
                              const char *ca_file, int insecure,
                              const char **error);
void herald__tls_free(herald_ws *ws);

/* Ciphertext one round of reading (herald__tls_read(), then
 * herald__tls_decrypt() until it wants more) takes from the socket at most,
 * give or take one read of OpenSSL's buffer. */
#define HERALD_TLS_READ_MAX (READ_BUFFER_SIZE / 2)
/* The most plaintext one record holds (TLS's limit): herald__tls_decrypt()
 * is worth calling again while this much room is left. */
#define HERALD_TLS_RECORD_MAX 16384

/* I/O in place of read()/sendmsg(), see tls.c for the return values.
 * None of them ends the connection: an error comes back as -1 with a
 * static text in *error, for the caller to end it with. */
int herald__tls_read(herald_ws *ws, const char **error);
int herald__tls_decrypt(herald_ws *ws, uint8_t *out, size_t cap, size_t *n,
                        const char **error);
int herald__tls_flush(herald_ws *ws, const char **error);
/* Ciphertext read from the socket in this round, at most
 * HERALD_TLS_READ_MAX: that much means the round stopped at its budget
 * with more to read. */
size_t herald__tls_received(const herald_ws *ws);
/* Ends a round (after the decrypting, whatever its outcome): ciphertext
 * read ahead into the loop's buffer and not yet given to OpenSSL moves to
 * the heap. Returns 0, or -1 when it could not (out of memory: end the
 * connection). */
int herald__tls_round_end(herald_ws *ws);
/* Whether the handshake is complete. */
int herald__tls_established(const herald_ws *ws);
/* Ciphertext not yet sent. */
size_t herald__tls_pending(const herald_ws *ws);

#endif
