/* tls.h — TLS (OpenSSL 3) for the two listeners of the verification server and for the edge client.
 * TLS wraps the same byte stream: the edge protocol's frames and HTTP go through it unchanged.
 *
 * Server: es_tls_server_ctx loads a certificate chain and its private key (PEM), checks that they
 * match, and allows TLS 1.2 and newer only. Each accepted connection gets an SSL from es_tls_server_ssl,
 * which also names the counter its failed handshake (if any) is added to, so every listener counts its
 * own (the /metrics edgespec_tls_handshake_failures_total family).
 *
 * Client: es_tls_client_ctx verifies the server's certificate against the system's CA store, or only
 * against ca_file when one is given; `insecure` skips verification altogether (tests, debugging).
 * es_tls_client_connect runs the handshake on a connected non-blocking socket within a deadline,
 * sending SNI and checking the certificate's names against the host the client dialled (an IP address
 * is matched against the certificate's IP entries). Afterwards the caller reads and writes with
 * es_tls_read / es_tls_write on the same non-blocking socket. */
#ifndef ES_NET_TLS_H
#define ES_NET_TLS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "edgespec.h"

struct ssl_ctx_st; /* OpenSSL's SSL_CTX */
struct ssl_st;     /* OpenSSL's SSL */

/* A server context for cert_file (PEM chain, leaf first) and key_file (PEM private key).
 * ES_ERR_IO: a file is missing or unreadable; ES_ERR_FORMAT: not PEM / the key does not match. */
es_status es_tls_server_ctx(const char *cert_file, const char *key_file, struct ssl_ctx_st **out, es_err *err);
/* A new server-side SSL for one accepted connection (NULL: out of memory); a handshake that fails on it
 * adds 1 to *failures (may be NULL). Handshake failures are counted on the thread that runs them. */
struct ssl_st *es_tls_server_ssl(struct ssl_ctx_st *ctx, _Atomic int64_t *failures);

/* A client context: verification against ca_file (PEM; NULL: the system CA store), or none at all when
 * insecure. ES_ERR_IO: ca_file unreadable; ES_ERR_FORMAT: no certificate in it. */
es_status es_tls_client_ctx(const char *ca_file, bool insecure, struct ssl_ctx_st **out, es_err *err);
/* Runs the client handshake on the connected non-blocking socket fd before `deadline` (CLOCK_MONOTONIC
 * seconds), naming `host` (SNI; certificate check unless the context is insecure). On success *out owns
 * the SSL (the fd stays the caller's). A failed handshake is ES_ERR_IO with a message that says why
 * (e.g. "certificate verify failed: unable to get local issuer certificate"); ES_ERR_TIMEOUT past the
 * deadline. */
es_status es_tls_client_connect(struct ssl_ctx_st *ctx, int fd, const char *host, double deadline, struct ssl_st **out,
                                es_err *err);

/* Non-blocking I/O on an established SSL, in the style of recv/send: > 0 bytes done; 0 (read only) the
 * peer closed; -1 with errno EAGAIN (and *want_write set when it is the socket's writability that is
 * awaited) or another errno (EPROTO: a TLS error; EPIPE: closed). Not thread-safe: one caller at a time
 * per SSL, reads and writes included. */
ssize_t es_tls_read(struct ssl_st *ssl, void *buf, size_t n, bool *want_write);
ssize_t es_tls_write(struct ssl_st *ssl, const void *buf, size_t n, bool *want_write);
/* Sends close_notify (best effort, never blocks) and frees the SSL. */
void es_tls_close(struct ssl_st *ssl);
/* Frees the SSL without a word to the peer (NULL: nothing). */
void es_tls_free(struct ssl_st *ssl);
void es_tls_ctx_free(struct ssl_ctx_st *ctx);

#endif
