// attnreuse's fused CPU kernel for exact attention that also writes its map (cross-layer map
// reuse: the first layer of a share group). One row block of one head at a time, per thread:
//   S = q_blk k^T          into a per-thread scratch block [R, M] (MKL through at::mm_out)
//   E = exp(S + bias - max), 1/sum per row, in the scratch block (ATen's vectorised exp)
//   map_blk = E / sum      to the map (a large one streamed past the cache where the CPU can)
//   out_blk = (E v) / sum  from the scratch block, still in cache
// so the map crosses memory once, written, where the unfused path writes the scores, reads and
// writes them in the softmax and reads the map for A.V. The literal definition it is tested
// against is attnreuse.ops.reference.softmax_attention (float64).
//
// Shapes: q [B, H, N, Dk] (already scaled), k [B, H, M, Dk], v [B, H, M, Dv], bias a float32
// view broadcast to [B, H, N, M] with unit last stride (or none), map a contiguous [B, H, N, M]
// (or none: the map is not kept) -> out [B, H, N, Dv]; `stream`: write the map past the cache.
// float32 only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

using Vec = at::vec::Vectorized<float>;

// x[0:M] <- exp(x + b - max(x + b)) (b may be null); returns 1 / the row's sum. A row of -inf
// gives 1 / 0 = inf, so its map row is 0 * inf = NaN, as torch.softmax gives.
float exp_row(float* x, const float* b, int64_t M) {
  if (b != nullptr) at::vec::map2([](Vec a, Vec c) { return a + c; }, x, x, b, M);
  float mx = at::vec::reduce_all<float>([](Vec& a, Vec& c) { return at::vec::maximum(a, c); }, x, M);
  if (mx == -INFINITY) mx = 0.f;
  const Vec vmx(mx);
  Vec vsum(0.f);
  int64_t j = 0;
  for (; j + Vec::size() <= M; j += Vec::size()) {
    const Vec e = (Vec::loadu(x + j) - vmx).exp_u20();
    e.store(x + j);
    vsum = vsum + e;
  }
  float sum = at::vec::vec_reduce_all<float>([](Vec& a, Vec& c) { return a + c; }, vsum);
  for (; j < M; ++j) {
    x[j] = std::exp(x[j] - mx);
    sum += x[j];
  }
  return 1.f / sum;
}

// dst[0:M] = src[0:M] * inv. With `stream`, streaming stores bypass the cache (a map too large to
// stay cached until a later layer reads it) and save the read a plain store makes of each line.
void scale_to(float* dst, const float* src, float inv, int64_t M, bool stream) {
  int64_t j = 0;
  if (!stream) {
    const Vec vinv(inv);
    at::vec::map([vinv](Vec a) { return a * vinv; }, dst, src, M);
    return;
  }
#if defined(__AVX512F__)
  for (; j < M && (reinterpret_cast<uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j] * inv;
  const __m512 vinv = _mm512_set1_ps(inv);
  for (; j + 16 <= M; j += 16) _mm512_stream_ps(dst + j, _mm512_mul_ps(_mm512_loadu_ps(src + j), vinv));
#elif defined(__AVX__)
  for (; j < M && (reinterpret_cast<uintptr_t>(dst + j) & 31) != 0; ++j) dst[j] = src[j] * inv;
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; j + 8 <= M; j += 8) _mm256_stream_ps(dst + j, _mm256_mul_ps(_mm256_loadu_ps(src + j), vinv));
#endif
  for (; j < M; ++j) dst[j] = src[j] * inv;
}

at::Tensor map_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& map,
                         int64_t rows, bool stream) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "map_attention: q, k, v must be 4-D");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "map_attention: float32 only");
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), M = k.size(2), Dv = v.size(3);
  TORCH_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == q.size(3) && v.size(0) == B && v.size(1) == H &&
              v.size(2) == M, "map_attention: q [B,H,N,Dk], k [B,H,M,Dk], v [B,H,M,Dv] do not match");
  TORCH_CHECK(rows >= 1, "map_attention: rows must be positive");
  const float* bias_ptr = nullptr;
  int64_t bs0 = 0, bs1 = 0, bs2 = 0;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 4 && bias->size(0) == B && bias->size(1) == H &&
                bias->size(2) == N && bias->size(3) == M && (M == 1 || bias->stride(3) == 1),
                "map_attention: bias must be a float32 [B,H,N,M] view with unit last stride");
    bias_ptr = bias->const_data_ptr<float>();
    bs0 = bias->stride(0), bs1 = bias->stride(1), bs2 = bias->stride(2);
  }
  float* map_ptr = nullptr;
  if (map.has_value() && map->defined()) {
    TORCH_CHECK(map->scalar_type() == at::kFloat && map->is_contiguous() && map->dim() == 4 && map->size(0) == B &&
                map->size(1) == H && map->size(2) == N && map->size(3) == M,
                "map_attention: map must be a contiguous float32 [B,H,N,M]");
    map_ptr = map->mutable_data_ptr<float>();
  }
  at::Tensor out = at::empty({B, H, N, Dv}, q.options());
  float* out_ptr = out.mutable_data_ptr<float>();
  const int64_t blocks = (N + rows - 1) / rows;
  // the caller's inference / grad mode for the ATen calls of the worker threads (thread-local state)
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state_guard(caller_state);
    at::Tensor scratch = at::empty({std::min(rows, N), M}, q.options());
    float* s_ptr = scratch.mutable_data_ptr<float>();
    std::vector<float> inv(static_cast<size_t>(std::min(rows, N)));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / blocks, b = bh / H, h = bh % H;
      const int64_t r0 = (t % blocks) * rows, R = std::min(rows, N - r0);
      at::Tensor s = scratch.narrow(0, 0, R);
      at::mm_out(s, q.select(0, b).select(0, h).narrow(0, r0, R), k.select(0, b).select(0, h).t());
      for (int64_t r = 0; r < R; ++r) {
        const float* brow = bias_ptr == nullptr ? nullptr : bias_ptr + b * bs0 + h * bs1 + (r0 + r) * bs2;
        inv[r] = exp_row(s_ptr + r * M, brow, M);
        if (map_ptr != nullptr) scale_to(map_ptr + ((bh * N) + r0 + r) * M, s_ptr + r * M, inv[r], M, stream);
      }
      at::Tensor o = out.select(0, b).select(0, h).narrow(0, r0, R);
      at::mm_out(o, s, v.select(0, b).select(0, h));
      float* o_ptr = out_ptr + (bh * N + r0) * Dv;
      for (int64_t r = 0; r < R; ++r) {
        const Vec vinv(inv[r]);
        at::vec::map([vinv](Vec a) { return a * vinv; }, o_ptr + r * Dv, o_ptr + r * Dv, Dv);
      }
    }
#if defined(__AVX512F__) || defined(__AVX__)
    _mm_sfence();  // this thread's streamed map rows are visible to whoever reads them next
#endif
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(attnreuse_native, m) {
  m.def("map_attention(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor? map, int rows, bool stream) -> Tensor", &map_attention);
}
