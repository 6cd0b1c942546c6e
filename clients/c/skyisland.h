/*
 * skyisland.h - the C client of Sky Island, a Function-as-a-Service platform that runs
 * functions of Go packages from git repositories in fresh jails.
 *
 * The original client's names and shapes are kept, so existing callers only change the
 * endpoint:
 *
 *     client_opt_t *c = calloc(1, sizeof(client_opt_t));
 *     c->endpoint = "http://127.0.0.1:3280/api/v1/function";
 *     response_t *res = function(c, "github.com/mmcloughlin/geohash", "Encode(100.1, 80.9)");
 *     if (res == NULL) {
 *         fprintf(stderr, "%d %s\n", skyisland_last_error()->status, skyisland_last_error()->message);
 *     } else {
 *         printf("%s\n", res->data);
 *         free_response_t(res);
 *     }
 *
 * Requests and answers are JSON built and parsed with json-c: calls may hold quotes and
 * backslashes. Link with -lskyisland -lcurl -ljson-c. Functions are thread-safe once
 * curl_global_init has run; the last error is kept per thread.
 */
#ifndef SKYISLAND_H
#define SKYISLAND_H

#ifdef __cplusplus
extern "C" {
#endif

/* The original client's options. endpoint is the full URL of the function endpoint. */
typedef struct client_opt_t {
    char *endpoint;
    int skip_host_verify;
    int skip_peer_verify;
} client_opt_t;

/* The talk's examples say struct client_t. */
#define client_t client_opt_t

/* An answer. timestamp and data are the original's; the rest is what else the server says. */
typedef struct response_t {
    long timestamp;
    char *data;
    char *commit;
    char *cache; /* "hit" or "miss" */
    int built;
    char *json; /* the whole answer */
} response_t;

/* The optional fields of a call. cache: -1 as the server is configured, 0 off, 1 on. */
typedef struct request_opts_t {
    const char *version;
    int cache_bust;
    int ip4;
    int cache;
    const char *runtime; /* "go", "python", "node" or "lua"; NULL: the server detects it */
    const char *api_key; /* sent as Authorization: Bearer KEY when not NULL */
    long timeout_ms;     /* 0: no timeout */
} request_opts_t;

/* Why the last call on this thread failed: the HTTP status (0 when there was no answer)
 * and the server's message (or curl's). body is the server's JSON answer, or NULL. */
typedef struct skyisland_error_t {
    int status;
    char message[1024];
    char *body;
} skyisland_error_t;

/* Default options: cache -1, everything else off. */
request_opts_t request_opts_default(void);

/* Runs call (e.g. "Encode(1, 2)") of the package at import path url. NULL on failure. */
response_t *function(client_opt_t *client, const char *url, const char *call);

/* The same with the optional fields (opts may be NULL). */
response_t *function_with(client_opt_t *client, const char *url, const char *call, const request_opts_t *opts);

void free_response_t(response_t *response);

/* The last error on this thread (status 0 and an empty message if none). */
const skyisland_error_t *skyisland_last_error(void);

/* Frees what the last error holds (call before a thread ends, if you care). */
void skyisland_clear_error(void);

/*
 * The admin endpoints, under the endpoint's server. admin_token goes in the
 * X-Sky-Island-Token header (none when NULL). Each returns the answer's JSON text (free it
 * with free()), or NULL on failure.
 */
char *skyisland_admin(client_opt_t *client, const char *admin_token, const char *method, const char *path,
                      const char *body);
char *skyisland_jails(client_opt_t *client, const char *admin_token);
char *skyisland_ips(client_opt_t *client, const char *admin_token);
char *skyisland_api_stats(client_opt_t *client, const char *admin_token);

#ifdef __cplusplus
}
#endif

#endif
