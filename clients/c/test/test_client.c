/* Tests of the C client against a real server started by Sky Island's test suite
 * (crates/skyisland/tests/clients.rs), which passes its address and fixtures in
 * SKYISLAND_TEST_* variables. Run under valgrind by `make test`. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "skyisland.h"

static int failures = 0;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            failures++;                                                     \
        }                                                                   \
    } while (0)

static const char *env(const char *name) {
    char key[128];
    snprintf(key, sizeof key, "SKYISLAND_TEST_%s", name);
    const char *value = getenv(key);
    if (value == NULL || *value == '\0') {
        fprintf(stderr, "%s is not set: run these tests through cargo test --test clients\n", key);
        exit(2);
    }
    return value;
}

static const char *error_message(void) { return skyisland_last_error()->message; }

static void the_original_shape(client_opt_t *c) {
    response_t *res = function(c, env("GEO"), "Encode(57.64911, 10.40744)");
    CHECK(res != NULL, "%s", error_message());
    if (res != NULL) {
        CHECK(strcmp(res->data, "57.6491|10.4074") == 0, "%s", res->data);
        CHECK(res->timestamp > 1700000000L, "%ld", res->timestamp);
        free_response_t(res);
    }
}

static void optional_fields(client_opt_t *c) {
    request_opts_t opts = request_opts_default();
    opts.version = env("GEO_TAG");
    response_t *res = function_with(c, env("GEO"), "Encode(1, 2)", &opts);
    CHECK(res != NULL, "%s", error_message());
    if (res != NULL) {
        CHECK(strcmp(res->data, "1.0000|2.0000") == 0, "%s", res->data);
        CHECK(res->commit && strcmp(res->commit, env("GEO_COMMIT")) == 0, "%s", res->commit);
        free_response_t(res);
    }
    opts = request_opts_default();
    opts.cache = 0;
    opts.cache_bust = 1;
    res = function_with(c, env("MISC"), "Hello()", &opts);
    CHECK(res != NULL, "%s", error_message());
    if (res != NULL) {
        CHECK(strcmp(res->data, "hello") == 0 && strcmp(res->cache, "miss") == 0, "%s", res->json);
        free_response_t(res);
    }
    const char *runtimes[] = {"python", "node"};
    for (int i = 0; i < 2; i++) {
        opts = request_opts_default();
        opts.runtime = runtimes[i];
        res = function_with(c, env("BILINGUAL"), "which(1)", &opts);
        CHECK(res != NULL, "%s", error_message());
        if (res != NULL) {
            char want[32];
            snprintf(want, sizeof want, "%s 1", runtimes[i]);
            CHECK(strcmp(res->data, want) == 0, "%s", res->json);
            free_response_t(res);
        }
    }
    opts = request_opts_default();
    opts.ip4 = 1;
    res = function_with(c, env("NET"), "Addr(0)", &opts);
    CHECK(res != NULL, "%s", error_message());
    if (res != NULL) {
        CHECK(strncmp(res->data, env("IP4_PREFIX"), strlen(env("IP4_PREFIX"))) == 0, "%s", res->data);
        free_response_t(res);
    }
}

static void build_failure(client_opt_t *c) {
    response_t *res = function(c, env("BROKEN"), "Oops()");
    CHECK(res == NULL, "a broken package answered");
    free_response_t(res);
    const skyisland_error_t *e = skyisland_last_error();
    CHECK(e->status == 422 && strcmp(e->message, "build failed") == 0, "%d %s", e->status, e->message);
    CHECK(e->body != NULL && strstr(e->body, "\"output\"") != NULL, "%s", e->body);
}

static void timeout(client_opt_t *c) {
    response_t *res = function(c, env("MISC"), "Sleep(10000)");
    CHECK(res == NULL, "Sleep(10000) answered");
    free_response_t(res);
    const skyisland_error_t *e = skyisland_last_error();
    CHECK(e->status == 504 && strstr(e->message, "ran longer than") != NULL, "%d %s", e->status, e->message);
}

static void quotes_and_backslashes(client_opt_t *c) {
    response_t *res = function(c, env("GEO"), "Quote(\"a \\\"b\\\" \\\\ c\")");
    CHECK(res != NULL, "%s", error_message());
    if (res != NULL) {
        CHECK(strcmp(res->data, "\"a \\\"b\\\" \\\\ c\"") == 0, "%s", res->data);
        free_response_t(res);
    }
}

static void admin(client_opt_t *c) {
    char *answer = skyisland_jails(c, NULL);
    CHECK(answer == NULL && skyisland_last_error()->status == 403, "%d", skyisland_last_error()->status);
    free(answer);
    answer = skyisland_api_stats(c, "wrong-token");
    CHECK(answer == NULL && skyisland_last_error()->status == 403, "%d", skyisland_last_error()->status);
    free(answer);
    answer = skyisland_jails(c, env("ADMIN_TOKEN"));
    CHECK(answer != NULL && strstr(answer, "\"jails\"") != NULL, "%s", error_message());
    free(answer);
    answer = skyisland_api_stats(c, env("ADMIN_TOKEN"));
    CHECK(answer != NULL && strstr(answer, "uptime_seconds") != NULL, "%s", error_message());
    free(answer);
    answer = skyisland_ips(c, env("ADMIN_TOKEN"));
    CHECK(answer != NULL && strstr(answer, "\"ips\"") != NULL, "%s", error_message());
    free(answer);
    answer = skyisland_admin(c, env("ADMIN_TOKEN"), "DELETE", "/api/v1/admin/jail/no-such-jail", NULL);
    CHECK(answer == NULL && skyisland_last_error()->status == 404, "%d", skyisland_last_error()->status);
    free(answer);
}

static void no_server(void) {
    client_opt_t c = {"http://127.0.0.1:1/api/v1/function", 0, 0};
    response_t *res = function(&c, "example.test/x/y", "F()");
    CHECK(res == NULL && skyisland_last_error()->status == 0 && skyisland_last_error()->message[0] != '\0',
          "%d %s", skyisland_last_error()->status, error_message());
    free_response_t(res);
}

static void api_keys(void) {
    char keyed[256];
    snprintf(keyed, sizeof keyed, "%s:%s/api/v1/function", env("HOST"), env("KEYED_PORT"));
    client_opt_t c = {keyed, 0, 0};
    response_t *res = function(&c, env("MISC"), "Hello()");
    CHECK(res == NULL && skyisland_last_error()->status == 401, "without a key: %d", skyisland_last_error()->status);
    free_response_t(res);
    request_opts_t opts = request_opts_default();
    opts.api_key = env("API_KEY");
    res = function_with(&c, env("MISC"), "Hello()", &opts);
    CHECK(res != NULL, "with the key: %s", error_message());
    if (res != NULL) {
        CHECK(strcmp(res->data, "hello") == 0, "%s", res->data);
        free_response_t(res);
    }
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char endpoint[256];
    snprintf(endpoint, sizeof endpoint, "%s:%s/api/v1/function", env("HOST"), env("PORT"));
    /* As the talk's example: the struct allocated and filled by hand. */
    struct client_t *c = calloc(1, sizeof(struct client_t));
    c->endpoint = endpoint;
    the_original_shape(c);
    optional_fields(c);
    build_failure(c);
    timeout(c);
    quotes_and_backslashes(c);
    admin(c);
    api_keys();
    no_server();
    free(c);
    skyisland_clear_error();
    curl_global_cleanup();
    if (failures > 0) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("C client: all 8 groups of checks passed\n");
    return 0;
}
