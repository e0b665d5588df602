-- keyscope inside nginx: each worker process decides with libkeyscope, the
-- same sandboxed policy component as `keyscope serve`, through LuaJIT's FFI.
-- No second HTTP exchange per request.
--
--   init_worker_by_lua_block {
--       require("keyscope").init{ library = "/path/libkeyscope.so",
--                                 config = "/path/keyscope.toml" }
--   }
--   location / { access_by_lua_block { require("keyscope").access() } ... }
--
-- docs/nginx-embedded.conf is a whole, tested configuration; docs/embedding.md
-- says when to choose this over auth_request.

local ffi = require("ffi")

local M = {}

-- The declarations of host/embed/include/keyscope.h (its preprocessor lines
-- and comments left out); tests/embedded.rs checks that they match.
ffi.cdef[[
typedef struct keyscope_handle keyscope_handle;
typedef struct keyscope_bytes {
  const uint8_t *ptr;
  size_t len;
} keyscope_bytes;
typedef struct keyscope_request {
  const struct keyscope_bytes *api_keys;
  size_t api_keys_len;
  const struct keyscope_bytes *authorizations;
  size_t authorizations_len;
  struct keyscope_bytes method;
  struct keyscope_bytes path;
} keyscope_request;
typedef struct keyscope_decision {
  uint8_t allow;
  uint8_t has_ids;
  uint16_t status;
  uint32_t body_len;
  uint64_t generation;
  uint64_t key_id;
  uint64_t scope_id;
  char reason[32];
  char www_authenticate[64];
  char key_id_text[24];
  char scope_id_text[24];
  char body[256];
} keyscope_decision;
typedef struct keyscope_status {
  uint64_t generation;
  uint64_t loaded_at_ms;
  uint64_t snapshot_revision;
  uint64_t snapshot_age_ms;
  uint64_t keys;
  uint64_t decisions;
  uint64_t swaps;
  uint64_t swaps_refused;
  uint64_t policy_errors;
  uint64_t errors;
  uint8_t has_snapshot_revision;
  uint8_t has_snapshot_age;
  uint8_t stale;
  char source[16];
  char module_digest[65];
  char snapshot_digest[65];
  char last_error[512];
} keyscope_status;
uint32_t keyscope_abi_version(void);
struct keyscope_handle *keyscope_open(const char *config_path, char *error, size_t error_cap);
int32_t keyscope_decide(const struct keyscope_handle *handle,
                        const struct keyscope_request *request,
                        struct keyscope_decision *out);
int32_t keyscope_get_status(const struct keyscope_handle *handle, struct keyscope_status *out);
size_t keyscope_status_json(const struct keyscope_handle *handle, char *buffer, size_t cap);
void keyscope_close(struct keyscope_handle *handle);
]]

local ABI_VERSION = 1
local MAX_COPIES = 16

local ngx = ngx
local get_headers, get_method, set_header = ngx.req.get_headers, ngx.req.get_method, ngx.req.set_header
local ffi_string = ffi.string
local var = ngx.var

local lib, handle, decide, opened_error
local options = {
    api_key_header = "x-api-key",
    key_id_header = "X-Keyscope-Key-Id",
    scope_id_header = "X-Keyscope-Scope-Id",
}

-- Per worker, reused by every request: nothing is allocated per call.
local decision = ffi.new("keyscope_decision")
local request = ffi.new("keyscope_request")
local api_keys = ffi.new("keyscope_bytes[?]", MAX_COPIES)
local authorizations = ffi.new("keyscope_bytes[?]", MAX_COPIES)
local status = ffi.new("keyscope_status")

-- Lends every copy of one header to `buffer`; a longer list than the
-- buffer gets an array of its own.
local function lend(buffer, value)
    if value == nil then
        return buffer, 0
    end
    if type(value) == "string" then
        buffer[0].ptr = value
        buffer[0].len = #value
        return buffer, 1
    end
    local n = #value
    if n > MAX_COPIES then
        buffer = ffi.new("keyscope_bytes[?]", n)
    end
    for i = 1, n do
        buffer[i - 1].ptr = value[i]
        buffer[i - 1].len = #value[i]
    end
    return buffer, n
end

-- Says in nginx's error log what changed since the last look: a new
-- generation, or a new error (never a key: the library has none to say).
local last_generation, last_errors = 0, 0
local function report(premature)
    if premature or handle == nil then
        return
    end
    if lib.keyscope_get_status(handle, status) ~= 0 then
        return
    end
    local generation = tonumber(status.generation)
    if generation ~= last_generation then
        ngx.log(ngx.NOTICE, "keyscope: generation ", generation, " live (module ",
            ffi.string(status.module_digest):sub(1, 12), ", snapshot ",
            ffi.string(status.snapshot_digest):sub(1, 12), ", ", tonumber(status.keys), " keys)")
        last_generation = generation
    end
    local errors = tonumber(status.errors)
    if errors ~= last_errors then
        ngx.log(ngx.WARN, "keyscope: ", ffi.string(status.last_error))
        last_errors = errors
    end
end

-- Opens this worker's handle. Call it from init_worker_by_lua*: nginx forks
-- its workers after init_by_lua*, and a handle opened before the fork would
-- deny every request. Options: `library` (path of libkeyscope.so), `config`
-- (path of keyscope.toml), and the header names `api_key_header`,
-- `key_id_header`, `scope_id_header`. A handle that cannot open is logged,
-- and every request is then denied with 503.
function M.init(opts)
    local phase = ngx.get_phase()
    if phase ~= "init_worker" then
        error("keyscope.init runs in init_worker_by_lua*, not in phase `" .. phase
            .. "`: nginx forks its workers after init_by_lua*, and a handle opened before "
            .. "the fork denies every request", 2)
    end
    assert(type(opts) == "table" and type(opts.config) == "string",
        "keyscope.init{ config = \"/path/keyscope.toml\" } needs `config`")
    for name, value in pairs(opts) do
        if options[name] ~= nil then
            options[name] = value
        end
    end
    lib = ffi.load(opts.library or "keyscope")
    local abi = lib.keyscope_abi_version()
    if abi ~= ABI_VERSION then
        error("keyscope.lua speaks ABI " .. ABI_VERSION .. " but the library speaks " .. abi, 2)
    end
    local message = ffi.new("char[1024]")
    local opened = lib.keyscope_open(opts.config, message, 1024)
    if opened == nil then
        opened_error = ffi.string(message)
        ngx.log(ngx.ERR, "keyscope: cannot open: ", opened_error, "; every request is denied")
        return nil, opened_error
    end
    handle = ffi.gc(opened, lib.keyscope_close)
    decide = lib.keyscope_decide
    report(false)
    local ok, err = ngx.timer.every(1, report)
    if not ok then
        ngx.log(ngx.ERR, "keyscope: no status timer: ", err)
    end
    return true
end

local function deny(code, body, challenge)
    ngx.status = code
    if challenge ~= nil and challenge ~= "" then
        ngx.header["WWW-Authenticate"] = challenge
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(body)
    return ngx.exit(code)
end

-- The access handler: allows the request (with the key's and scope's ids
-- set for the upstream, over any a client sent) or answers it with 401,
-- 403 or 503, `WWW-Authenticate` for a 401, and a JSON body that names the
-- reason and never holds the key.
function M.access()
    if handle == nil then
        return deny(503, '{"error":"unavailable","reason":"policy-error"}')
    end
    -- Every header: nginx's limit of 100 would hide a later copy of the key.
    local headers = get_headers(0)
    local keys_buffer, keys_len = lend(api_keys, headers[options.api_key_header])
    local auth_buffer, auth_len = lend(authorizations, headers["authorization"])
    local method = get_method()
    local path = var.request_uri
    request.api_keys = keys_buffer
    request.api_keys_len = keys_len
    request.authorizations = auth_buffer
    request.authorizations_len = auth_len
    request.method.ptr = method
    request.method.len = #method
    request.path.ptr = path
    request.path.len = #path
    decide(handle, request, decision)
    -- `headers`, `method` and `path` stay referenced until here, so the
    -- bytes lent above outlive the call.
    if decision.allow == 1 then
        set_header(options.key_id_header, ffi_string(decision.key_id_text))
        set_header(options.scope_id_header, ffi_string(decision.scope_id_text))
        return
    end
    return deny(decision.status, ffi_string(decision.body, decision.body_len),
        ffi_string(decision.www_authenticate))
end

-- A content handler for a status location: this worker's handle as JSON
-- (generation, digests, revision, age, swaps, errors) and its pid.
function M.status()
    ngx.header["Content-Type"] = "application/json"
    if handle == nil then
        ngx.status = 503
        ngx.print('{"pid":', ngx.worker.pid(), ',"open":false}')
        return
    end
    local length = tonumber(lib.keyscope_status_json(handle, nil, 0))
    local buffer = ffi.new("char[?]", length + 1)
    lib.keyscope_status_json(handle, buffer, length + 1)
    ngx.print('{"pid":', ngx.worker.pid(), ',"open":true,"status":', ffi.string(buffer, length), '}')
end

return M
