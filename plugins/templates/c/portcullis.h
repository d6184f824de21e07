/* Portcullis plugin ABI v1 for C (clang --target=wasm32). Written by `portcullis plugin new`.
 * Defines the buffer and the exports portcullis_abi_version, portcullis_alloc and
 * portcullis_evaluate; the plugin defines `int evaluate(const pc_input *in)` returning
 * PC_ABSTAIN, PC_ALLOW or PC_DENY. Readers follow the input layout (112-byte header). */
#ifndef PORTCULLIS_H
#define PORTCULLIS_H

typedef unsigned int u32;
typedef long long i64;

enum { PC_ABSTAIN = 0, PC_ALLOW = 1, PC_DENY = 2 };

/* A string of the input: `len` bytes at `ptr`, not NUL-terminated. */
typedef struct { const char *ptr; u32 len; } pc_str;
typedef struct { const unsigned char *b; u32 len; } pc_input;

__attribute__((import_module("portcullis"), import_name("set_reason")))
void portcullis_set_reason(const char *ptr, int len);

static inline u32 pc_u32(const pc_input *in, u32 off) {
    if (off + 4 > in->len) return 0;
    const unsigned char *p = in->b + off;
    return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}
/* The string ref at `off` (empty when out of bounds). */
static inline pc_str pc_ref(const pc_input *in, u32 off) {
    u32 o = pc_u32(in, off), l = pc_u32(in, off + 4);
    pc_str s = {"", 0};
    if (o <= in->len && l <= in->len - o) { s.ptr = (const char *)in->b + o; s.len = l; }
    return s;
}
static inline i64 pc_now(const pc_input *in) {
    return (i64)((unsigned long long)pc_u32(in, 8) | (unsigned long long)pc_u32(in, 12) << 32);
}
#define PC_TENANT 16
#define PC_SUBJECT 24
#define PC_ACTION_RESOURCE 32
#define PC_VERB 40
#define PC_RESOURCE 48
#define PC_ROLE 56
#define PC_SCOPE 64
#define PC_CONTEXT_JSON 72
static inline pc_str pc_field(const pc_input *in, u32 off) { return pc_ref(in, off); }

/* Whether `s` equals the NUL-terminated `lit`. */
static inline int pc_eq(pc_str s, const char *lit) {
    u32 i = 0;
    for (; i < s.len; i++) if (lit[i] != s.ptr[i] || lit[i] == 0) return 0;
    return lit[i] == 0;
}
/* Value of the key/value entry `key` in the table at header offset `table` (88: subject
 * attributes, 96: context members — top-level strings and numbers). `found` says whether. */
static inline pc_str pc_find(const pc_input *in, u32 table, const char *key, int *found) {
    u32 at = pc_u32(in, table), n = pc_u32(in, table + 4);
    pc_str none = {"", 0};
    *found = 0;
    for (u32 i = 0; i < n && at + 16 * (i + 1) <= in->len; i++) {
        if (pc_eq(pc_ref(in, at + 16 * i), key)) { *found = 1; return pc_ref(in, at + 16 * i + 8); }
    }
    return none;
}
static inline pc_str pc_context(const pc_input *in, const char *key, int *found) { return pc_find(in, 96, key, found); }
static inline pc_str pc_attr(const pc_input *in, const char *key, int *found) { return pc_find(in, 88, key, found); }

/* UTC hour (0-23) of unix seconds. */
static inline int pc_hour(i64 t) { i64 s = t % 86400; if (s < 0) s += 86400; return (int)(s / 3600); }

__attribute__((import_module("portcullis"), import_name("debug_log")))
void portcullis_debug_log(const char *ptr, int len);

/* Print-style debugging (logged by the server only for tenants in plugins.debug_log_tenants,
 * rate-limited; always printed by `portcullis plugin eval`). */
static inline void pc_debug(const char *lit) {
    int n = 0;
    while (lit[n]) n++;
    portcullis_debug_log(lit, n);
}

static inline void pc_reason(const char *lit) {
    int n = 0;
    while (lit[n]) n++;
    portcullis_set_reason(lit, n);
}

int evaluate(const pc_input *in);

static unsigned char pc_buf[64 * 1024];
__attribute__((export_name("portcullis_abi_version"))) int pc_abi_version(void) { return 1; }
__attribute__((export_name("portcullis_alloc"))) int pc_alloc(int len) {
    if (len < 0 || len > (int)sizeof pc_buf) return 0;
    return (int)(unsigned long)pc_buf;
}
__attribute__((export_name("portcullis_evaluate"))) int pc_evaluate(int ptr, int len) {
    pc_input in = {(const unsigned char *)(unsigned long)ptr, (u32)len};
    if (len < 112 || pc_u32(&in, 0) != 1) return PC_DENY; /* not a v1 input */
    return evaluate(&in);
}
#endif
