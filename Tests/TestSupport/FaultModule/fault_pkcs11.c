/*
 * A fault-injecting PKCS#11 module for the tests: it forwards every call to a real module
 * (SoftHSM) and, when told to, makes the Nth call of one function fail, hang or crash.
 *
 * Why a shim over the real module rather than a fake: the session pool's recovery must be
 * tested against real sessions, real logins and real key handles; only the failure is made up.
 *
 * Environment (read on every call, so a child process can be given its own):
 *   OPENKCM_FAULT_MODULE   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   OPENKCM_FAULT_CONTROL  a control file, read again on every call, so a test can change the
 *                          fault mid-run. One rule per line, '#' starts a comment:
 *                              <C_function> <N>[+] <action>
 *                          N: the Nth call of that function counted since the control file last
 *                          changed (N+: the Nth and every later one). Actions: a CKR name
 *                          without the prefix (DEVICE_ERROR, SESSION_HANDLE_INVALID,
 *                          TOKEN_NOT_PRESENT, PIN_INCORRECT, OBJECT_HANDLE_INVALID, ...) or a
 *                          hex code (0x30), returned instead of calling the real module;
 *                          hang:<seconds> (sleeps, then forwards); abort; segfault.
 *   OPENKCM_FAULT_COUNTS   a counts file, rewritten after every call: "<C_function> <calls>"
 *                          per line, counted since the control file last changed, so a test
 *                          that writes a new control file (with a fresh comment line) starts
 *                          from zero and can assert "tried exactly once".
 *
 * Built by the tests (TestSupport/FaultModule.swift) with gcc; not part of any SwiftPM target.
 */
#include <p11-kit/pkcs11.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_RULES 16
#define MAX_FUNCTIONS 80
#define CONTROL_MAX 4096

struct rule {
    char function[48];
    unsigned long nth;
    int and_later;
    enum { ACT_RETURN, ACT_HANG, ACT_ABORT, ACT_SEGFAULT } action;
    CK_RV rv;
    unsigned seconds;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST_PTR real = NULL;
static char control_text[CONTROL_MAX];
static int control_seen = 0;
static struct rule rules[MAX_RULES];
static int rule_count = 0;
static const char *names[MAX_FUNCTIONS];
static unsigned long counts[MAX_FUNCTIONS];
static int name_count = 0;

static const struct { const char *name; CK_RV rv; } codes[] = {
    {"OK", CKR_OK},
    {"GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"ARGUMENTS_BAD", CKR_ARGUMENTS_BAD},
    {"SLOT_ID_INVALID", CKR_SLOT_ID_INVALID},
    {"DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"KEY_FUNCTION_NOT_PERMITTED", CKR_KEY_FUNCTION_NOT_PERMITTED},
    {"MECHANISM_INVALID", CKR_MECHANISM_INVALID},
    {"OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"PIN_LOCKED", CKR_PIN_LOCKED},
    {"PIN_EXPIRED", CKR_PIN_EXPIRED},
    {"SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"SESSION_COUNT", CKR_SESSION_COUNT},
    {"SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"UNWRAPPING_KEY_HANDLE_INVALID", CKR_UNWRAPPING_KEY_HANDLE_INVALID},
    {"USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"WRAPPING_KEY_HANDLE_INVALID", CKR_WRAPPING_KEY_HANDLE_INVALID},
    {"CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
};

static int parse_action(const char *text, struct rule *rule) {
    if (strncmp(text, "hang:", 5) == 0) {
        rule->action = ACT_HANG;
        rule->seconds = (unsigned)strtoul(text + 5, NULL, 10);
        return 1;
    }
    if (strcmp(text, "abort") == 0) { rule->action = ACT_ABORT; return 1; }
    if (strcmp(text, "segfault") == 0) { rule->action = ACT_SEGFAULT; return 1; }
    rule->action = ACT_RETURN;
    if (strncmp(text, "0x", 2) == 0) { rule->rv = strtoul(text, NULL, 16); return 1; }
    if (strncmp(text, "CKR_", 4) == 0) text += 4;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        if (strcmp(text, codes[i].name) == 0) { rule->rv = codes[i].rv; return 1; }
    }
    return 0;
}

/* Caller holds the lock. A changed control file replaces the rules and starts the counts again. */
static void reload_control(void) {
    const char *path = getenv("OPENKCM_FAULT_CONTROL");
    char text[CONTROL_MAX] = {0};
    if (path != NULL) {
        FILE *file = fopen(path, "r");
        if (file != NULL) {
            size_t length = fread(text, 1, sizeof text - 1, file);
            text[length] = 0;
            fclose(file);
        }
    }
    if (control_seen && strcmp(text, control_text) == 0) return;
    control_seen = 1;
    memcpy(control_text, text, sizeof control_text);
    rule_count = 0;
    memset(counts, 0, sizeof counts);
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        char function[48], nth[24], action[48];
        if (line[0] == '#' || sscanf(line, "%47s %23s %47s", function, nth, action) != 3) continue;
        if (rule_count == MAX_RULES) break;
        struct rule *rule = &rules[rule_count];
        memset(rule, 0, sizeof *rule);
        strncpy(rule->function, function, sizeof rule->function - 1);
        rule->nth = strtoul(nth, NULL, 10);
        rule->and_later = strchr(nth, '+') != NULL;
        if (rule->nth > 0 && parse_action(action, rule)) rule_count++;
        else fprintf(stderr, "fault_pkcs11: ignoring control line: %s\n", line);
    }
}

static void write_counts(void) {
    const char *path = getenv("OPENKCM_FAULT_COUNTS");
    if (path == NULL) return;
    char temporary[4096];
    snprintf(temporary, sizeof temporary, "%s.%d.tmp", path, (int)getpid());
    FILE *file = fopen(temporary, "w");
    if (file == NULL) return;
    for (int i = 0; i < name_count; i++) if (counts[i] > 0) fprintf(file, "%s %lu\n", names[i], counts[i]);
    fclose(file);
    rename(temporary, path); /* whole files only: a test never reads half a list */
}

/* Counts the call and decides its fate: 1 with *rv set when the call must not reach the module. */
static int fault(const char *function, CK_RV *rv) {
    struct rule chosen;
    int matched = 0;
    pthread_mutex_lock(&lock);
    reload_control();
    int index = 0;
    while (index < name_count && strcmp(names[index], function) != 0) index++;
    if (index == name_count && name_count < MAX_FUNCTIONS) names[name_count++] = function;
    unsigned long call = index < MAX_FUNCTIONS ? ++counts[index] : 0;
    for (int i = 0; i < rule_count && !matched; i++) {
        if (strcmp(rules[i].function, function) != 0) continue;
        if (call == rules[i].nth || (rules[i].and_later && call > rules[i].nth)) { chosen = rules[i]; matched = 1; }
    }
    write_counts();
    pthread_mutex_unlock(&lock);
    if (!matched) return 0;
    switch (chosen.action) {
    case ACT_RETURN: *rv = chosen.rv; return 1;
    case ACT_HANG: sleep(chosen.seconds); return 0; /* outside the lock: other threads go on */
    case ACT_ABORT: abort();
    case ACT_SEGFAULT: raise(SIGSEGV); abort();
    }
    return 0;
}

#define FORWARD(name, params, args) \
    static CK_RV w_##name params { \
        CK_RV rv; \
        if (fault(#name, &rv)) return rv; \
        if (real == NULL || real->name == NULL) return CKR_FUNCTION_NOT_SUPPORTED; \
        return real->name args; \
    }

FORWARD(C_Initialize, (CK_VOID_PTR a), (a))
FORWARD(C_Finalize, (CK_VOID_PTR a), (a))
FORWARD(C_GetInfo, (CK_INFO_PTR a), (a))
FORWARD(C_GetSlotList, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetSlotInfo, (CK_SLOT_ID a, CK_SLOT_INFO_PTR b), (a, b))
FORWARD(C_GetTokenInfo, (CK_SLOT_ID a, CK_TOKEN_INFO_PTR b), (a, b))
FORWARD(C_GetMechanismList, (CK_SLOT_ID a, CK_MECHANISM_TYPE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetMechanismInfo, (CK_SLOT_ID a, CK_MECHANISM_TYPE b, CK_MECHANISM_INFO_PTR c), (a, b, c))
FORWARD(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d), (a, b, c, d))
FORWARD(C_InitPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c, CK_UTF8CHAR_PTR d, CK_ULONG e), (a, b, c, d, e))
FORWARD(C_OpenSession, (CK_SLOT_ID a, CK_FLAGS b, CK_VOID_PTR c, CK_NOTIFY d, CK_SESSION_HANDLE_PTR e), (a, b, c, d, e))
FORWARD(C_CloseSession, (CK_SESSION_HANDLE a), (a))
FORWARD(C_CloseAllSessions, (CK_SLOT_ID a), (a))
FORWARD(C_GetSessionInfo, (CK_SESSION_HANDLE a, CK_SESSION_INFO_PTR b), (a, b))
FORWARD(C_GetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e), (a, b, c, d, e))
FORWARD(C_Login, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_Logout, (CK_SESSION_HANDLE a), (a))
FORWARD(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (a, b, c, d))
FORWARD(C_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
FORWARD(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
FORWARD(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_GetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d), (a, b, c, d))
FORWARD(C_FindObjectsInit, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_FindObjects, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE_PTR b, CK_ULONG c, CK_ULONG_PTR d), (a, b, c, d))
FORWARD(C_FindObjectsFinal, (CK_SESSION_HANDLE a), (a))
FORWARD(C_EncryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Encrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_EncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_EncryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_DecryptInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Decrypt, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b), (a, b))
FORWARD(C_Digest, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b), (a, b))
FORWARD(C_DigestFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SignInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Sign, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_SignUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_SignFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c), (a, b, c))
FORWARD(C_SignRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_SignRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_VerifyInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG e), (a, b, c, d, e))
FORWARD(C_VerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_VerifyFinal, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_VerifyRecoverInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c), (a, b, c))
FORWARD(C_VerifyRecover, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DigestEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptDigestUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_SignEncryptUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, CK_BYTE_PTR d, CK_ULONG_PTR e), (a, b, c, d, e))
FORWARD(C_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), (a, b, c, d, e))
FORWARD(C_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR g, CK_OBJECT_HANDLE_PTR h), (a, b, c, d, e, f, g, h))
FORWARD(C_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f), (a, b, c, d, e, f))
FORWARD(C_UnwrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e, CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR h), (a, b, c, d, e, f, g, h))
FORWARD(C_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f), (a, b, c, d, e, f))
FORWARD(C_SeedRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_GenerateRandom, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c), (a, b, c))
FORWARD(C_GetFunctionStatus, (CK_SESSION_HANDLE a), (a))
FORWARD(C_CancelFunction, (CK_SESSION_HANDLE a), (a))
FORWARD(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c), (a, b, c))

static CK_FUNCTION_LIST shim;

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    if (list == NULL) return CKR_ARGUMENTS_BAD;
    CK_RV rv;
    if (fault("C_GetFunctionList", &rv)) return rv;
    pthread_mutex_lock(&lock);
    if (real == NULL) {
        const char *path = getenv("OPENKCM_FAULT_MODULE");
        void *handle = dlopen(path != NULL ? path : "/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW | RTLD_LOCAL);
        CK_C_GetFunctionList get = handle != NULL ? (CK_C_GetFunctionList)dlsym(handle, "C_GetFunctionList") : NULL;
        if (get == NULL || get(&real) != CKR_OK || real == NULL) {
            real = NULL;
            pthread_mutex_unlock(&lock);
            return CKR_GENERAL_ERROR;
        }
        shim.version = real->version;
#define SET(name) shim.name = w_##name;
        SET(C_Initialize) SET(C_Finalize) SET(C_GetInfo) SET(C_GetSlotList) SET(C_GetSlotInfo) SET(C_GetTokenInfo)
        SET(C_GetMechanismList) SET(C_GetMechanismInfo) SET(C_InitToken) SET(C_InitPIN) SET(C_SetPIN)
        SET(C_OpenSession) SET(C_CloseSession) SET(C_CloseAllSessions) SET(C_GetSessionInfo)
        SET(C_GetOperationState) SET(C_SetOperationState) SET(C_Login) SET(C_Logout)
        SET(C_CreateObject) SET(C_CopyObject) SET(C_DestroyObject) SET(C_GetObjectSize)
        SET(C_GetAttributeValue) SET(C_SetAttributeValue) SET(C_FindObjectsInit) SET(C_FindObjects)
        SET(C_FindObjectsFinal) SET(C_EncryptInit) SET(C_Encrypt) SET(C_EncryptUpdate) SET(C_EncryptFinal)
        SET(C_DecryptInit) SET(C_Decrypt) SET(C_DecryptUpdate) SET(C_DecryptFinal) SET(C_DigestInit)
        SET(C_Digest) SET(C_DigestUpdate) SET(C_DigestKey) SET(C_DigestFinal) SET(C_SignInit) SET(C_Sign)
        SET(C_SignUpdate) SET(C_SignFinal) SET(C_SignRecoverInit) SET(C_SignRecover) SET(C_VerifyInit)
        SET(C_Verify) SET(C_VerifyUpdate) SET(C_VerifyFinal) SET(C_VerifyRecoverInit) SET(C_VerifyRecover)
        SET(C_DigestEncryptUpdate) SET(C_DecryptDigestUpdate) SET(C_SignEncryptUpdate)
        SET(C_DecryptVerifyUpdate) SET(C_GenerateKey) SET(C_GenerateKeyPair) SET(C_WrapKey) SET(C_UnwrapKey)
        SET(C_DeriveKey) SET(C_SeedRandom) SET(C_GenerateRandom) SET(C_GetFunctionStatus)
        SET(C_CancelFunction) SET(C_WaitForSlotEvent)
#undef SET
        shim.C_GetFunctionList = C_GetFunctionList;
    }
    pthread_mutex_unlock(&lock);
    *list = &shim;
    return CKR_OK;
}
