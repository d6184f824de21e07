/* Business days, in C (proves the ABI is language-neutral): the grant applies Monday to Friday
 * (UTC, from the input's `now`); on weekends the plugin abstains with a reason.
 * Build: clang --target=wasm32 -nostdlib -Wl,--no-entry -Wl,--strip-all -O2 -o weekdays.wasm weekdays.c */
typedef unsigned int u32;
typedef long long i64;

#define EXPORT(name) __attribute__((export_name(name)))
__attribute__((import_module("portcullis"), import_name("set_reason")))
void set_reason(const char *ptr, int len);

static unsigned char buf[64 * 1024];

EXPORT("portcullis_abi_version") int abi_version(void) { return 1; }

EXPORT("portcullis_alloc") int alloc(int len) {
    if (len < 0 || len > (int)sizeof buf) return 0;
    return (int)(unsigned long)buf;
}

static u32 rd32(const unsigned char *p) {
    return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

EXPORT("portcullis_evaluate") int evaluate(int ptr, int len) {
    const unsigned char *in = (const unsigned char *)(unsigned long)ptr;
    if (len < 112 || rd32(in) != 1) return 2; /* not a v1 input: deny */
    i64 now = (i64)((unsigned long long)rd32(in + 8) | (unsigned long long)rd32(in + 12) << 32);
    i64 days = now / 86400;
    if (now % 86400 < 0) days -= 1;
    int wd = (int)(((days % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday; 0 = Sunday */
    if (wd == 0 || wd == 6) {
        static const char r[] = "weekend: business-days role does not apply";
        set_reason(r, sizeof r - 1);
        return 0;
    }
    return 1;
}
