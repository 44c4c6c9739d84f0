/* Dropout on a CPU in one pass: out[i] = x[i] * (keep(i) ? scale : 0), where keep(i) is decided by a
 * keyed hash of the element's index, so no mask is drawn, stored or read back: the backward pass
 * recomputes it from the same key. Must stay equal, bit for bit, to keep_mask() in cpu_dropout.py.
 *
 * keep(i) = (mix32(mix32(lo32(i) ^ lo32(key)) ^ hi32(key) ^ hi32(i)) >> 16) >= threshold
 * with mix32 C. Wellons' "lowbias32" integer hash; threshold = round(p * 65536).
 *
 * Written so that compilers vectorise it (no branch in the loop, 32-bit multiplies); on x86 one
 * clone per instruction set is chosen at load time. Built with OpenMP, blocks are shared out over
 * the OpenMP threads that PyTorch itself runs on (the process has one libgomp). */
#include <stdint.h>

#define BLOCK (INT64_C(1) << 16) /* divides 2**32: within a block the high 32 bits of i are fixed */

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x21f0aaadu;
    x ^= x >> 15;
    x *= 0x735a2d97u;
    x ^= x >> 15;
    return x;
}

/* Indices first .. first + count - 1 of one block; hi already holds hi32(key) ^ hi32(i). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void block(const float *restrict x, float *restrict out, uint32_t first, uint32_t count, uint32_t lo,
                  uint32_t hi, int32_t threshold, float scale) {
    for (uint32_t j = 0; j < count; j++) {
        int32_t bits = (int32_t)(mix32(mix32((first + j) ^ lo) ^ hi) >> 16);
        out[j] = x[j] * (bits >= threshold ? scale : 0.0f);
    }
}

/* Elements start .. end - 1 of x (indexed from x, not from x + start) into out, on this thread, in
 * pieces within which the high 32 bits of the index are fixed. */
static void masked_scale(const float *x, float *out, int64_t start, int64_t end, uint64_t key, int32_t threshold,
                         float scale) {
    while (start < end) {
        int64_t stop = ((start >> 32) + 1) << 32;
        if (stop > end) stop = end;
        block(x + start, out + start, (uint32_t)start, (uint32_t)(stop - start), (uint32_t)key,
              (uint32_t)(key >> 32) ^ (uint32_t)(start >> 32), threshold, scale);
        start = stop;
    }
}

/* masked_scale over OpenMP threads, a BLOCK at a time. signed_key: torch's int64, the same 64 bits. */
void dropout_f32(const float *x, float *out, int64_t start, int64_t end, int64_t signed_key, int32_t threshold,
                 float scale) {
    if (start >= end) return;
#pragma omp parallel for schedule(static) if (end - start > 4 * BLOCK)
    for (int64_t b = start / BLOCK; b <= (end - 1) / BLOCK; b++) {
        int64_t first = b * BLOCK > start ? b * BLOCK : start, stop = (b + 1) * BLOCK < end ? (b + 1) * BLOCK : end;
        masked_scale(x, out, first, stop, (uint64_t)signed_key, threshold, scale);
    }
}

/* dS = P * (dP - sum(dP * P)) over one row, softmax's backward, with dP already in o. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
static void softmax_backward_row(const float *restrict p, float *restrict o, int64_t cols) {
    float partial[16] = {0}, dot = 0.0f; /* 16 running sums: vectorisable without reassociation */
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16)
        for (int k = 0; k < 16; k++) partial[k] += o[j + k] * p[j + k];
    for (; j < cols; j++) dot += o[j] * p[j];
    for (int k = 0; k < 16; k++) dot += partial[k];
    for (j = 0; j < cols; j++) o[j] = p[j] * (o[j] - dot);
}

/* Backward of dropout(softmax(S)) over rows of `cols` elements, one pass per row: dP = dropout(grad)
 * with the forward's key, then softmax's backward. Rows are independent, so the result does not
 * depend on the thread count. */
void softmax_dropout_backward_f32(const float *grad, const float *probs, float *out, int64_t rows, int64_t cols,
                                  int64_t signed_key, int32_t threshold, float scale) {
#pragma omp parallel for schedule(static) if (rows * cols > 4 * BLOCK)
    for (int64_t r = 0; r < rows; r++) {
        masked_scale(grad, out, r * cols, (r + 1) * cols, (uint64_t)signed_key, threshold, scale); /* dP */
        softmax_backward_row(probs + r * cols, out + r * cols, cols);
    }
}
