#ifndef OPENKCM_CPKCS11_H
#define OPENKCM_CPKCS11_H

/* The OASIS PKCS#11 2.40 interface as p11-kit ships it (compatibility names: CK_*, C_*). */
#include <p11-kit/pkcs11.h>
#include <stddef.h>
#include <string.h>
#include <dlfcn.h>

/* Overwrite a secret buffer. A plain memset before free is a dead store the optimiser may
   drop; explicit_bzero (glibc >= 2.25) is guaranteed to happen. */
static inline void cpkcs11_wipe(void *buffer, size_t length) {
    if (buffer != NULL && length > 0) {
        explicit_bzero(buffer, length);
    }
}

#endif
