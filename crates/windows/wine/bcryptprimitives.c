/*
 * Test-only shim for Wine 8, which has no bcryptprimitives.dll. Rust's std (1.78+) imports
 * ProcessPrng from it for HashMap seeds and std's own randomness. This DLL forwards to
 * BCryptGenRandom with the system-preferred RNG. It is placed next to the test .exe only when
 * running under Wine; it is never shipped or used on Windows.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -lbcrypt
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
