/* tls.c — OpenSSL 3 contexts and the non-blocking client side (see tls.h). */
#include "transport/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/err.h"

/* The reason of the oldest queued OpenSSL error ("" if none), and clears the queue. */
static const char *ssl_reason(char *buf, size_t cap) {
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (r) snprintf(buf, cap, "%s", r);
    else if (e) ERR_error_string_n(e, buf, cap);
    else buf[0] = 0;
    ERR_clear_error();
    return buf;
}

static es_status check_readable(const char *what, const char *path, es_err *err) {
    if (!path || !*path) return es_fail(err, ES_ERR_INVALID_ARG, "no TLS %s file given", what);
    FILE *f = fopen(path, "rb");
    if (!f) return es_fail(err, ES_ERR_IO, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
    fclose(f);
    return ES_OK;
}

/* Counts a failed server handshake on the counter the connection's SSL carries. Called by OpenSSL at
 * the end of every SSL_accept step: ret <= 0 is either "waiting for the socket" or a failure, which
 * SSL_get_error tells apart (the failure's reason is still on this thread's error queue here). */
static void server_info_cb(const SSL *ssl, int where, int ret) {
    if (!(where & SSL_CB_ACCEPT_EXIT) || ret > 0) return;
    const int e = SSL_get_error(ssl, ret);
    if (e != SSL_ERROR_SSL && e != SSL_ERROR_SYSCALL) return;
    _Atomic int64_t *n = SSL_get_app_data(ssl);
    if (n) atomic_fetch_add(n, 1);
}

es_status es_tls_server_ctx(const char *cert_file, const char *key_file, struct ssl_ctx_st **out, es_err *err) {
    *out = NULL;
    es_status st;
    if ((st = check_readable("certificate", cert_file, err)) != ES_OK) return st;
    if ((st = check_readable("key", key_file, err)) != ES_OK) return st;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return es_fail(err, ES_ERR_NOMEM, "cannot create a TLS context");
    char why[256];
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* peers that close without close_notify end the stream like a plain EOF */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        st = es_fail(err, ES_ERR_FORMAT, "TLS certificate %s: %s (expected a PEM certificate chain, leaf first)", cert_file,
                     ssl_reason(why, sizeof why));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        const unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            st = es_fail(err, ES_ERR_FORMAT, "TLS key %s does not match the certificate %s (key values mismatch)", key_file,
                         cert_file);
            goto fail;
        }
        st = es_fail(err, ES_ERR_FORMAT, "TLS key %s: %s (expected the PEM private key of %s)", key_file,
                     ssl_reason(why, sizeof why), cert_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        st = es_fail(err, ES_ERR_FORMAT, "TLS key %s does not match the certificate %s: %s", key_file, cert_file,
                     ssl_reason(why, sizeof why));
        goto fail;
    }
    SSL_CTX_set_info_callback(ctx, server_info_cb);
    *out = ctx;
    return ES_OK;
fail:
    SSL_CTX_free(ctx);
    return st;
}

struct ssl_st *es_tls_server_ssl(struct ssl_ctx_st *ctx, _Atomic int64_t *failures) {
    SSL *ssl = SSL_new(ctx);
    if (ssl) SSL_set_app_data(ssl, (void *)failures);
    return ssl;
}

es_status es_tls_client_ctx(const char *ca_file, bool insecure, struct ssl_ctx_st **out, es_err *err) {
    *out = NULL;
    es_status st;
    if (ca_file && *ca_file && (st = check_readable("CA", ca_file, err)) != ES_OK) return st;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return es_fail(err, ES_ERR_NOMEM, "cannot create a TLS context");
    char why[256];
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    /* frames are retried from where a short write left them, possibly from a moved buffer */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (ca_file && *ca_file) {
            if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
                st = es_fail(err, ES_ERR_FORMAT, "TLS CA file %s: %s (expected PEM certificates)", ca_file,
                             ssl_reason(why, sizeof why));
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            st = es_fail(err, ES_ERR_IO, "cannot load the system's CA certificates: %s", ssl_reason(why, sizeof why));
            goto fail;
        }
    }
    *out = ctx;
    return ES_OK;
fail:
    SSL_CTX_free(ctx);
    return st;
}

/* Why a client handshake failed, in words. */
static void handshake_why(SSL *ssl, int e, char *buf, size_t cap) {
    const long v = SSL_get_verify_result(ssl);
    char r[256];
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        ERR_clear_error();
        snprintf(buf, cap, "certificate verify failed: %s (the certificate does not name this server: connect by a name "
                           "or address it carries, or name one with --tls-server-name)",
                 X509_verify_cert_error_string(v));
    } else if (v != X509_V_OK) {
        ERR_clear_error();
        snprintf(buf, cap, "certificate verify failed: %s (give the CA that signed the server's certificate with --tls-ca FILE)",
                 X509_verify_cert_error_string(v));
    } else if (e == SSL_ERROR_SSL) {
        snprintf(buf, cap, "%s (is the server serving TLS on this port?)", ssl_reason(r, sizeof r));
    } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(buf, cap, "%s", strerror(errno));
        ERR_clear_error();
    } else {
        snprintf(buf, cap, "the server closed the connection (is it serving TLS on this port?)");
        ERR_clear_error();
    }
}

static es_status client_connect(struct ssl_ctx_st *ctx, int fd, const char *host, double deadline, struct ssl_st **out,
                                es_err *err) {
    ERR_clear_error();
    SSL *ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        return es_fail(err, ES_ERR_NOMEM, "cannot create a TLS connection");
    }
    /* An address is matched against the certificate's IP entries and sent without SNI (RFC 6066
     * forbids literal addresses there); a name against its DNS names, and sent as SNI. */
    unsigned char addr[16];
    const bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    const bool verify = SSL_CTX_get_verify_mode(ctx) != SSL_VERIFY_NONE;
    bool ok = true;
    if (!is_ip) ok = SSL_set_tlsext_host_name(ssl, host) == 1;
    if (ok && verify) {
        if (is_ip) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1;
        else ok = SSL_set1_host(ssl, host) == 1;
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return es_fail(err, ES_ERR_INVALID_ARG, "cannot use '%s' as the TLS server name", host);
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        const int r = SSL_connect(ssl);
        if (r == 1) break;
        const int e = SSL_get_error(ssl, r);
        short ev = 0;
        if (e == SSL_ERROR_WANT_READ) ev = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
        if (!ev) {
            char why[384];
            handshake_why(ssl, e, why, sizeof why);
            SSL_free(ssl);
            return es_fail(err, ES_ERR_IO, "TLS handshake with %s failed: %s", host, why);
        }
        const double left = deadline - es_now_s();
        if (left <= 0) {
            SSL_free(ssl);
            return es_fail(err, ES_ERR_TIMEOUT, "TLS handshake with %s timed out", host);
        }
        struct pollfd pf = {fd, ev, 0};
        int pr;
        do pr = poll(&pf, 1, (int)ceil(left * 1000)); while (pr < 0 && errno == EINTR);
        if (pr < 0) {
            SSL_free(ssl);
            return es_fail(err, ES_ERR_IO, "TLS handshake with %s: poll: %s", host, strerror(errno));
        }
    }
    *out = ssl;
    return ES_OK;
}

/* OpenSSL writes to the socket with write(): a peer that is gone raises SIGPIPE, which must not end
 * the embedding program. It is blocked on this thread for the handshake and a SIGPIPE it raised is
 * taken off the pending set before the mask is restored. */
es_status es_tls_client_connect(struct ssl_ctx_st *ctx, int fd, const char *host, double deadline, struct ssl_st **out,
                                es_err *err) {
    *out = NULL;
    sigset_t pipe_set, old_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    es_status st = client_connect(ctx, fd, host, deadline, out, err);
    sigemptyset(&pending);
    if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);
    return st;
}

/* recv/send-style result of an SSL_read / SSL_write that returned r. */
static ssize_t io_result(SSL *ssl, int r, bool is_read, bool *want_write) {
    if (r > 0) return r;
    const int e = SSL_get_error(ssl, r);
    switch (e) {
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        if (is_read) return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_WANT_READ: errno = EAGAIN; return -1;
    case SSL_ERROR_WANT_WRITE:
        if (want_write) *want_write = true;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == 0) errno = EPIPE;
        return -1;
    default:
        ERR_clear_error();
        errno = EPROTO;
        return -1;
    }
}

ssize_t es_tls_read(struct ssl_st *ssl, void *buf, size_t n, bool *want_write) {
    if (n > (size_t)INT32_MAX) n = (size_t)INT32_MAX;
    ERR_clear_error();
    errno = 0;
    return io_result(ssl, SSL_read(ssl, buf, (int)n), true, want_write);
}

ssize_t es_tls_write(struct ssl_st *ssl, const void *buf, size_t n, bool *want_write) {
    if (n > (size_t)INT32_MAX) n = (size_t)INT32_MAX;
    ERR_clear_error();
    errno = 0;
    return io_result(ssl, SSL_write(ssl, buf, (int)n), false, want_write);
}

void es_tls_close(struct ssl_st *ssl) {
    if (!ssl) return;
    ERR_clear_error();
    (void)SSL_shutdown(ssl); /* one non-blocking attempt: the peer need not answer */
    ERR_clear_error();
    SSL_free(ssl);
}

void es_tls_free(struct ssl_st *ssl) { SSL_free(ssl); }

void es_tls_ctx_free(struct ssl_ctx_st *ctx) { SSL_CTX_free(ctx); }
