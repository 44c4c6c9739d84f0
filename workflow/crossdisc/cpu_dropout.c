/* Dropout on a CPU in one pass: out[i] = x[i] * (keep(i) ? scale : 0), where keep(i) is decided by a
 * keyed hash of the element's index, so no mask is drawn, stored or read back: the backward pass
 * recomputes it from the same key. Must stay equal, bit for bit, to keep_mask() in cpu_dropout.py.
 *
 * keep(i) = (mix32(mix32(lo32(i) ^ lo32(key)) ^ hi32(key) ^ hi32(i)) >> 16) >= threshold
 * with mix32 C. Wellons' "lowbias32" integer hash; threshold = round(p * 65536).
 * Written so that compilers vectorise it (no branch in the loop, 32-bit multiplies); on x86 one
 * clone per instruction set is chosen at load time. */
#include <stdint.h>

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* Indices first .. first + count - 1, all with the same high 32 bits (folded into hi). */
static void segment(const float *restrict x, float *restrict out, uint32_t first, uint32_t count,
                    uint32_t lo, uint32_t hi, int32_t threshold, float scale) {
    for (uint32_t j = 0; j < count; j++) {
        int32_t bits = (int32_t)(mix32(mix32((first + j) ^ lo) ^ hi) >> 16);
        out[j] = x[j] * (bits >= threshold ? scale : 0.0f);
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
void dropout_f32(const float *x, float *out, int64_t start, int64_t end, uint64_t key, int32_t threshold,
                 float scale) {
    while (start < end) {
        int64_t stop = ((start >> 32) + 1) << 32;
        if (stop > end) stop = end;
        segment(x + start, out + start, (uint32_t)start, (uint32_t)(stop - start), (uint32_t)key,
                (uint32_t)(key >> 32) ^ (uint32_t)(start >> 32), threshold, scale);
        start = stop;
    }
}
