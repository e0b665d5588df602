/*
 * ngx_http_keyscope_module: keyscope deciding inside nginx's workers.
 *
 * A thin nginx module over libkeyscope's C ABI (host/embed/include/
 * keyscope.h): the same handle, policy component, limits, swap thread and
 * fail-closed rules as the Lua integration and `keyscope serve`. This file
 * only reads the request the way nginx holds it, calls keyscope_decide, and
 * renders the answer the library built.
 *
 *     load_module modules/ngx_http_keyscope_module.so;
 *     http {
 *         keyscope_config /etc/keyscope/keyscope.toml;
 *         server {
 *             location /api/ { keyscope on; proxy_pass ...; }
 *             location = /_keyscope/status { keyscope_status; }
 *         }
 *     }
 *
 * docs/nginx-module.conf is a whole, tested configuration.
 *
 * Process model: libkeyscope is loaded with the module, but a handle is
 * opened only in each worker (init_process), after nginx forked it: the
 * master never starts wasmtime. A reload starts new workers, which open
 * their own handles; the old ones close theirs as they exit.
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "keyscope.h"

/* The most copies of one credential header lent without allocating. */
#define KEYSCOPE_STACK_COPIES 8

typedef struct {
    /* keyscope_config: the library's configuration file. */
    ngx_str_t  config;
} ngx_http_keyscope_main_conf_t;

typedef struct {
    /* keyscope on|off. */
    ngx_flag_t  enable;
} ngx_http_keyscope_loc_conf_t;

/* What was decided for a request, for the $keyscope_* variables. */
typedef struct {
    ngx_str_t  reason;
    ngx_str_t  key_id;
    ngx_str_t  scope_id;
} ngx_http_keyscope_ctx_t;

static ngx_int_t ngx_http_keyscope_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_keyscope_init(ngx_conf_t *cf);
static void *ngx_http_keyscope_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_keyscope_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_keyscope_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_keyscope_config(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_keyscope_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_keyscope_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_keyscope_is(ngx_table_elt_t *h, ngx_str_t *name);
static void ngx_http_keyscope_exit_process(ngx_cycle_t *cycle);

static ngx_command_t ngx_http_keyscope_commands[] = {

    { ngx_string("keyscope_config"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_keyscope_config,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_keyscope_main_conf_t, config),
      NULL },

    { ngx_string("keyscope"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_keyscope_loc_conf_t, enable),
      NULL },

    { ngx_string("keyscope_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_keyscope_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};

static ngx_http_module_t ngx_http_keyscope_module_ctx = {
    ngx_http_keyscope_add_variables,       /* preconfiguration */
    ngx_http_keyscope_init,                /* postconfiguration */
    ngx_http_keyscope_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */
    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */
    ngx_http_keyscope_create_loc_conf,     /* create location configuration */
    ngx_http_keyscope_merge_loc_conf       /* merge location configuration */
};

ngx_module_t ngx_http_keyscope_module = {
    NGX_MODULE_V1,
    &ngx_http_keyscope_module_ctx,         /* module context */
    ngx_http_keyscope_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_keyscope_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_keyscope_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};

/* This worker's handle: NULL before init_process, in the master, and when
 * it could not open (then every request is denied with 503). */
static keyscope_handle    *ngx_http_keyscope_handle;
/* Why it could not open, for the status location. */
static u_char              ngx_http_keyscope_open_error[1024];
/* One decision buffer per worker: a worker decides one request at a time. */
static keyscope_decision   ngx_http_keyscope_decision;
/* The error log reporter: what changed since its last look. */
static ngx_event_t         ngx_http_keyscope_reporter;
static ngx_connection_t    ngx_http_keyscope_reporter_conn;
static uint64_t            ngx_http_keyscope_last_generation;
static uint64_t            ngx_http_keyscope_last_errors;

static ngx_str_t  ngx_http_keyscope_api_key = ngx_string("x-api-key");
static ngx_str_t  ngx_http_keyscope_authorization = ngx_string("authorization");
static ngx_str_t  ngx_http_keyscope_key_id_header =
    ngx_string("X-Keyscope-Key-Id");
static ngx_str_t  ngx_http_keyscope_scope_id_header =
    ngx_string("X-Keyscope-Scope-Id");
static ngx_str_t  ngx_http_keyscope_unopened =
    ngx_string("{\"error\":\"unavailable\",\"reason\":\"policy-error\"}");
static ngx_str_t  ngx_http_keyscope_policy_error = ngx_string("policy-error");


static ngx_int_t
ngx_http_keyscope_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *value;
    ngx_http_keyscope_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_keyscope_module);
    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    value = (ngx_str_t *) ((char *) ctx + data);
    if (value->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = value->len;
    v->data = value->data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    return NGX_OK;
}


static ngx_http_variable_t ngx_http_keyscope_variables[] = {

    { ngx_string("keyscope_reason"), NULL, ngx_http_keyscope_variable,
      offsetof(ngx_http_keyscope_ctx_t, reason), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("keyscope_key_id"), NULL, ngx_http_keyscope_variable,
      offsetof(ngx_http_keyscope_ctx_t, key_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("keyscope_scope_id"), NULL, ngx_http_keyscope_variable,
      offsetof(ngx_http_keyscope_ctx_t, scope_id), NGX_HTTP_VAR_NOCACHEABLE,
      0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_keyscope_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_keyscope_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }
        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/* A copy of `text` (NUL-terminated, at most `cap` bytes) in the request's
 * pool. */
static ngx_int_t
ngx_http_keyscope_keep(ngx_http_request_t *r, ngx_str_t *to, const char *text,
    size_t cap)
{
    size_t  len;

    len = ngx_strnlen((u_char *) text, cap);
    if (len == 0) {
        ngx_str_null(to);
        return NGX_OK;
    }
    to->data = ngx_pnalloc(r->pool, len);
    if (to->data == NULL) {
        return NGX_ERROR;
    }
    ngx_memcpy(to->data, text, len);
    to->len = len;
    return NGX_OK;
}


/* Sets request header `name` to `value` for the upstream: every copy a
 * client sent is overwritten in place (removing one would move the
 * entries nginx's shortcuts point at), or one is added. `sent` is how many
 * id headers the client sent: with none, there is nothing to look for. */
static ngx_int_t
ngx_http_keyscope_set_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value, ngx_uint_t sent)
{
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    found = 0;
    for (part = sent ? &r->headers_in.headers.part : NULL; part;
         part = part->next)
    {
        h = part->elts;
        for (i = 0; i < part->nelts; i++) {
            if (ngx_http_keyscope_is(&h[i], name)) {
                h[i].value = *value;
                found = 1;
            }
        }
    }
    if (found) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->key = *name;
    h->value = *value;
    h->lowcase_key = ngx_pnalloc(r->pool, name->len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }
    h->hash = ngx_hash_strlow(h->lowcase_key, name->data, name->len);
    return NGX_OK;
}


/* Adds a response header. */
static ngx_table_elt_t *
ngx_http_keyscope_add_out_header(ngx_http_request_t *r, const char *name,
    const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NULL;
    }
    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.len = ngx_strlen(value);
    h->value.data = ngx_pnalloc(r->pool, h->value.len);
    if (h->value.data == NULL) {
        return NULL;
    }
    ngx_memcpy(h->value.data, value, h->value.len);
    return h;
}


/* Answers the request itself: `status`, `WWW-Authenticate` when given, and
 * the JSON body the library built (the reason, never the key). It never
 * reaches the upstream, and `satisfy any` cannot let it through. */
static ngx_int_t
ngx_http_keyscope_deny(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len, const char *challenge)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    if (ngx_http_keyscope_add_out_header(r, "Cache-Control", "no-store")
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (challenge != NULL && challenge[0] != '\0') {
        h = ngx_http_keyscope_add_out_header(r, "WWW-Authenticate", challenge);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        r->headers_out.www_authenticate = h;
    }

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    b->last = ngx_cpymem(b->last, body, len);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }
    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
    return NGX_DONE;
}


/* What one pass over a request's headers finds: every copy of the two
 * credential headers, lent (not copied) to the library, and how many
 * copies of the id headers a client sent. */
typedef struct {
    keyscope_bytes  *api_keys;
    size_t           api_keys_len;
    keyscope_bytes  *auths;
    size_t           auths_len;
    ngx_uint_t       id_headers;
} ngx_http_keyscope_read_t;


/* Whether header `h` is `name`, ignoring case and reading `_` as `-`: with
 * `underscores_in_headers on`, `X_Keyscope_Key_Id` reaches an upstream
 * whose `$http_` variables or CGI names read it as the real one. */
static ngx_int_t
ngx_http_keyscope_is(ngx_table_elt_t *h, ngx_str_t *name)
{
    u_char      a, b;
    ngx_uint_t  i;

    if (h->key.len != name->len) {
        return 0;
    }
    for (i = 0; i < name->len; i++) {
        a = ngx_tolower(h->key.data[i]);
        b = ngx_tolower(name->data[i]);
        if (a == '_') {
            a = '-';
        }
        if (a != b) {
            return 0;
        }
    }
    return 1;
}


/* Reads the request's headers in one pass into `read`, lending the copies
 * through `keys` and `auths` (`cap` entries each). A request with more
 * copies than that gets arrays from its pool, and a second pass. */
static ngx_int_t
ngx_http_keyscope_read(ngx_http_request_t *r, ngx_http_keyscope_read_t *seen,
    keyscope_bytes *keys, keyscope_bytes *auths, size_t cap)
{
    size_t            keys_cap, auths_cap;
    ngx_uint_t        i, pass;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    keys_cap = cap;
    auths_cap = cap;
    seen->api_keys = keys;
    seen->auths = auths;
    for (pass = 0; pass < 2; pass++) {
        seen->api_keys_len = 0;
        seen->auths_len = 0;
        seen->id_headers = 0;
        for (part = &r->headers_in.headers.part; part; part = part->next) {
            h = part->elts;
            for (i = 0; i < part->nelts; i++) {
                if (ngx_http_keyscope_is(&h[i], &ngx_http_keyscope_api_key)) {
                    if (seen->api_keys_len < keys_cap) {
                        seen->api_keys[seen->api_keys_len].ptr = h[i].value.data;
                        seen->api_keys[seen->api_keys_len].len = h[i].value.len;
                    }
                    seen->api_keys_len++;

                } else if (ngx_http_keyscope_is(&h[i],
                                                &ngx_http_keyscope_authorization))
                {
                    if (seen->auths_len < auths_cap) {
                        seen->auths[seen->auths_len].ptr = h[i].value.data;
                        seen->auths[seen->auths_len].len = h[i].value.len;
                    }
                    seen->auths_len++;

                } else if (ngx_http_keyscope_is(&h[i],
                                                &ngx_http_keyscope_key_id_header)
                           || ngx_http_keyscope_is(&h[i],
                                              &ngx_http_keyscope_scope_id_header))
                {
                    seen->id_headers++;
                }
            }
        }
        if (seen->api_keys_len <= keys_cap && seen->auths_len <= auths_cap) {
            return NGX_OK;
        }
        /* More copies than the buffers hold: lend them all from arrays of
         * their own. */
        if (seen->api_keys_len > keys_cap) {
            keys_cap = seen->api_keys_len;
            seen->api_keys = ngx_palloc(r->pool, keys_cap * sizeof(keyscope_bytes));
        }
        if (seen->auths_len > auths_cap) {
            auths_cap = seen->auths_len;
            seen->auths = ngx_palloc(r->pool, auths_cap * sizeof(keyscope_bytes));
        }
        if (seen->api_keys == NULL || seen->auths == NULL) {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


static ngx_int_t
ngx_http_keyscope_handler(ngx_http_request_t *r)
{
    keyscope_bytes                 api_keys[KEYSCOPE_STACK_COPIES];
    keyscope_bytes                 auths[KEYSCOPE_STACK_COPIES];
    keyscope_request               request;
    keyscope_decision             *d;
    ngx_http_keyscope_read_t       seen;
    ngx_http_keyscope_ctx_t       *ctx;
    ngx_http_keyscope_loc_conf_t  *klcf;

    klcf = ngx_http_get_module_loc_conf(r, ngx_http_keyscope_module);
    if (!klcf->enable) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_keyscope_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_keyscope_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        ngx_http_set_ctx(r, ctx, ngx_http_keyscope_module);
    }

    if (ngx_http_keyscope_handle == NULL) {
        ctx->reason = ngx_http_keyscope_policy_error;
        return ngx_http_keyscope_deny(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      ngx_http_keyscope_unopened.data,
                                      ngx_http_keyscope_unopened.len, NULL);
    }

    if (ngx_http_keyscope_read(r, &seen, api_keys, auths,
                               KEYSCOPE_STACK_COPIES) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    request.api_keys = seen.api_keys;
    request.api_keys_len = seen.api_keys_len;
    request.authorizations = seen.auths;
    request.authorizations_len = seen.auths_len;
    request.method.ptr = r->method_name.data;
    request.method.len = r->method_name.len;
    /* $request_uri: the path with its query, as the client sent it. */
    request.path.ptr = r->unparsed_uri.data;
    request.path.len = r->unparsed_uri.len;

    d = &ngx_http_keyscope_decision;
    /* A refused argument leaves a deny with policy-error in `d`. */
    (void) keyscope_decide(ngx_http_keyscope_handle, &request, d);

    if (ngx_http_keyscope_keep(r, &ctx->reason, d->reason, sizeof(d->reason))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (d->allow == 1 && d->has_ids == 1) {
        if (ngx_http_keyscope_keep(r, &ctx->key_id, d->key_id_text,
                                   sizeof(d->key_id_text)) != NGX_OK
            || ngx_http_keyscope_keep(r, &ctx->scope_id, d->scope_id_text,
                                      sizeof(d->scope_id_text)) != NGX_OK
            || ngx_http_keyscope_set_header(r, &ngx_http_keyscope_key_id_header,
                                            &ctx->key_id, seen.id_headers)
               != NGX_OK
            || ngx_http_keyscope_set_header(r,
                                            &ngx_http_keyscope_scope_id_header,
                                            &ctx->scope_id, seen.id_headers)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        return NGX_OK;
    }

    /* Fail closed: anything but a whole allow is a deny, with the status
     * the library chose (401, 403 or 503). */
    return ngx_http_keyscope_deny(r,
                                  d->allow == 1 ? NGX_HTTP_SERVICE_UNAVAILABLE
                                                : d->status,
                                  (u_char *) d->body,
                                  ngx_min(d->body_len, sizeof(d->body) - 1),
                                  d->www_authenticate);
}


/* The keyscope_status location: this worker's handle as JSON, the same
 * document as the Lua integration's /_keyscope/status. */
static ngx_int_t
ngx_http_keyscope_status_handler(ngx_http_request_t *r)
{
    size_t        len, cap, error_len;
    u_char       *p;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }
    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    len = 0;
    if (ngx_http_keyscope_handle != NULL) {
        len = keyscope_status_json(ngx_http_keyscope_handle, NULL, 0);
    }
    error_len = ngx_strlen(ngx_http_keyscope_open_error);
    /* What escaping the error adds, counted, not guessed. */
    cap = len + sizeof("{\"pid\":,\"open\":false,\"error\":\"\",\"status\":}")
          + NGX_INT_T_LEN + error_len
          + ngx_escape_json(NULL, ngx_http_keyscope_open_error, error_len);
    b = ngx_create_temp_buf(r->pool, cap);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    p = b->last;
    if (ngx_http_keyscope_handle == NULL) {
        p = ngx_sprintf(p, "{\"pid\":%P,\"open\":false,\"error\":\"", ngx_pid);
        p = (u_char *) ngx_escape_json(p, ngx_http_keyscope_open_error,
                                       error_len);
        p = ngx_cpymem(p, "\"}", 2);
        r->headers_out.status = NGX_HTTP_SERVICE_UNAVAILABLE;
    } else {
        p = ngx_sprintf(p, "{\"pid\":%P,\"open\":true,\"status\":", ngx_pid);
        /* The JSON and its NUL; the NUL is overwritten below. */
        if (keyscope_status_json(ngx_http_keyscope_handle, (char *) p, len + 1)
            != len)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        p += len;
        *p++ = '}';
        r->headers_out.status = NGX_HTTP_OK;
    }
    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    if (ngx_http_keyscope_add_out_header(r, "Cache-Control", "no-store")
        == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }
    out.buf = b;
    out.next = NULL;
    return ngx_http_output_filter(r, &out);
}


/* keyscope_config PATH: a relative path is nginx's prefix's, as the
 * logs' and the pid file's are. */
static char *
ngx_http_keyscope_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                           *rv;
    ngx_http_keyscope_main_conf_t  *kmcf = conf;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }
    if (kmcf->config.len == 0) {
        return "needs a path";
    }
    if (ngx_conf_full_name(cf->cycle, &kmcf->config, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}


static char *
ngx_http_keyscope_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_keyscope_status_handler;
    return NGX_CONF_OK;
}


static void *
ngx_http_keyscope_create_main_conf(ngx_conf_t *cf)
{
    /* ngx_pcalloc: `config` starts empty (unset). */
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_keyscope_main_conf_t));
}


static void *
ngx_http_keyscope_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_keyscope_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_keyscope_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }
    conf->enable = NGX_CONF_UNSET;
    return conf;
}


static char *
ngx_http_keyscope_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_keyscope_loc_conf_t   *prev = parent;
    ngx_http_keyscope_loc_conf_t   *conf = child;
    ngx_http_keyscope_main_conf_t  *kmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);

    kmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_keyscope_module);
    if (conf->enable && kmcf->config.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"keyscope on\" needs \"keyscope_config\" "
                           "(the path of keyscope.toml) in the http block");
        return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}


/* nginx runs no access handler for a subrequest (auth_request, SSI
 * includes, mirror): one that lands in a `keyscope on` location was never
 * decided, so it is refused here, before its content handler (fail
 * closed). A main request was decided in the access phase. */
static ngx_int_t
ngx_http_keyscope_subrequest_handler(ngx_http_request_t *r)
{
    ngx_http_keyscope_loc_conf_t  *klcf;

    if (r == r->main) {
        return NGX_DECLINED;
    }
    klcf = ngx_http_get_module_loc_conf(r, ngx_http_keyscope_module);
    if (!klcf->enable) {
        return NGX_DECLINED;
    }
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "keyscope: a subrequest to \"%V\" is denied: keyscope "
                  "decides only a client's own requests", &r->uri);
    return NGX_HTTP_FORBIDDEN;
}


static ngx_int_t
ngx_http_keyscope_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    *h = ngx_http_keyscope_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    *h = ngx_http_keyscope_subrequest_handler;
    return NGX_OK;
}


/* Says in the error log what changed since the last look: a generation
 * gone live, or a new error (never a key: the library has none to say). */
static void
ngx_http_keyscope_report(ngx_event_t *ev)
{
    u_char          *p;
    keyscope_status  status;

    if (ngx_http_keyscope_handle == NULL || ngx_exiting || ngx_terminate
        || ngx_quit)
    {
        return;
    }
    if (keyscope_get_status(ngx_http_keyscope_handle, &status) == 0) {
        if (status.generation != ngx_http_keyscope_last_generation) {
            /* The first 12 hex digits of each digest (NUL-terminated
             * texts, empty in a forked child). */
            status.module_digest[12] = '\0';
            status.snapshot_digest[12] = '\0';
            ngx_log_error(NGX_LOG_NOTICE, ev->log, 0,
                          "keyscope: generation %uL live (module %s, "
                          "snapshot %s, %uL keys)",
                          status.generation, status.module_digest,
                          status.snapshot_digest, status.keys);
            ngx_http_keyscope_last_generation = status.generation;
        }
        if (status.errors != ngx_http_keyscope_last_errors) {
            status.last_error[sizeof(status.last_error) - 1] = '\0';
            for (p = (u_char *) status.last_error; *p; p++) {
                if (*p < 0x20 || *p == 0x7f) {
                    *p = '?';
                }
            }
            ngx_log_error(NGX_LOG_WARN, ev->log, 0, "keyscope: %s",
                          status.last_error);
            ngx_http_keyscope_last_errors = status.errors;
        }
    }
    ngx_add_timer(ev, 1000);
}


/* The open error with its control bytes made `?`: it is logged with %s
 * and may quote a configuration's text, which must not forge log lines. */
static void
ngx_http_keyscope_plain_error(void)
{
    u_char  *p;

    for (p = ngx_http_keyscope_open_error; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            *p = '?';
        }
    }
}


static ngx_int_t
ngx_http_keyscope_init_process(ngx_cycle_t *cycle)
{
    char                           *path;
    uint32_t                        abi;
    ngx_http_keyscope_main_conf_t  *kmcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }
    kmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_keyscope_module);
    if (kmcf == NULL || kmcf->config.len == 0) {
        return NGX_OK;
    }

    abi = keyscope_abi_version();
    if (abi != KEYSCOPE_ABI_VERSION) {
        (void) ngx_snprintf(ngx_http_keyscope_open_error,
                            sizeof(ngx_http_keyscope_open_error) - 1,
                            "the module speaks ABI %uD but libkeyscope "
                            "speaks %uD%Z", (uint32_t) KEYSCOPE_ABI_VERSION,
                            abi);
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "keyscope: cannot open: %s; every request is denied",
                      ngx_http_keyscope_open_error);
        return NGX_OK;
    }

    path = ngx_pnalloc(cycle->pool, kmcf->config.len + 1);
    if (path == NULL) {
        return NGX_ERROR;
    }
    (void) ngx_cpystrn((u_char *) path, kmcf->config.data,
                       kmcf->config.len + 1);

    ngx_http_keyscope_handle = keyscope_open(
        path, (char *) ngx_http_keyscope_open_error,
        sizeof(ngx_http_keyscope_open_error));
    ngx_http_keyscope_open_error[sizeof(ngx_http_keyscope_open_error) - 1] = '\0';
    if (ngx_http_keyscope_handle == NULL) {
        ngx_http_keyscope_plain_error();
        /* A worker that cannot open keeps running and denies every request
         * with 503: fail closed, and the reason is here and in the status
         * location. */
        ngx_log_error(NGX_LOG_ERR, cycle->log, 0,
                      "keyscope: cannot open: %s; every request is denied",
                      ngx_http_keyscope_open_error);
        return NGX_OK;
    }

    ngx_http_keyscope_reporter_conn.fd = (ngx_socket_t) -1;
    ngx_http_keyscope_reporter.data = &ngx_http_keyscope_reporter_conn;
    ngx_http_keyscope_reporter.handler = ngx_http_keyscope_report;
    ngx_http_keyscope_reporter.log = cycle->log;
    /* The timer never holds a stopping worker back. */
    ngx_http_keyscope_reporter.cancelable = 1;
    ngx_http_keyscope_report(&ngx_http_keyscope_reporter);
    return NGX_OK;
}


static void
ngx_http_keyscope_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_keyscope_handle != NULL) {
        keyscope_close(ngx_http_keyscope_handle);
        ngx_http_keyscope_handle = NULL;
    }
}
