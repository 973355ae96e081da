// One-shot SHA-256 from the system's OpenSSL libcrypto (SHA-NI where the CPU has it), for
// the audit log's hot paths: a Merkle leaf or node is hashed in one call, on the stack,
// without the per-hash context allocation of a general-purpose hasher.
#ifndef CSHA256_H
#define CSHA256_H

#include <stddef.h>
#include <openssl/sha.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

// SHA-256(prefix ‖ data) into out[32].
static inline void csha256_prefixed(unsigned char prefix, const unsigned char *data, size_t length, unsigned char *out) {
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, &prefix, 1);
    SHA256_Update(&context, data, length);
    SHA256_Final(out, &context);
}

// SHA-256(prefix ‖ a[32] ‖ b[32]) into out[32].
static inline void csha256_pair(unsigned char prefix, const unsigned char *a, const unsigned char *b, unsigned char *out) {
    // The low-level interface: OpenSSL 3's one-shot SHA256() looks the algorithm up by name
    // (a lock and a string compare) on every call.
    SHA256_CTX context;
    SHA256_Init(&context);
    SHA256_Update(&context, &prefix, 1);
    SHA256_Update(&context, a, 32);
    SHA256_Update(&context, b, 32);
    SHA256_Final(out, &context);
}

#pragma GCC diagnostic pop

#endif
