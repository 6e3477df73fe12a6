/* server_fuzz.h — synchronous hooks into the verification server for tests and the session fuzz
 * target (src/fuzz/fuzz_session.c); not part of the public API.
 *
 * A test-mode server is the real es_server (the same frame handling, session bookkeeping, scheduler
 * and event delivery) without a listening socket, without the HTTP API and without threads: the
 * caller connects through an in-memory bufferevent pair and drives everything on its own thread with
 * es_server_test_pump. Free it with es_server_free. */
#ifndef ES_SERVER_SERVER_FUZZ_H
#define ES_SERVER_SERVER_FUZZ_H

#include <event2/bufferevent.h>

#include "server/server.h"

/* A server in test mode (p->http must be false; host/port are ignored). */
es_status es_server_test_new(const es_server_params *p, es_server **out, es_err *err);
/* A new connection (in the handshake state). *peer is the client's end: write frames to it with
 * bufferevent_write (handled at once, on this thread), read the replies from
 * bufferevent_get_input(*peer). bufferevent_flush(*peer, EV_WRITE, BEV_FINISHED) is the client's
 * EOF; the caller frees *peer (before es_server_free). */
es_status es_server_test_connect(es_server *s, struct bufferevent **peer, es_err *err);
/* Runs the loop's pending callbacks once (a pair delivers written bytes from a deferred callback). */
void es_server_test_poll(es_server *s);
/* Runs the loop's pending callbacks, one scheduler step, and the loop again so the step's events are
 * sent. Returns the step's rows (0: no work) or a negative es_status. */
int es_server_test_pump(es_server *s, es_err *err);
/* Connections not yet freed (live plus dropped ones awaiting the deferred free). */
int es_server_test_n_conns(const es_server *s);

#endif
