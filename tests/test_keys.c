/* test_keys.c — api keys (src/transport/keys.c) and the security parts of /metrics and TLS set-up:
 * keys files parse (comments, blanks, CRLF, trimming, duplicates) and refuse bad keys naming the line,
 * a file without keys, a missing file; es_keys_match accepts exactly the keys (no prefixes, no
 * extensions, no over-long keys, nothing for an empty set); the auth / TLS failure families render per
 * listener and are left out where not applicable; TLS contexts refuse missing files with a message
 * naming them. (The handshakes themselves are exercised end to end by test_tls.sh.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/keys.h"
#include "transport/tls.h"
#include "http/metrics.h"
#include "testutil.h"

static bool match(const es_keys *ks, const char *k) { return es_keys_match(ks, k, strlen(k)); }

static void test_parse(void) {
    es_keys ks = {0};
    es_err err = {{0}};
    const char *text = "# keys\n\n  alpha  \r\n#beta\n\tgamma\ndelta # not a comment\nalpha\n";
    /* "delta # not a comment" has blanks inside: refused, naming line 6 */
    CHECK(es_keys_parse(&ks, text, strlen(text), "keys.txt", &err) == ES_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "keys.txt:6:") != NULL, "%s", err.msg);
    es_keys_free(&ks);

    const char *good = "# keys\n\n  alpha  \r\n#beta\n\tgamma\nalpha\ndelta";
    CHECK_OK(es_keys_parse(&ks, good, strlen(good), "keys.txt", &err), &err);
    CHECK(ks.n == 3); /* alpha once, gamma, delta (no final newline) */
    CHECK(match(&ks, "alpha") && match(&ks, "gamma") && match(&ks, "delta"));
    CHECK(!match(&ks, "beta") && !match(&ks, "#beta") && !match(&ks, ""));
    CHECK(!match(&ks, "alph") && !match(&ks, "alphaa") && !match(&ks, " alpha") && !match(&ks, "ALPHA"));
    CHECK(!es_keys_match(&ks, "alpha", 4));
    char longk[ES_KEYS_MAX_LEN + 8];
    memset(longk, 'a', sizeof longk);
    CHECK(!es_keys_match(&ks, longk, sizeof longk));
    /* a key as long as allowed works; one byte more is refused */
    char k256[ES_KEYS_MAX_LEN + 2];
    memset(k256, 'k', ES_KEYS_MAX_LEN);
    k256[ES_KEYS_MAX_LEN] = 0;
    CHECK_OK(es_keys_add(&ks, k256, &err), &err);
    CHECK(match(&ks, k256));
    CHECK(!es_keys_match(&ks, longk, ES_KEYS_MAX_LEN + 1)); /* its 257-byte extension matches nothing */
    k256[ES_KEYS_MAX_LEN] = 'k';
    k256[ES_KEYS_MAX_LEN + 1] = 0;
    CHECK(es_keys_add(&ks, k256, &err) == ES_ERR_FORMAT);
    CHECK(es_keys_add(&ks, "", &err) == ES_ERR_FORMAT);
    /* --api-key keeps its old freedom: blanks allowed there */
    CHECK_OK(es_keys_add(&ks, "with a space", &err), &err);
    CHECK(match(&ks, "with a space"));
    es_keys_free(&ks);
    CHECK(ks.n == 0 && !match(&ks, "alpha")); /* an empty set matches nothing */

    const char *none = "# nothing\n\n   \n";
    CHECK(es_keys_parse(&ks, none, strlen(none), "empty.txt", &err) == ES_ERR_INVALID_ARG);
    CHECK(strstr(err.msg, "empty.txt") != NULL);
    const char ctl[] = "ok\nbad\x01key\n";
    CHECK(es_keys_parse(&ks, ctl, sizeof ctl - 1, "ctl", &err) == ES_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "ctl:2:") != NULL, "%s", err.msg);
    es_keys_free(&ks);
}

static void test_file(void) {
    es_err err = {{0}};
    es_keys ks = {0};
    char path[512];
    const char *dir = getenv("ES_BUILD");
    snprintf(path, sizeof path, "%s/test_keys.txt", dir && *dir ? dir : ".");
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs("one\n# two\nthree\n", f);
    fclose(f);
    CHECK_OK(es_keys_load_file(&ks, path, &err), &err);
    CHECK(ks.n == 2 && match(&ks, "one") && match(&ks, "three") && !match(&ks, "two"));
    es_keys_free(&ks);
    remove(path);
    CHECK(es_keys_load_file(&ks, path, &err) == ES_ERR_IO);
    CHECK(strstr(err.msg, "test_keys.txt") != NULL);
}

static void test_metrics(void) {
    es_metrics m;
    es_metrics_init(&m);
    es_str o = {0};
    CHECK(es_metrics_render(&m, &o));
    CHECK(!strstr(o.s, "edgespec_auth_failures_total") && !strstr(o.s, "edgespec_tls_handshake_failures_total"));
    es_str_free(&o);
    m.auth_failures_http = 3;
    m.auth_failures_edge = 0;
    m.tls_failures_edge = 7;
    CHECK(es_metrics_render(&m, &o));
    CHECK(strstr(o.s, "# TYPE edgespec_auth_failures_total counter\n") != NULL);
    CHECK(strstr(o.s, "\nedgespec_auth_failures_total{listener=\"http\"} 3\n") != NULL);
    CHECK(strstr(o.s, "\nedgespec_auth_failures_total{listener=\"edge\"} 0\n") != NULL);
    CHECK(strstr(o.s, "\nedgespec_tls_handshake_failures_total{listener=\"edge\"} 7\n") != NULL);
    CHECK(!strstr(o.s, "edgespec_tls_handshake_failures_total{listener=\"http\"}"));
    es_str_free(&o);
}

static void test_tls_setup(void) {
    es_err err = {{0}};
    struct ssl_ctx_st *ctx = NULL;
    CHECK(es_tls_server_ctx("/nonexistent/cert.pem", "/nonexistent/key.pem", &ctx, &err) == ES_ERR_IO && !ctx);
    CHECK(strstr(err.msg, "/nonexistent/cert.pem") != NULL);
    CHECK(es_tls_server_ctx(NULL, NULL, &ctx, &err) == ES_ERR_INVALID_ARG && !ctx);
    CHECK(es_tls_client_ctx("/nonexistent/ca.pem", false, &ctx, &err) == ES_ERR_IO && !ctx);
    CHECK(strstr(err.msg, "/nonexistent/ca.pem") != NULL);
    /* a file that is not PEM */
    char path[512];
    const char *dir = getenv("ES_BUILD");
    snprintf(path, sizeof path, "%s/test_keys_notpem.txt", dir && *dir ? dir : ".");
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs("not a certificate\n", f);
        fclose(f);
        CHECK(es_tls_server_ctx(path, path, &ctx, &err) == ES_ERR_FORMAT && !ctx);
        CHECK(es_tls_client_ctx(path, false, &ctx, &err) == ES_ERR_FORMAT && !ctx);
        remove(path);
    }
    /* the system store and the insecure mode both make a context */
    CHECK_OK(es_tls_client_ctx(NULL, false, &ctx, &err), &err);
    es_tls_ctx_free(ctx);
    ctx = NULL;
    CHECK_OK(es_tls_client_ctx(NULL, true, &ctx, &err), &err);
    es_tls_ctx_free(ctx);
}

int main(void) {
    test_parse();
    test_file();
    test_metrics();
    test_tls_setup();
    return es_test_finish("test_keys");
}
