/* skyisland.c - see skyisland.h. */
#define _POSIX_C_SOURCE 200809L

#include "skyisland.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#define FUNCTION_PATH "/api/v1/function"
#define MAX_ANSWER (64L * 1024 * 1024)

static _Thread_local skyisland_error_t last_error;

const skyisland_error_t *skyisland_last_error(void) { return &last_error; }

static void set_error(int status, const char *message, char *body) {
    free(last_error.body);
    last_error.status = status;
    snprintf(last_error.message, sizeof last_error.message, "%s", message ? message : "");
    last_error.body = body;
}

void skyisland_clear_error(void) { set_error(0, "", NULL); }

request_opts_t request_opts_default(void) {
    request_opts_t opts;
    memset(&opts, 0, sizeof opts);
    opts.cache = -1;
    return opts;
}

typedef struct buffer {
    char *data;
    size_t len;
    int too_big;
} buffer;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata) {
    buffer *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n > (size_t)MAX_ANSWER) {
        b->too_big = 1;
        return 0;
    }
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL) {
        return 0;
    }
    b->data = grown;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Sends one request; returns the answer's body (2xx) or NULL with the error set. */
static char *exchange(client_opt_t *client, const char *url, const char *method, const char *body,
                      const char *header, long timeout_ms) {
    CURL *curl = curl_easy_init();
    if (curl == NULL) {
        set_error(0, "curl_easy_init failed", NULL);
        return NULL;
    }
    buffer answer = {NULL, 0, 0};
    char curl_error[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: application/json");
    if (header != NULL) {
        headers = curl_slist_append(headers, header);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (body != NULL) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    if (timeout_ms > 0) {
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    }
    if (client->skip_peer_verify) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
    }
    if (client->skip_host_verify) {
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        free(answer.data);
        set_error(0, answer.too_big ? "the answer is too large" : (curl_error[0] ? curl_error : curl_easy_strerror(rc)),
                  NULL);
        return NULL;
    }
    if (answer.data == NULL) {
        answer.data = strdup("");
    }
    if (status < 200 || status > 299) {
        const char *message = answer.data;
        json_object *parsed = json_tokener_parse(answer.data);
        json_object *error = NULL;
        if (parsed != NULL && json_object_object_get_ex(parsed, "error", &error)) {
            message = json_object_get_string(error);
        }
        set_error((int)status, message, answer.data);
        json_object_put(parsed);
        return NULL;
    }
    set_error(0, "", NULL);
    return answer.data;
}

static char *dup_field(json_object *object, const char *key) {
    json_object *value = NULL;
    if (!json_object_object_get_ex(object, key, &value) || json_object_get_type(value) != json_type_string) {
        return NULL;
    }
    return strdup(json_object_get_string(value));
}

response_t *function(client_opt_t *client, const char *url, const char *call) {
    return function_with(client, url, call, NULL);
}

response_t *function_with(client_opt_t *client, const char *url, const char *call, const request_opts_t *opts) {
    request_opts_t defaults = request_opts_default();
    if (opts == NULL) {
        opts = &defaults;
    }
    if (client == NULL || client->endpoint == NULL || url == NULL || call == NULL) {
        set_error(0, "client, client->endpoint, url and call must not be NULL", NULL);
        return NULL;
    }
    json_object *request = json_object_new_object();
    json_object_object_add(request, "url", json_object_new_string(url));
    json_object_object_add(request, "call", json_object_new_string(call));
    if (opts->version != NULL) {
        json_object_object_add(request, "version", json_object_new_string(opts->version));
    }
    if (opts->cache_bust) {
        json_object_object_add(request, "cache_bust", json_object_new_boolean(1));
    }
    if (opts->runtime) {
        json_object_object_add(request, "runtime", json_object_new_string(opts->runtime));
    }
    if (opts->ip4) {
        json_object_object_add(request, "ip4", json_object_new_boolean(1));
    }
    if (opts->cache >= 0) {
        json_object_object_add(request, "cache", json_object_new_boolean(opts->cache));
    }
    char *auth = NULL;
    if (opts->api_key != NULL) {
        size_t n = strlen(opts->api_key) + sizeof "Authorization: Bearer ";
        auth = malloc(n);
        if (auth == NULL) {
            json_object_put(request);
            set_error(0, "out of memory", NULL);
            return NULL;
        }
        snprintf(auth, n, "Authorization: Bearer %s", opts->api_key);
    }
    char *text = exchange(client, client->endpoint, "POST",
                          json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN), auth, opts->timeout_ms);
    json_object_put(request);
    free(auth);
    if (text == NULL) {
        return NULL;
    }
    json_object *answer = json_tokener_parse(text);
    json_object *timestamp = NULL, *built = NULL;
    response_t *response = calloc(1, sizeof *response);
    if (answer == NULL || response == NULL || json_object_get_type(answer) != json_type_object) {
        set_error(0, "the answer is not a JSON object", text);
        json_object_put(answer);
        free(response);
        return NULL;
    }
    response->data = dup_field(answer, "data");
    response->commit = dup_field(answer, "commit");
    response->cache = dup_field(answer, "cache");
    if (json_object_object_get_ex(answer, "timestamp", &timestamp)) {
        response->timestamp = (long)json_object_get_int64(timestamp);
    }
    if (json_object_object_get_ex(answer, "built", &built)) {
        response->built = json_object_get_boolean(built);
    }
    response->json = text;
    json_object_put(answer);
    if (response->data == NULL) {
        set_error(0, "the answer has no data", strdup(text));
        free_response_t(response);
        return NULL;
    }
    return response;
}

void free_response_t(response_t *response) {
    if (response == NULL) {
        return;
    }
    free(response->data);
    free(response->commit);
    free(response->cache);
    free(response->json);
    free(response);
}

char *skyisland_admin(client_opt_t *client, const char *admin_token, const char *method, const char *path,
                      const char *body) {
    if (client == NULL || client->endpoint == NULL || method == NULL || path == NULL) {
        set_error(0, "client, client->endpoint, method and path must not be NULL", NULL);
        return NULL;
    }
    /* The server's base: the endpoint without its function path. */
    size_t base = strlen(client->endpoint);
    size_t suffix = strlen(FUNCTION_PATH);
    if (base >= suffix && strcmp(client->endpoint + base - suffix, FUNCTION_PATH) == 0) {
        base -= suffix;
    }
    size_t n = base + strlen(path) + 1;
    char *url = malloc(n);
    char *header = NULL;
    if (url == NULL) {
        set_error(0, "out of memory", NULL);
        return NULL;
    }
    memcpy(url, client->endpoint, base);
    strcpy(url + base, path);
    if (admin_token != NULL) {
        size_t h = strlen(admin_token) + sizeof "X-Sky-Island-Token: ";
        header = malloc(h);
        if (header == NULL) {
            free(url);
            set_error(0, "out of memory", NULL);
            return NULL;
        }
        snprintf(header, h, "X-Sky-Island-Token: %s", admin_token);
    }
    char *answer = exchange(client, url, method, body, header, 0);
    free(url);
    free(header);
    return answer;
}

char *skyisland_jails(client_opt_t *client, const char *admin_token) {
    return skyisland_admin(client, admin_token, "GET", "/api/v1/admin/jails", NULL);
}

char *skyisland_ips(client_opt_t *client, const char *admin_token) {
    return skyisland_admin(client, admin_token, "GET", "/api/v1/admin/ips", NULL);
}

char *skyisland_api_stats(client_opt_t *client, const char *admin_token) {
    return skyisland_admin(client, admin_token, "GET", "/api/v1/admin/api-stats", NULL);
}
