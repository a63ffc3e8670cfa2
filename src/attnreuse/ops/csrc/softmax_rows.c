/* The softmax pass of attnreuse's FLAT tiles, in one sweep per row (attnreuse.ops.compiled).
 *
 * PyTorch's CPU softmax reads a score row three times (max; exp and sum; scale by 1/sum). Here a
 * row is read twice (max; exp written in place with its sum), and the 1/sum scale is either a third
 * sweep (`normalise`, when the probabilities themselves are wanted) or left to the caller, who
 * scales the [rows, Dv] output of A.V instead of the [rows, M] scores.
 *
 * Plain C with OpenMP: the compiler vectorises both loops for the CPU it runs on (-march=native),
 * and the parallel loop runs on the OpenMP runtime PyTorch already loaded (same soname).
 * IEEE semantics are kept (no -ffast-math): a NaN score makes its row NaN, exp(-inf) is 0, a row
 * of -inf is NaN, as in torch.softmax.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(x) in float32, vectorisable: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6
 * Taylor polynomial (truncation below 2^-24 relative on that range), times 2^n built in the
 * exponent bits. Measured relative error against float64 exp: 2.2e-7 over [-87, 0]. */
static inline float exp_f32(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;      /* ln 2 split so that n * ln2_hi is exact */
    const float ln2_lo = -2.12194440e-4f;
    float xc = x < -87.5f ? -87.5f : (x > 88.5f ? 88.5f : x);
    float n = __builtin_roundf(xc * log2e);
    float r = xc - n * ln2_hi - n * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float e = p * two_n;
    e = x < -87.5f ? 0.0f : e; /* below float32's normal range: 0, as the softmax wants */
    return x != x ? x : e;     /* NaN stays NaN */
}

/* Rows [rows, cols] of scores with leading dimension ld, in place: each row becomes exp(x - max)
 * and inv_sum[r] = 1 / sum (normalise == 0), or the probabilities exp(x - max) / sum
 * (normalise != 0; inv_sum may then be NULL). Rows are split over `threads` OpenMP threads when
 * the block is large enough to pay for the parallel region. */
void attnreuse_softmax_rows(float *scores, long rows, long cols, long ld, float *inv_sum, int normalise,
                            int threads) {
    int parallel = threads > 1 && rows > 1 && rows * cols >= 32768;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (long r = 0; r < rows; ++r) {
        float *x = scores + r * ld;
        float m = -INFINITY;
#pragma omp simd reduction(max : m)
        for (long j = 0; j < cols; ++j) m = x[j] > m ? x[j] : m;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < cols; ++j) {
            float e = exp_f32(x[j] - m);
            x[j] = e;
            s += e;
        }
        float inv = 1.0f / s;
        if (normalise) {
#pragma omp simd
            for (long j = 0; j < cols; ++j) x[j] *= inv;
        } else {
            inv_sum[r] = inv;
        }
    }
}
