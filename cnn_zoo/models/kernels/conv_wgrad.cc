// The weight gradient of a 2-D convolution (NHWC input, HWIO kernel, as flax calls
// lax.conv_general_dilated) as an XLA FFI custom call on CPU: cnn_zoo/models/conv_wgrad.py builds,
// loads, checks and calls it.
//
//   dW[i, j, c, o] = sum over n, oh, ow of x[n, oh*sh - pt + i, ow*sw - pl + j, g*Cg + c] * dy[n, oh, ow, o]
//
// (g = o's group, Cg = Cin / groups; taps that fall into the padding contribute nothing). For each
// tap (i, j) this is a GEMM whose reduction runs over the batch x output positions, so it is
// computed straight from x and dy without patches: a register tile of MR input channels x NV
// vectors of output channels accumulates over the positions, each step one vector load of dy and
// MR broadcast-FMAs of x (the vector width is the build's: AVX-512 or AVX2, -march=native).
//
// Work is split into items (a chunk of images x one tap) that run on XLA's own intra-op thread
// pool (the FFI ThreadPool: no threads of our own, so no oversubscription of the cores XLA uses).
// Each participant (the calling thread and the helpers it schedules) claims items from an atomic
// counter and accumulates into its own partial dW; the caller then sums the partials. The caller
// never waits for a helper that has not started: a helper that starts after the work is gone
// returns at once, so the call cannot deadlock when every pool thread is busy.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if !defined(__AVX2__) || !defined(__FMA__)
#error "conv_wgrad.cc needs AVX2 and FMA (cnn_zoo falls back to XLA's weight gradient without)"
#endif

namespace {

#if defined(__AVX512F__)
constexpr int kV = 16;  // floats per vector
using Vec = __m512;
inline Vec VZero() { return _mm512_setzero_ps(); }
inline Vec VLoad(const float* p) { return _mm512_loadu_ps(p); }
using VMask = __mmask16;
inline VMask MakeMask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }  // n lanes
inline Vec VLoadMasked(const float* p, VMask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void VStore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec VFma(const float* a, Vec b, Vec c) { return _mm512_fmadd_ps(_mm512_set1_ps(*a), b, c); }
inline Vec VAdd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
constexpr int kMaxMR1 = 16, kMaxMR2 = 12;  // 32 vector registers
#else
constexpr int kV = 8;
using Vec = __m256;
inline Vec VZero() { return _mm256_setzero_ps(); }
inline Vec VLoad(const float* p) { return _mm256_loadu_ps(p); }
using VMask = __m256i;
inline VMask MakeMask(int n) {  // the first n lanes
  alignas(32) static const int32_t kMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMask + 8 - n));
}
inline Vec VLoadMasked(const float* p, VMask m) { return _mm256_maskload_ps(p, m); }
inline void VStore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec VFma(const float* a, Vec b, Vec c) { return _mm256_fmadd_ps(_mm256_broadcast_ss(a), b, c); }
inline Vec VAdd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
constexpr int kMaxMR1 = 12, kMaxMR2 = 6;  // 16 vector registers
#endif

struct Shape {
  int64_t n, h, w, cin, oh, ow, cout, kh, kw, sh, sw, pt, pl, groups;
  int64_t cg() const { return cin / groups; }
  int64_t og() const { return cout / groups; }
  int64_t og_pad() const { return (og() + kV - 1) / kV * kV; }  // a partial's row length
};

// The positions of one tap over images [n0, n1): the output rows and columns whose input falls
// inside the image, and where they start in x and dy.
struct TapRange {
  int64_t oh0, oh1, ow0, ow1;
};

inline TapRange Range(const Shape& s, int64_t i, int64_t j) {
  auto lo = [](int64_t pad, int64_t tap, int64_t stride) {  // first o with o*stride - pad + tap >= 0
    int64_t need = pad - tap;
    return need <= 0 ? int64_t{0} : (need + stride - 1) / stride;
  };
  auto hi = [](int64_t pad, int64_t tap, int64_t stride, int64_t size, int64_t out) {
    int64_t last = size - 1 + pad - tap;  // o*stride <= last
    return last < 0 ? int64_t{0} : std::min(out, last / stride + 1);
  };
  return {lo(s.pt, i, s.sh), hi(s.pt, i, s.sh, s.h, s.oh), lo(s.pl, j, s.sw),
          hi(s.pl, j, s.sw, s.w, s.ow)};
}

// acc[MR x NV vectors] += sum over positions of x[.., c0:c0+MR]^T dy[.., o0:o0+NV*kV], for images
// [n0, n1) at tap (i, j); with MASK only the first `tail` lanes of the last vector are read. U
// independent accumulator sets over consecutive columns keep the FMA pipes busy when MR*NV is
// small. Every loop over u, m and v is unrolled so that the accumulators live in registers.
template <int MR, int NV, bool MASK>
void Tile(const Shape& s, const float* x, const float* dy, int64_t n0, int64_t n1, int64_t i,
          int64_t j, const TapRange& r, int64_t c0, int64_t o0, int tail, float* out) {
  constexpr int U = MR * NV >= 8 ? 1 : (MR * NV >= 4 ? 2 : 4);
  const int64_t og_pad = s.og_pad();
  const VMask mask = MakeMask(tail);
  Vec acc[U][MR][NV];
#pragma GCC unroll 64
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 64
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) acc[u][m][v] = u ? VZero() : VLoad(out + m * og_pad + v * kV);
  const int64_t xstep = s.sw * s.cin, cols = r.ow1 - r.ow0;
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t oh = r.oh0; oh < r.oh1; ++oh) {
      const float* xp = x + ((n * s.h + oh * s.sh - s.pt + i) * s.w + r.ow0 * s.sw - s.pl + j) * s.cin + c0;
      const float* dp = dy + ((n * s.oh + oh) * s.ow + r.ow0) * s.cout + o0;
      int64_t c = 0;
      for (; c + U <= cols; c += U) {
#pragma GCC unroll 64
        for (int u = 0; u < U; ++u) {
          Vec d[NV];
#pragma GCC unroll 64
          for (int v = 0; v < NV; ++v)
            d[v] = (MASK && v == NV - 1) ? VLoadMasked(dp + v * kV, mask) : VLoad(dp + v * kV);
#pragma GCC unroll 64
          for (int m = 0; m < MR; ++m)
#pragma GCC unroll 64
            for (int v = 0; v < NV; ++v) acc[u][m][v] = VFma(xp + m, d[v], acc[u][m][v]);
          xp += xstep;
          dp += s.cout;
        }
      }
      if (U > 1) {
        for (; c < cols; ++c) {
          Vec d[NV];
#pragma GCC unroll 64
          for (int v = 0; v < NV; ++v)
            d[v] = (MASK && v == NV - 1) ? VLoadMasked(dp + v * kV, mask) : VLoad(dp + v * kV);
#pragma GCC unroll 64
          for (int m = 0; m < MR; ++m)
#pragma GCC unroll 64
            for (int v = 0; v < NV; ++v) acc[0][m][v] = VFma(xp + m, d[v], acc[0][m][v]);
          xp += xstep;
          dp += s.cout;
        }
      }
    }
  }
#pragma GCC unroll 64
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 64
    for (int v = 0; v < NV; ++v) {
      Vec total = acc[0][m][v];
#pragma GCC unroll 64
      for (int u = 1; u < U; ++u) total = VAdd(total, acc[u][m][v]);
      VStore(out + m * og_pad + v * kV, total);
    }
}

using TileFn = void (*)(const Shape&, const float*, const float*, int64_t, int64_t, int64_t,
                        int64_t, const TapRange&, int64_t, int64_t, int, float*);

template <int NV, bool MASK, int... MR>
constexpr std::array<TileFn, sizeof...(MR)> Table(std::integer_sequence<int, MR...>) {
  return {&Tile<MR + 1, NV, MASK>...};
}
// [masked][MR - 1]
const std::array<TileFn, kMaxMR1> kTiles1[2] = {
    Table<1, false>(std::make_integer_sequence<int, kMaxMR1>()),
    Table<1, true>(std::make_integer_sequence<int, kMaxMR1>())};
const std::array<TileFn, kMaxMR2> kTiles2[2] = {
    Table<2, false>(std::make_integer_sequence<int, kMaxMR2>()),
    Table<2, true>(std::make_integer_sequence<int, kMaxMR2>())};

// One item: images [n0, n1) at tap (i, j), every group and channel tile, into `part` (the
// participant's partial: [kh, kw, groups, cg, og_pad]).
void Item(const Shape& s, const float* x, const float* dy, int64_t n0, int64_t n1, int64_t tap,
          float* part) {
  const int64_t i = tap / s.kw, j = tap % s.kw, cg = s.cg(), og = s.og(), og_pad = s.og_pad();
  const TapRange r = Range(s, i, j);
  if (r.oh0 >= r.oh1 || r.ow0 >= r.ow1) return;
  const int64_t nvec = og_pad / kV;
  for (int64_t g = 0; g < s.groups; ++g) {
    float* base = part + ((tap * s.groups + g) * cg) * og_pad;
    for (int64_t vb = 0; vb < nvec;) {
      const int nv = nvec - vb >= 2 ? 2 : 1;
      const int64_t o0 = vb * kV;
      const int64_t left = og - (vb + nv - 1) * kV;
      const int tail = static_cast<int>(std::min<int64_t>(left, kV));
      const int max_mr = nv == 2 ? kMaxMR2 : kMaxMR1;
      const int64_t blocks = (cg + max_mr - 1) / max_mr;
      const int64_t mr = (cg + blocks - 1) / blocks;  // balanced channel blocks
      for (int64_t c0 = 0; c0 < cg; c0 += mr) {
        const int m = static_cast<int>(std::min(mr, cg - c0));
        const bool masked = tail != kV;
        TileFn fn = nv == 2 ? kTiles2[masked][m - 1] : kTiles1[masked][m - 1];
        fn(s, x, dy, n0, n1, i, j, r, g * cg + c0, g * og + o0, tail, base + c0 * og_pad + o0);
      }
      vb += nv;
    }
  }
}

struct Work {
  Shape s;
  const float* x;
  const float* dy;
  int64_t chunk, items, taps;
  std::atomic<int64_t> next{0};
  std::atomic<int> slots{0};
  std::atomic<int64_t> done{0};
  std::vector<std::vector<float>> parts;  // one per participant, allocated before any starts
  std::mutex mu;
  std::condition_variable cv;
};

// Claims and runs items until none are left; returns how many it ran.
void Participate(const std::shared_ptr<Work>& w) {
  if (w->next.load(std::memory_order_relaxed) >= w->items) return;  // nothing left: touch nothing
  const int slot = w->slots.fetch_add(1);
  if (slot >= static_cast<int>(w->parts.size())) return;
  std::vector<float>& part = w->parts[slot];
  int64_t ran = 0;
  for (int64_t k; (k = w->next.fetch_add(1)) < w->items; ++ran) {
    if (part.empty()) part.assign(w->s.kh * w->s.kw * w->s.groups * w->s.cg() * w->s.og_pad(), 0.f);
    const int64_t chunk = k / w->taps, tap = k % w->taps;
    const int64_t n0 = chunk * w->chunk, n1 = std::min(w->s.n, n0 + w->chunk);
    Item(w->s, w->x, w->dy, n0, n1, tap, part.data());
  }
  if (ran && w->done.fetch_add(ran) + ran == w->items) {
    std::lock_guard<std::mutex> lock(w->mu);
    w->cv.notify_all();
  }
}

ffi::Error WgradImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                     ffi::ResultBuffer<ffi::F32> dw, int64_t sh, int64_t sw, int64_t pt,
                     int64_t pl, int64_t groups) {
  auto xd = x.dimensions(), dyd = dy.dimensions(), dwd = dw->dimensions();
  if (xd.size() != 4 || dyd.size() != 4 || dwd.size() != 4)
    return ffi::Error::InvalidArgument("conv_wgrad: x, dy and dw must be 4-D (NHWC, NHWC, HWIO)");
  Shape s{xd[0], xd[1], xd[2], xd[3], dyd[1], dyd[2], dyd[3], dwd[0], dwd[1], sh, sw, pt, pl, groups};
  if (dyd[0] != s.n || groups < 1 || s.cin % groups || s.cout % groups || dwd[2] != s.cg() ||
      dwd[3] != s.cout || sh < 1 || sw < 1)
    return ffi::Error::InvalidArgument("conv_wgrad: inconsistent shapes or attributes");
  float* out = dw->typed_data();
  const int64_t taps = s.kh * s.kw, og = s.og(), og_pad = s.og_pad(), cg = s.cg();
  if (s.n == 0 || s.oh == 0 || s.ow == 0) {
    std::memset(out, 0, sizeof(float) * taps * cg * s.cout);
    return ffi::Error::Success();
  }
  auto w = std::make_shared<Work>();
  w->s = s;
  w->x = x.typed_data();
  w->dy = dy.typed_data();
  w->taps = taps;
  // About 1024 output positions per item: enough to hide a tile's loads and stores, small enough
  // that the threads share out a batch of 128 32x32 images many times over.
  w->chunk = std::max<int64_t>(1, std::min<int64_t>(s.n, 1024 / (s.oh * s.ow)));
  w->items = (s.n + w->chunk - 1) / w->chunk * taps;
  const int64_t helpers = std::max<int64_t>(0, std::min<int64_t>(pool.num_threads(), w->items) - 1);
  w->parts.resize(helpers + 1);
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([w] { Participate(w); });
  Participate(w);
  {
    std::unique_lock<std::mutex> lock(w->mu);
    w->cv.wait(lock, [&] { return w->done.load() == w->items; });
  }
  // out[i, j, c, g*og + o] = sum of the partials' [tap, g, c, o].
  std::memset(out, 0, sizeof(float) * taps * cg * s.cout);
  for (const auto& part : w->parts) {
    if (part.empty()) continue;
    for (int64_t tap = 0; tap < taps; ++tap)
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t g = 0; g < s.groups; ++g) {
          const float* src = part.data() + ((tap * s.groups + g) * cg + c) * og_pad;
          float* dst = out + (tap * cg + c) * s.cout + g * og;
          for (int64_t o = 0; o < og; ++o) dst[o] += src[o];
        }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(CnnZooConvWgrad, WgradImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("sh")
                                  .Attr<int64_t>("sw")
                                  .Attr<int64_t>("pt")
                                  .Attr<int64_t>("pl")
                                  .Attr<int64_t>("groups"));
