/* listen.h — what both listeners of the verification server (the edge protocol's and the HTTP
 * API's) and the loading-phase responder share: binding a TCP socket and the bufferevent of an
 * accepted connection, plain or TLS. */
#ifndef ES_TRANSPORT_LISTEN_H
#define ES_TRANSPORT_LISTEN_H

#include <stdatomic.h>
#include <stdint.h>

#include "edgespec.h"

struct event_base;
struct bufferevent;
struct ssl_ctx_st;

/* Binds and listens on host:port (port 0: an ephemeral one) with SO_REUSEADDR, non-blocking and
 * close-on-exec, trying each address host resolves to. *port_out (when non-NULL) gets the bound port.
 * `what` names the listener in messages ("HTTP", or NULL). ES_ERR_INVALID_ARG for a port outside
 * 0..65535, ES_ERR_IO when the host does not resolve or no address can be bound. */
es_status es_listen_tcp(const char *host, int port, const char *what, int *fd_out, int *port_out, es_err *err);

/* The bufferevent of an accepted connection on fd (-1: evhttp sets the socket afterwards), closing
 * fd when freed: plain when tls is NULL, else a TLS server one whose failed handshake adds 1 to
 * *tls_failures (may be NULL). A peer that just closes reads as EOF, not as an error. NULL when out
 * of memory (fd is then left to the caller). */
struct bufferevent *es_accepted_bev(struct event_base *base, int fd, struct ssl_ctx_st *tls, _Atomic int64_t *tls_failures);

#endif
