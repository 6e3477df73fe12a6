/* listen.c — see listen.h. */
#include "transport/listen.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/tls.h"
#include "util/err.h"

es_status es_listen_tcp(const char *host, int port, const char *what, int *fd_out, int *port_out, es_err *err) {
    *fd_out = -1;
    const char *sp = what ? " for " : "", *sw = what ? what : "";
    if (port < 0 || port > 65535) return es_fail(err, ES_ERR_INVALID_ARG, "port %d%s%s outside 0..65535", port, sp, sw);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) return es_fail(err, ES_ERR_IO, "cannot resolve host '%s': %s", host, gai_strerror(gai));
    int fd = -1, last = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
        last = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return es_fail(err, ES_ERR_IO, "cannot listen on %s:%d%s%s: %s", host, port, sp, sw, strerror(last));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (port_out && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6) *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    *fd_out = fd;
    return ES_OK;
}

struct bufferevent *es_accepted_bev(struct event_base *base, int fd, struct ssl_ctx_st *tls, _Atomic int64_t *tls_failures) {
    if (!tls) return bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct ssl_st *ssl = es_tls_server_ssl(tls, tls_failures);
    if (!ssl) return NULL;
    struct bufferevent *b = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (b) bufferevent_openssl_set_allow_dirty_shutdown(b, 1); /* a peer that just closes is EOF */
    else es_tls_close(ssl);
    return b;
}
