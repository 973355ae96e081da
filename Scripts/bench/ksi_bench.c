/*
 * ksi_bench.c - raw-C PKCS#11 baseline for the Swift ksi-bench.
 *
 * Measures what the Swift Keystore Interface (KSI) costs on top of direct
 * PKCS#11 calls: it runs the same operations against the same token, with the
 * same key handles, through the module's function list and nothing else. Each
 * loop issues exactly the C calls the Swift side issues for that operation, so
 * the difference between the two reports is the Swift layer's overhead
 * (e.g. marshalling, allocation, error mapping), not a difference in work.
 *
 *   wrap            one C_WrapKey(L1, target) into a 1040-byte buffer: the
 *                   Swift wrapKey also makes a single call with a 1040-byte
 *                   buffer (the sizing retry never fires for AES targets).
 *   unwrap_destroy  C_UnwrapKey(L1, blob) with the same session-key template
 *                   as the Swift side (no CKA_VALUE_LEN: the blob defines it,
 *                   and SoftHSM rejects the call when it is present), then
 *                   C_DestroyObject; the blob is the target wrapped once.
 *   probe           the noop handshake probe: read L1's attributes, query the
 *                   mechanism, generate a session test key, wrap it, unwrap a
 *                   copy, and check that both encrypt a random block alike
 *                   under AES-ECB, then destroy both keys.
 *
 * Each loop runs W unmeasured warm-up iterations, then N measured ones, each
 * timed on its own with CLOCK_MONOTONIC. One JSON line per loop goes to
 * stdout: ops_per_sec = N / (sum of iteration times), p50/p99 by nearest rank.
 *
 * Usage:
 *   ksi_bench --module PATH --token LABEL --pin-env NAME --key LABEL
 *             --target LABEL --iterations N [--warmup W] [--mechanism 0x210A]
 *
 * Build:
 *   gcc -O2 -std=c11 -Wall -Wextra -I/usr/include/p11-kit-1 \
 *       -o ksi_bench Scripts/bench/ksi_bench.c -ldl
 *
 * Exit status: 0 on success, 1 on a usage error, 2 on any runtime failure
 * (including any CKR other than CKR_OK, reported as "error: C_Xxx returned 0x..").
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

#define WRAP_BUFFER_LEN 1040    /* same fixed buffer as Session.wrapKey */
#define MAX_ITERATIONS 100000000UL

static CK_FUNCTION_LIST *p11;   /* set once the module is initialised */

/* ---- errors ------------------------------------------------------------- */

static void cleanup_and_exit(int status)
{
    if (p11 != NULL) {
        /* Best effort: closes the session and drops any session objects. */
        (void)p11->C_Finalize(NULL);
        p11 = NULL;
    }
    exit(status);
}

static void fail(const char *message, const char *detail)
{
    if (detail != NULL)
        fprintf(stderr, "error: %s%s\n", message, detail);
    else
        fprintf(stderr, "error: %s\n", message);
    cleanup_and_exit(2);
}

static inline void check(CK_RV rv, const char *function)
{
    if (rv != CKR_OK) {
        fprintf(stderr, "error: %s returned 0x%lx\n", function, (unsigned long)rv);
        cleanup_and_exit(2);
    }
}

/* CK(C_Xxx, args...) calls the module's C_Xxx and fails on anything but CKR_OK. */
#define CK(function, ...) check(p11->function(__VA_ARGS__), #function)

/* ---- command line ------------------------------------------------------- */

struct options {
    const char *module;
    const char *token;
    const char *pin_env;
    const char *key;
    const char *target;
    unsigned long iterations;
    unsigned long warmup;
    CK_MECHANISM_TYPE mechanism;
    const char *ops;   /* comma-separated loop names; all three by default */
};

/* Whether `name` is one of the comma-separated words of `list` (whole words: "wrap" must not
   match "unwrap_destroy"). */
static int wants(const char *list, const char *name)
{
    size_t length = strlen(name);
    for (const char *p = list; p != NULL && *p != '\0'; ) {
        const char *comma = strchr(p, ',');
        size_t word = comma ? (size_t)(comma - p) : strlen(p);
        if (word == length && strncmp(p, name, length) == 0)
            return 1;
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

static void usage(const char *problem)
{
    if (problem != NULL)
        fprintf(stderr, "error: %s\n", problem);
    fprintf(stderr,
            "usage: ksi_bench --module PATH --token LABEL --pin-env NAME --key LABEL\n"
            "                 --target LABEL --iterations N [--warmup W] [--mechanism 0x210A]\n"
            "                 [--ops wrap,unwrap_destroy,probe]\n");
    exit(1);
}

static unsigned long parse_ulong(const char *text, const char *option)
{
    char *end = NULL;
    errno = 0;
    unsigned long value = strtoul(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        fprintf(stderr, "error: %s needs a non-negative integer, got '%s'\n", option, text);
        usage(NULL);
    }
    return value;
}

static struct options parse_options(int argc, char **argv)
{
    struct options o = { .warmup = 200, .mechanism = CKM_AES_KEY_WRAP_PAD, .ops = "wrap,unwrap_destroy,probe" };
    int have_iterations = 0;

    for (int i = 1; i < argc; i += 2) {
        const char *name = argv[i];
        if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
            usage(NULL);
        if (i + 1 >= argc) {
            fprintf(stderr, "error: %s needs a value\n", name);
            usage(NULL);
        }
        const char *value = argv[i + 1];
        if (strcmp(name, "--module") == 0) {
            o.module = value;
        } else if (strcmp(name, "--token") == 0) {
            o.token = value;
        } else if (strcmp(name, "--pin-env") == 0) {
            o.pin_env = value;
        } else if (strcmp(name, "--key") == 0) {
            o.key = value;
        } else if (strcmp(name, "--target") == 0) {
            o.target = value;
        } else if (strcmp(name, "--iterations") == 0) {
            o.iterations = parse_ulong(value, name);
            have_iterations = 1;
        } else if (strcmp(name, "--warmup") == 0) {
            o.warmup = parse_ulong(value, name);
        } else if (strcmp(name, "--ops") == 0) {
            o.ops = value;
        } else if (strcmp(name, "--mechanism") == 0) {
            o.mechanism = parse_ulong(value, name);
        } else {
            fprintf(stderr, "error: unknown option '%s'\n", name);
            usage(NULL);
        }
    }

    if (o.module == NULL || o.token == NULL || o.pin_env == NULL || o.key == NULL ||
        o.target == NULL || !have_iterations)
        usage("--module, --token, --pin-env, --key, --target and --iterations are required");
    if (o.iterations < 1 || o.iterations > MAX_ITERATIONS)
        usage("--iterations must be between 1 and 100000000");
    if (o.warmup > MAX_ITERATIONS)
        usage("--warmup must be at most 100000000");
    if (strlen(o.token) > 32)
        usage("--token label is longer than 32 bytes");
    return o;
}

/* ---- setup -------------------------------------------------------------- */

static void *load_module(const char *path)
{
    void *library = dlopen(path, RTLD_NOW);
    if (library == NULL)
        fail("dlopen failed: ", dlerror());

    CK_C_GetFunctionList get_function_list;
    /* POSIX guarantees object-to-function pointer conversion for dlsym. */
    *(void **)&get_function_list = dlsym(library, "C_GetFunctionList");
    if (get_function_list == NULL)
        fail("module has no C_GetFunctionList: ", path);

    CK_FUNCTION_LIST *functions = NULL;
    check(get_function_list(&functions), "C_GetFunctionList");

    CK_C_INITIALIZE_ARGS args;
    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK;
    check(functions->C_Initialize(&args), "C_Initialize");
    p11 = functions;
    return library;
}

static CK_SLOT_ID find_token(const char *label)
{
    unsigned char padded[32];
    size_t length = strlen(label);
    memset(padded, ' ', sizeof padded);
    memcpy(padded, label, length);

    CK_ULONG count = 0;
    CK(C_GetSlotList, CK_TRUE, NULL, &count);
    CK_SLOT_ID *slots = calloc(count ? count : 1, sizeof *slots);
    if (slots == NULL)
        fail("out of memory", NULL);
    CK(C_GetSlotList, CK_TRUE, slots, &count);

    for (CK_ULONG i = 0; i < count; i++) {
        CK_TOKEN_INFO info;
        memset(&info, 0, sizeof info);
        CK(C_GetTokenInfo, slots[i], &info);
        if (memcmp(info.label, padded, sizeof padded) == 0) {
            CK_SLOT_ID slot = slots[i];
            free(slots);
            return slot;
        }
    }
    free(slots);
    fail("no token with label ", label);
    return 0; /* not reached */
}

static CK_OBJECT_HANDLE find_secret_key(CK_SESSION_HANDLE session, const char *label)
{
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
    CK_ATTRIBUTE query[] = {
        { CKA_CLASS, &secret, sizeof secret },
        { CKA_LABEL, (void *)label, strlen(label) },
    };
    CK_OBJECT_HANDLE found[2];
    CK_ULONG count = 0;

    CK(C_FindObjectsInit, session, query, 2);
    CK(C_FindObjects, session, found, 2, &count);
    CK(C_FindObjectsFinal, session);

    if (count == 0)
        fail("no secret key with label ", label);
    if (count > 1)
        fail("more than one secret key with label ", label);
    return found[0];
}

/* ---- templates (built once, never written by the module) ---------------- */

static CK_OBJECT_CLASS k_secret_key = CKO_SECRET_KEY;
static CK_KEY_TYPE k_aes = CKK_AES;
static CK_ULONG k_aes256_len = 32;
static CK_BBOOL k_true = CK_TRUE;
static CK_BBOOL k_false = CK_FALSE;

/* Session copy of an unwrapped key; the order matches the Swift template. */
static CK_ATTRIBUTE unwrap_template[] = {
    { CKA_CLASS, &k_secret_key, sizeof k_secret_key },
    { CKA_KEY_TYPE, &k_aes, sizeof k_aes },
    { CKA_TOKEN, &k_false, sizeof k_false },
    { CKA_PRIVATE, &k_true, sizeof k_true },
    { CKA_SENSITIVE, &k_true, sizeof k_true },
    { CKA_EXTRACTABLE, &k_false, sizeof k_false },
    { CKA_ENCRYPT, &k_true, sizeof k_true },
};

/* Probe test key: like the unwrap template, but sized and extractable. */
static CK_ATTRIBUTE test_key_template[] = {
    { CKA_CLASS, &k_secret_key, sizeof k_secret_key },
    { CKA_KEY_TYPE, &k_aes, sizeof k_aes },
    { CKA_VALUE_LEN, &k_aes256_len, sizeof k_aes256_len },
    { CKA_TOKEN, &k_false, sizeof k_false },
    { CKA_PRIVATE, &k_true, sizeof k_true },
    { CKA_SENSITIVE, &k_true, sizeof k_true },
    { CKA_EXTRACTABLE, &k_true, sizeof k_true },
    { CKA_ENCRYPT, &k_true, sizeof k_true },
};

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* ---- the three loop bodies ---------------------------------------------- */

struct bench {
    CK_SLOT_ID slot;
    CK_SESSION_HANDLE session;
    CK_OBJECT_HANDLE l1;
    CK_OBJECT_HANDLE target;
    CK_MECHANISM mechanism;
    unsigned char blob[WRAP_BUFFER_LEN];   /* target wrapped once, for unwrap_destroy */
    CK_ULONG blob_len;
};

static void op_wrap(struct bench *b)
{
    unsigned char out[WRAP_BUFFER_LEN];
    CK_ULONG out_len = sizeof out;
    CK(C_WrapKey, b->session, &b->mechanism, b->l1, b->target, out, &out_len);
}

static void op_unwrap_destroy(struct bench *b)
{
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK(C_UnwrapKey, b->session, &b->mechanism, b->l1, b->blob, b->blob_len,
       unwrap_template, COUNT(unwrap_template), &key);
    CK(C_DestroyObject, b->session, key);
}

static void op_probe(struct bench *b)
{
    /* a. L1 attributes, one call, preallocated buffers. */
    CK_ULONG cls = 0, key_type = 0, value_len = 0;
    CK_BBOOL can_wrap = CK_FALSE, can_unwrap = CK_FALSE;
    CK_ATTRIBUTE l1_attributes[] = {
        { CKA_CLASS, &cls, sizeof cls },
        { CKA_KEY_TYPE, &key_type, sizeof key_type },
        { CKA_VALUE_LEN, &value_len, sizeof value_len },
        { CKA_WRAP, &can_wrap, sizeof can_wrap },
        { CKA_UNWRAP, &can_unwrap, sizeof can_unwrap },
    };
    CK(C_GetAttributeValue, b->session, b->l1, l1_attributes, COUNT(l1_attributes));

    /* b. Mechanism info. */
    CK_MECHANISM_INFO info;
    memset(&info, 0, sizeof info);
    CK(C_GetMechanismInfo, b->slot, b->mechanism.mechanism, &info);

    /* c. Session test key. */
    CK_MECHANISM keygen = { CKM_AES_KEY_GEN, NULL, 0 };
    CK_OBJECT_HANDLE test_key = CK_INVALID_HANDLE;
    CK(C_GenerateKey, b->session, &keygen, test_key_template, COUNT(test_key_template), &test_key);

    /* d. Wrap it under L1. */
    unsigned char blob[WRAP_BUFFER_LEN];
    CK_ULONG blob_len = sizeof blob;
    CK(C_WrapKey, b->session, &b->mechanism, b->l1, test_key, blob, &blob_len);

    /* e. Unwrap a copy. */
    CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
    CK(C_UnwrapKey, b->session, &b->mechanism, b->l1, blob, blob_len,
       unwrap_template, COUNT(unwrap_template), &copy);

    /* f. Random block. */
    unsigned char block[16];
    CK(C_GenerateRandom, b->session, block, sizeof block);

    /* g, h. Encrypt it under both keys. */
    CK_MECHANISM ecb = { CKM_AES_ECB, NULL, 0 };
    unsigned char out1[16], out2[16];
    CK_ULONG out1_len = sizeof out1, out2_len = sizeof out2;
    CK(C_EncryptInit, b->session, &ecb, test_key);
    CK(C_Encrypt, b->session, block, sizeof block, out1, &out1_len);
    CK(C_EncryptInit, b->session, &ecb, copy);
    CK(C_Encrypt, b->session, block, sizeof block, out2, &out2_len);

    /* i. Both keys must be the same key. */
    if (out1_len != sizeof out1 || out2_len != sizeof out2 || memcmp(out1, out2, sizeof out1) != 0)
        fail("probe: the unwrapped copy does not encrypt like the generated key", NULL);

    /* j. Clean up. */
    CK(C_DestroyObject, b->session, copy);
    CK(C_DestroyObject, b->session, test_key);
}

/* ---- timing and report -------------------------------------------------- */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least `percent`% of samples <= it. */
static double percentile_us(const uint64_t *sorted, unsigned long n, unsigned percent)
{
    unsigned long rank = (unsigned long)(((unsigned long long)n * percent + 99) / 100);
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

static void run(const char *name, void (*op)(struct bench *), struct bench *b,
                unsigned long warmup, unsigned long iterations, uint64_t *samples)
{
    for (unsigned long i = 0; i < warmup; i++)
        op(b);

    uint64_t total = 0;
    for (unsigned long i = 0; i < iterations; i++) {
        uint64_t start = now_ns();
        op(b);
        uint64_t elapsed = now_ns() - start;
        samples[i] = elapsed;
        total += elapsed;
    }

    qsort(samples, iterations, sizeof *samples, compare_u64);
    double seconds = (double)total / 1e9;
    double ops_per_sec = seconds > 0 ? (double)iterations / seconds : 0.0;
    printf("{\"impl\":\"c\",\"op\":\"%s\",\"iterations\":%lu,\"ops_per_sec\":%.1f,"
           "\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           name, iterations, ops_per_sec,
           percentile_us(samples, iterations, 50), percentile_us(samples, iterations, 99));
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options o = parse_options(argc, argv);

    const char *pin = getenv(o.pin_env);
    if (pin == NULL) {
        fprintf(stderr, "error: environment variable %s (from --pin-env) is not set\n", o.pin_env);
        usage(NULL);
    }

    uint64_t *samples = malloc(o.iterations * sizeof *samples);
    if (samples == NULL)
        fail("out of memory", NULL);

    void *library = load_module(o.module);

    struct bench b;
    memset(&b, 0, sizeof b);
    b.slot = find_token(o.token);
    b.mechanism.mechanism = o.mechanism;
    b.mechanism.pParameter = NULL;
    b.mechanism.ulParameterLen = 0;

    CK(C_OpenSession, b.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &b.session);
    CK(C_Login, b.session, CKU_USER, (CK_UTF8CHAR *)pin, (CK_ULONG)strlen(pin));

    b.l1 = find_secret_key(b.session, o.key);
    b.target = find_secret_key(b.session, o.target);

    /* Blob for unwrap_destroy: the target wrapped once, outside any loop. */
    b.blob_len = sizeof b.blob;
    CK(C_WrapKey, b.session, &b.mechanism, b.l1, b.target, b.blob, &b.blob_len);

    if (wants(o.ops, "wrap"))
        run("wrap", op_wrap, &b, o.warmup, o.iterations, samples);
    if (wants(o.ops, "unwrap_destroy"))
        run("unwrap_destroy", op_unwrap_destroy, &b, o.warmup, o.iterations, samples);
    if (wants(o.ops, "probe"))
        run("probe", op_probe, &b, o.warmup, o.iterations, samples);

    CK(C_Logout, b.session);
    CK(C_CloseSession, b.session);
    CK_FUNCTION_LIST *functions = p11;
    p11 = NULL;   /* finalised below; keep the error path from finalising twice */
    check(functions->C_Finalize(NULL), "C_Finalize");

    free(samples);
    dlclose(library);
    return 0;
}
