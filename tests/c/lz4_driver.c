/*
 * lz4_driver - calls lz4's block and frame APIs (from the lz4 sources that the
 * PyPI package "lz4" bundles) for `umonitor instrument` tests.
 *
 *   lz4_driver
 *
 * Compresses 64 KiB of generated text with LZ4_compress_default, LZ4_compress_HC
 * and LZ4F_compressFrame, decompresses each and prints the sizes and an FNV-1a
 * hash of every result: the same output whether lz4 is instrumented or not. With
 * UMON_CONFIG set it logs to that collector and flushes before exiting.
 * Exit status 0, 1 if a round trip differs or records were not acknowledged.
 */
#define _POSIX_C_SOURCE 200809L
#include "lz4.h"
#include "lz4frame.h"
#include "lz4hc.h"
#include "umonitor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INPUT_BYTES 65536

static unsigned long fnv1a(const char *p, size_t n)
{
    unsigned long h = 2166136261ul;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619ul & 0xfffffffful;
    return h;
}

int main(void)
{
    static char input[INPUT_BYTES], packed[LZ4_COMPRESSBOUND(INPUT_BYTES) + 1024], back[INPUT_BYTES];
    int failed = 0;
    int n, m;
    size_t fn, fm;
    LZ4F_dctx *dctx = NULL;

    for (size_t i = 0; i < sizeof input; i++)
        input[i] = "the quick brown fox jumps over the lazy dog "[i % 44] + (char)(i / 4096 % 3);
    if (getenv("UMON_CONFIG") != NULL && umon_init_default() != 0)
        return 2;

    n = LZ4_compress_default(input, packed, INPUT_BYTES, (int)sizeof packed);
    m = LZ4_decompress_safe(packed, back, n, INPUT_BYTES);
    failed |= m != INPUT_BYTES || memcmp(input, back, sizeof input) != 0;
    printf("block %d %lx %d\n", n, fnv1a(packed, (size_t)n), m);

    n = LZ4_compress_HC(input, packed, INPUT_BYTES, (int)sizeof packed, 9);
    m = LZ4_decompress_safe(packed, back, n, INPUT_BYTES);
    failed |= m != INPUT_BYTES || memcmp(input, back, sizeof input) != 0;
    printf("hc %d %lx %d\n", n, fnv1a(packed, (size_t)n), m);

    fn = LZ4F_compressFrame(packed, sizeof packed, input, sizeof input, NULL);
    failed |= LZ4F_isError(fn);
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
        return 1;
    fm = sizeof back;
    n = (int)fn;
    fn = LZ4F_decompress(dctx, back, &fm, packed, &fn, NULL);
    failed |= LZ4F_isError(fn) || fm != sizeof input || memcmp(input, back, sizeof input) != 0;
    LZ4F_freeDecompressionContext(dctx);
    printf("frame %d %lx %zu\n", n, fnv1a(packed, (size_t)n), fm);

    fflush(stdout);
    if (getenv("UMON_CONFIG") != NULL) {
        failed |= umon_flush(20000) != 0;
        umon_close();
    }
    return failed;
}
