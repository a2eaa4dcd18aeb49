// Native versions of the tile kernels of worldgen/raster/cpu.py (_forward, _backward with
// _reduce, and the depth sort of _order), SIMD over pixels. Plain C ABI, loaded with ctypes by
// worldgen/raster/native/__init__.py, which builds this file with
// `c++ -O3 -march=native -fopenmp -ffp-contract=off ...`. -march=native and OpenMP are
// optional: without them the 8-lane vectors are split into SSE/NEON halves and the tiles run
// serially. GCC vector extensions (GCC >= 9, clang), AVX/FMA intrinsics only where available.
//
// Semantics are the numba kernels' (read cpu.py's docstring first); the differences:
//
// * Inside a tile, per splat and per row of its box, the row's 16 pixels are two 8-lane float32
//   vectors; a half is skipped when its columns miss the row's chord of the ellipse, when all
//   its pixels are done (forward) or when none has reached this entry yet (backward). exp is a
//   polynomial (exp_neg, ~1 ulp).
// * numba evaluates sigma, alpha and the transmittance products in float64 (the tile-local
//   mean mx - x0 is float32 - int64 = float64, and that propagates); here they are float32.
//   That moves every value by ~1e-7 relative, harmless, but it could also flip one of the three
//   discrete decisions -- alpha >= 1/255 (skip), next_T <= 1e-4 (the pixel stops), raw alpha <
//   0.999 (gradient through the clamp) -- for a value within rounding of its threshold, and one
//   flip moves a pixel by up to ~4e-3. So a half in which a float32 value falls within a
//   relative band of 1e-4 around its threshold (a few halves in 1e4) is redone lane by lane in
//   float64 with the numba kernel's own arithmetic (the *_exact functions): every decision is
//   numba's. A (splat, pixel) pair's float32 values come from the same code (evaluate) in both
//   passes, so the backward pass undoes exactly the pairs the forward pass composited.
// * The box (span) and row (chord) prefilters are numba's float64 arithmetic, bit for bit; the
//   chords of 4 rows at a time.
// * The splats' parameters are first packed into one 64-byte record each (pack), so that a list
//   entry costs one cache miss (prefetched) instead of a dozen, and log(255 o) is taken once per
//   splat instead of once per entry.
// * The backward pass can sum its per-entry gradients per splat itself (as _reduce does, in the
//   same order, so deterministically), writing only the entries some pixel reached.
//
// Build flags: -ffp-contract=off keeps the compiler from fusing the float64 mirror's multiplies
// and adds (numba/LLVM does not fuse without fastmath); the float32 path asks for its FMAs
// explicitly (fma8). No -ffast-math: comparisons with NaN and inf stay IEEE (a pair whose sigma
// is NaN, impossible for a valid splat, is skipped).

#include <cmath>
#include <utility>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#define OMP(directive) _Pragma(#directive)
#else
#define OMP(directive)
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

constexpr int TILE = 16;
constexpr int NPIX = TILE * TILE;
// common.py's constants as the numba kernels see them (np.float32(ALPHA_MAX) in comparisons, the
// Python float ALPHA_MIN in tau); the loader checks them against common.py (wg_constants)
constexpr double ALPHA_MAX_D = 0.999;
constexpr double ALPHA_MIN_D = 1.0 / 255.0;
constexpr double T_MIN_D = 1e-4;
constexpr float ALPHA_MAX_F = (float)ALPHA_MAX_D;
constexpr float ALPHA_MIN_F = (float)ALPHA_MIN_D;
constexpr float T_MIN_F = (float)T_MIN_D;
// float32 values this close (relative) to a threshold are decided in float64 (see above)
constexpr float BAND = 1e-4f;

int g_threads = 0;  // 0: OpenMP's default

// ------------------------------------------------------------------------------ vector helpers

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));
typedef int32_t v4i __attribute__((vector_size(16)));

inline v8f vf(float s) { return (v8f){s, s, s, s, s, s, s, s}; }
inline v8i vi(int32_t s) { return (v8i){s, s, s, s, s, s, s, s}; }
inline v4d vd(double s) { return (v4d){s, s, s, s}; }

const v8f LANE = {0, 1, 2, 3, 4, 5, 6, 7};

inline v8f fma8(v8f a, v8f b, v8f c) {
#if defined(__FMA__) && defined(__AVX__)
  return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;  // two roundings (-ffp-contract=off): the last bit differs, nothing else
#endif
}

// bit l set <=> lane l of the mask (all ones / zero per lane) is set
inline int bits(v8i m) {
#if defined(__AVX__)
  return _mm256_movemask_ps((__m256)m);
#else
  int r = 0;
  for (int l = 0; l < 8; l++) r |= (m[l] != 0) << l;
  return r;
#endif
}

inline v8f load(const float* p) { return *(const v8f*)p; }  // p 32-byte aligned
inline v8i load(const int32_t* p) { return *(const v8i*)p; }
inline void store(float* p, v8f v) { *(v8f*)p = v; }
inline void store(int32_t* p, v8i v) { *(v8i*)p = v; }
// m ? a : b per lane, for masks that are all ones or zero per lane (blendv reads the sign bit;
// GCC's vector ?: would first compare the mask with zero)
inline v8f sel(v8i m, v8f a, v8f b) {
#if defined(__AVX__)
  return (v8f)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)m);
#else
  return (v8f)(((v8i)a & m) | ((v8i)b & ~m));
#endif
}
inline v8i sel(v8i m, v8i a, v8i b) { return (v8i)sel(m, (v8f)a, (v8f)b); }
// m ? a : 0
inline v8f keep(v8i m, v8f a) { return (v8f)((v8i)a & m); }
// a < b ? a : b and a > b ? a : b (x86's minps/maxps: b where either is NaN)
inline v8f min8(v8f a, v8f b) {
#if defined(__AVX__)
  return (v8f)_mm256_min_ps((__m256)a, (__m256)b);
#else
  return sel(a < b, a, b);
#endif
}
inline v8f max8(v8f a, v8f b) {
#if defined(__AVX__)
  return (v8f)_mm256_max_ps((__m256)a, (__m256)b);
#else
  return sel(a > b, a, b);
#endif
}
// the same for 4 doubles (m: all ones or zero per lane, as comparisons give)
typedef int64_t v4l __attribute__((vector_size(32)));
inline v4d sel4(v4l m, v4d a, v4d b) { return (v4d)(((v4l)a & m) | ((v4l)b & ~m)); }

inline float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

inline v4d sqrt4(v4d x) {
#if defined(__AVX__)
  return (v4d)_mm256_sqrt_pd((__m256d)x);
#else
  return (v4d){std::sqrt(x[0]), std::sqrt(x[1]), std::sqrt(x[2]), std::sqrt(x[3])};
#endif
}

inline v4d ceil4(v4d x) {
#if defined(__AVX__)
  return (v4d)_mm256_ceil_pd((__m256d)x);
#else
  return (v4d){std::ceil(x[0]), std::ceil(x[1]), std::ceil(x[2]), std::ceil(x[3])};
#endif
}

inline v4d floor4(v4d x) {
#if defined(__AVX__)
  return (v4d)_mm256_floor_pd((__m256d)x);
#else
  return (v4d){std::floor(x[0]), std::floor(x[1]), std::floor(x[2]), std::floor(x[3])};
#endif
}

// e^-s for s in [0, 87]: Cody-Waite reduction -s = n ln2 - q, |q| <= ln2 / 2, then Cephes' expf
// polynomial (degree 5 for (e^r - 1 - r) / r^2, r = -q, evaluated by Estrin's scheme for a
// shorter dependency chain; odd coefficients negated); max relative error ~1.2e-7 (the tests
// measure it). n = round(-s / ln2) by the 1.5 * 2^23 trick: its low mantissa bits are n itself,
// so 2^n is a shift of them, no rounding instruction, no float-to-int conversion.
constexpr uint32_t EB = (127u - 0x4B400000u) << 23;
const v8u EXP_BIAS = {EB, EB, EB, EB, EB, EB, EB, EB};  // a memory operand, not 3 instructions

inline v8f exp_neg(v8f s) {
  const v8f magic = vf(12582912.0f);  // 1.5 * 2^23
  const v8f t = fma8(s, vf(-1.44269504088896341f), magic);
  const v8f n = t - magic;
  const v8f q = fma8(n, vf(-2.12194440e-4f), fma8(n, vf(0.693359375f), s));  // ln2 = hi - lo
  const v8f q2 = q * q;
  const v8f p01 = fma8(vf(-1.6666665459e-1f), q, vf(5.0000001201e-1f));
  const v8f p23 = fma8(vf(-8.3334519073e-3f), q, vf(4.1665795894e-2f));
  const v8f p45 = fma8(vf(-1.9875691500e-4f), q, vf(1.3981999507e-3f));
  const v8f p = fma8(fma8(p45, q2, p23), q2, p01);
  const v8f y = fma8(p, q2, vf(1.0f) - q);
  // 2^n: (n + 127) << 23 = (bits(t) - bits(magic) + 127) << 23 (mod 2^32), constants folded
  return y * (v8f)(((v8u)t << 23) + EXP_BIAS);
}

// --------------------------------------------------------------------------------- per splat

// One splat's parameters, packed (one cache line)
struct alignas(64) Rec {
  float mx, my, hx, hy, a, b, c, o, tau, cr, cg, cb, z;
};

void pack(Rec& r, int64_t i, const float* mx, const float* my, const float* hx, const float* hy,
          const float* ca, const float* cb, const float* cc, const float* op, const float* col,
          const float* z) {
  r.mx = mx[i], r.my = my[i], r.hx = hx[i], r.hy = hy[i];
  r.a = ca[i], r.b = cb[i], r.c = cc[i], r.o = op[i];
  // alpha >= 1/255 needs sigma <= log(255 o) (slack: the exact test follows)
  r.tau = (float)(std::log((double)r.o / ALPHA_MIN_D) + 1e-4);
  r.cr = col[3 * i], r.cg = col[3 * i + 1], r.cb = col[3 * i + 2];
  r.z = z ? z[i] : 0.0f;
}

// int(v) for an integral v, clamped to [lo, hi] (no UB for huge v)
inline int clamp_int(double v, int lo, int hi) {
  return v <= (double)lo ? lo : (v >= (double)hi ? hi : (int)v);
}

// cpu.py _span: tile-local pixel range [lo, hi] of the box m +- h within [0, n - 1]
inline void span(double m, float h, int n, int& lo, int& hi) {
  float pad = h * (float)1.000001 + (float)1e-6;  // float32 arithmetic, as numba's
  double a = std::ceil(m - (double)pad), b = std::floor(m + (double)pad);
  if (!(a <= b)) {  // also NaN
    lo = 1, hi = 0;
    return;
  }
  lo = clamp_int(a, 0, n);
  hi = clamp_int(b, -1, n - 1);
}

// One list entry's splat, tile-local.
struct Splat {
  float a, b, c, o, tau, cr, cg, cb, z;
  double mxi, myi;  // tile-local mean, float64 as in numba
  int ua, ub, va, vb;
  bool near_max;  // o within BAND of ALPHA_MAX: raw alpha may reach the clamp's band
  // numba's _chord per row of the box: columns [r0[py], r1[py]] (empty: r0 > r1); + 4: the
  // chords are computed 4 rows at a time
  int32_t r0[TILE + 4], r1[TILE + 4];
  // per half row (columns 0-7, 8-15), float32: dx = mx - column and 0.5 dx^2
  v8f dx[2], hdx2[2];
};

// false if the splat's box misses the tile
inline bool setup(Splat& s, const Rec& r, int64_t x0, int64_t y0, int tw, int th) {
  s.mxi = (double)r.mx - (double)x0;
  s.myi = (double)r.my - (double)y0;
  span(s.mxi, r.hx, tw, s.ua, s.ub);
  span(s.myi, r.hy, th, s.va, s.vb);
  if (s.ua > s.ub || s.va > s.vb) return false;
  s.a = r.a, s.b = r.b, s.c = r.c, s.o = r.o, s.tau = r.tau;
  s.cr = r.cr, s.cg = r.cg, s.cb = r.cb, s.z = r.z;
  s.near_max = s.o >= ALPHA_MAX_F * (1.0f - BAND);
  const float mxf = (float)s.mxi;
  for (int h = 0; h < 2; h++) {
    s.dx[h] = vf(mxf) - (LANE + vf(8.0f * h));
    s.hdx2[h] = vf(0.5f) * s.dx[h] * s.dx[h];
  }
  // cpu.py _chord for rows va..vb, 4 at a time, with numba's float64 operations: the columns
  // of the row at offset dy where sigma = 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= tau, widened by
  // 1e-3 px (the exact alpha test follows)
  const double a = s.a, b = s.b, c = s.c, two_tau = (double)(2.0f * s.tau);
  for (int py = s.va; py <= s.vb; py += 4) {
    const v4d dy = vd(s.myi) - (v4d){(double)py, py + 1.0, py + 2.0, py + 3.0};
    const v4d bdy = vd(b) * dy;
    const v4d disc = bdy * bdy - vd(a) * (vd(c) * dy * dy - vd(two_tau));
    const v4d root = sqrt4(disc);
    // dx in [(-bdy - root) / a, (-bdy + root) / a]  ->  px = mxi - dx
    v4d lo = ceil4(vd(s.mxi) - (root - bdy) / vd(a) - vd(1e-3));
    v4d hi = floor4(vd(s.mxi) + (root + bdy) / vd(a) + vd(1e-3));
    // numba: empty where disc < 0 or a <= 0, and by way of int(nan) where anything is NaN
    const v4l ok = (disc >= vd(0.0)) & (lo <= hi) & (vd(a) > vd(0.0));
    lo = sel4(ok, lo, vd(s.ub + 1.0));
    hi = sel4(ok, hi, vd(s.ua - 1.0));
    lo = sel4(lo < vd(s.ua), vd(s.ua), sel4(lo > vd(s.ub + 1.0), vd(s.ub + 1.0), lo));
    hi = sel4(hi > vd(s.ub), vd(s.ub), sel4(hi < vd(s.ua - 1.0), vd(s.ua - 1.0), hi));
    const v4i r0 = __builtin_convertvector(lo, v4i), r1 = __builtin_convertvector(hi, v4i);
    std::memcpy(s.r0 + py, &r0, sizeof r0);  // py: any alignment
    std::memcpy(s.r1 + py, &r1, sizeof r1);
  }
  return true;
}

// bits r0..r1 (the row's chord) of a 16-bit pixel row
inline uint32_t chord_bits(const Splat& s, int py) {
  const int r0 = s.r0[py], r1 = s.r1[py];
  return r0 > r1 ? 0u : (2u << r1) - (1u << r0);
}

// lane l all ones <=> bit l of the index (a table: one load instead of four instructions)
struct LaneMasks {
  v8i m[256];
  LaneMasks() {
    for (int b = 0; b < 256; b++)
      for (int l = 0; l < 8; l++) m[b][l] = (b >> l) & 1 ? -1 : 0;
  }
};
const LaneMasks LANES;

// The float32 values of one (splat, half row) evaluation. Both passes use this one function,
// so they see bit-identical values (and take identical decisions).
struct Eval {
  v8f sigma, e, raw, alpha;
};

// half_a = 0.5 a, bdy = b dy, cdy2 = 0.5 c dy^2
inline Eval evaluate(const Splat& s, int h, v8f half_a, v8f bdy, v8f cdy2) {
  Eval v;
  v.sigma = fma8(s.dx[h], fma8(half_a, s.dx[h], bdy), cdy2);
  // clamp to [0, 87]: sigma < 0 -> 0 as numba; the upper end keeps exp_neg in range (such
  // lanes fail the alpha test), NaN included
  const v8f sc = min8(max8(vf(0.0f), v.sigma), vf(87.0f));
  v.e = exp_neg(sc);
  v.raw = vf(s.o) * v.e;
  v.alpha = min8(v.raw, vf(ALPHA_MAX_F));
  return v;
}

// The alpha test of the lanes `in`: `pass` gets the lanes with alpha >= 1/255; false if a lane
// is within BAND of the threshold (then the caller redoes the half in float64). Lanes that
// pass have sigma <= log(255 o) - ~1e-4 < tau, so numba's sigma > tau test is implied.
inline bool alpha_test(v8i in, const Eval& v, v8i& pass) {
  pass = in & (v.raw >= vf(ALPHA_MIN_F * (1.0f + BAND)));
  return bits(pass) == bits(in & (v.raw > vf(ALPHA_MIN_F * (1.0f - BAND))));
}

inline v8i near(v8f x, float thr) {
  return (x > vf(thr * (1.0f - BAND))) & (x < vf(thr * (1.0f + BAND)));
}

// numba's sigma, in float64 with its operation order
inline double sigma_exact(const Splat& s, double dx, double dy) {
  return 0.5 * ((double)s.a * dx * dx + (double)s.c * dy * dy) + (double)s.b * dx * dy;
}

inline int n_threads() {
#ifdef _OPENMP
  return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
  return 1;
#endif
}

Rec* pack_all(int64_t n, const float* mx, const float* my, const float* hx, const float* hy,
              const float* ca, const float* cb, const float* cc, const float* op,
              const float* col, const float* z) {
  Rec* recs = (Rec*)std::aligned_alloc(alignof(Rec), sizeof(Rec) * (n > 0 ? n : 1));
  if (recs == nullptr) return nullptr;
  // dynamic (as every loop here): a static share waits for a thread the OS has descheduled
  OMP(omp parallel for schedule(dynamic, 2048) num_threads(n_threads()))
  for (int64_t i = 0; i < n; i++) pack(recs[i], i, mx, my, hx, hy, ca, cb, cc, op, col, z);
  return recs;
}

// --------------------------------------------------------------------------------- forward

// Tile state of the forward pass, structure of arrays, one slot per pixel (row-major 16 x 16).
struct FwdTile {
  alignas(32) float T[NPIX];
  alignas(32) float acc[4][NPIX];  // r, g, b, depth
  alignas(32) int32_t lst[NPIX];
  uint32_t live[TILE];  // per row, bit px set while the pixel runs
};

// numba's forward body in float64 for the live pixels of row py, columns c0 + (bits of lane
// bits); the bits of the pixels that stopped
int forward_exact(FwdTile& st, const Splat& s, int py, double dy, int c0, int lane_bits,
                  int64_t knum) {
  int stopped = 0;
  for (int l = 0; l < 8; l++) {
    if (!((lane_bits >> l) & 1)) continue;
    const int px = c0 + l, p = py * TILE + px;
    double dx = s.mxi - (double)(float)px;
    double sigma = sigma_exact(s, dx, dy);
    if (!(sigma <= (double)s.tau)) continue;  // NaN too (unreachable for valid splats)
    if (sigma < 0) sigma = 0.0;
    double raw = (double)s.o * std::exp(-sigma);
    double alpha = raw < (double)ALPHA_MAX_F ? raw : (double)ALPHA_MAX_F;
    if (alpha < (double)ALPHA_MIN_F) continue;
    double nT = (double)st.T[p] * (1.0 - alpha);
    if (nT <= (double)T_MIN_F) {
      stopped |= 1 << l;
      continue;
    }
    double w = alpha * (double)st.T[p];
    st.acc[0][p] = (float)((double)st.acc[0][p] + w * (double)s.cr);
    st.acc[1][p] = (float)((double)st.acc[1][p] + w * (double)s.cg);
    st.acc[2][p] = (float)((double)st.acc[2][p] + w * (double)s.cb);
    st.acc[3][p] = (float)((double)st.acc[3][p] + w * (double)s.z);
    st.T[p] = (float)nT;
    st.lst[p] = (int32_t)knum;
  }
  return stopped;
}

void forward_tile(int64_t t, const int64_t* starts, const int32_t* entries, const Rec* recs,
                  const float* bg, int64_t W, int64_t H, int64_t tiles_x, float* rgb,
                  float* T_out, float* depth, int32_t* last) {
  const int64_t ty = t / tiles_x, tx = t - ty * tiles_x;
  const int64_t x0 = tx * TILE, y0 = ty * TILE;
  const int tw = (int)(W - x0 < TILE ? W - x0 : TILE);
  const int th = (int)(H - y0 < TILE ? H - y0 : TILE);
  FwdTile st;
  for (int p = 0; p < NPIX; p++) {
    st.T[p] = 1.0f;
    st.acc[0][p] = st.acc[1][p] = st.acc[2][p] = st.acc[3][p] = 0.0f;
    st.lst[p] = 0;
  }
  for (int py = 0; py < TILE; py++) st.live[py] = py < th ? (1u << tw) - 1u : 0u;
  int n_live = tw * th;
  const int64_t s0 = starts[t], s1 = starts[t + 1];
  Splat s;
  for (int64_t k = s0; k < s1 && n_live > 0; k++) {
    if (k + 8 < s1) __builtin_prefetch(recs + entries[k + 8]);
    if (!setup(s, recs[entries[k]], x0, y0, tw, th)) continue;
    const v8i knum = vi((int32_t)(k - s0 + 1));
    const v8f half_a = vf(0.5f * s.a);
    for (int py = s.va; py <= s.vb; py++) {
      const uint32_t act = chord_bits(s, py) & st.live[py];
      if (!act) continue;
      const double dy = s.myi - (double)(float)py;
      const float dyf = (float)dy;
      const v8f bdy = vf(s.b * dyf), cdy2 = vf(0.5f * s.c * dyf * dyf);
      for (int h = 0; h < 2; h++) {
        const int hb = (act >> (8 * h)) & 0xff;
        if (!hb) continue;
        const int p0 = py * TILE + 8 * h;
        const Eval v = evaluate(s, h, half_a, bdy, cdy2);
        v8i comp;
        const bool sure = alpha_test(LANES.m[hb], v, comp);
        const v8f T = load(st.T + p0);
        const v8f nT = T * (vf(1.0f) - v.alpha);
        int stopped = 0;
        // rare (a pixel about to stop, or a value near a threshold): the slower paths
        if (!sure || bits(comp & (nT <= vf(T_MIN_F * (1.0f + BAND))))) {
          if (!sure || bits(comp & near(nT, T_MIN_F))) {
            stopped = forward_exact(st, s, py, dy, 8 * h, hb, k - s0 + 1);
            comp = vi(0);
          } else {
            const v8i stop = comp & (nT <= vf(T_MIN_F));
            comp &= ~stop;
            stopped = bits(stop);
          }
        }
        if (bits(comp)) {
          const v8f w = keep(comp, v.alpha * T);
          store(st.acc[0] + p0, fma8(w, vf(s.cr), load(st.acc[0] + p0)));
          store(st.acc[1] + p0, fma8(w, vf(s.cg), load(st.acc[1] + p0)));
          store(st.acc[2] + p0, fma8(w, vf(s.cb), load(st.acc[2] + p0)));
          store(st.acc[3] + p0, fma8(w, vf(s.z), load(st.acc[3] + p0)));
          store(st.T + p0, sel(comp, nT, T));
          store(st.lst + p0, sel(comp, knum, load(st.lst + p0)));
        }
        if (stopped) {
          st.live[py] &= ~((uint32_t)stopped << (8 * h));
          n_live -= __builtin_popcount(stopped);
        }
      }
    }
  }
  for (int py = 0; py < th; py++) {
    for (int px = 0; px < tw; px++) {
      const int p = py * TILE + px;
      const int64_t q = (y0 + py) * W + (x0 + px);
      const float Tp = st.T[p];
      rgb[3 * q] = st.acc[0][p] + Tp * bg[0];
      rgb[3 * q + 1] = st.acc[1][p] + Tp * bg[1];
      rgb[3 * q + 2] = st.acc[2][p] + Tp * bg[2];
      T_out[q] = Tp;
      const float a_out = 1.0f - Tp;
      depth[q] = a_out > 0 ? st.acc[3][p] / a_out : 0.0f;
      last[q] = st.lst[p];
    }
  }
}

// --------------------------------------------------------------------------------- backward

// Tile state of the backward pass.
struct BwdTile {
  alignas(32) float T[NPIX];     // transmittance after the entry being undone
  alignas(32) float S[3][NPIX];  // colour composited behind (incl. background)
  alignas(32) float G[3][NPIX];  // d loss / d rgb
  alignas(32) float GT[NPIX];    // g_alpha * T_final
  alignas(32) int32_t L[NPIX];   // entries each pixel went through (the forward's `last`)
  int32_t Lmax[2 * TILE];        // max of L per half row
};

// numba's backward body in float64 for the pixels of row py, columns c0 + (bits of lane_bits)
// with kk < L, adding to the float64 gradient sums g[9] (mx, my, a, b, c, o, r, g, b)
void backward_exact(BwdTile& st, const Splat& s, int py, double dy, int c0, int lane_bits,
                    int32_t kk, double* g) {
  for (int l = 0; l < 8; l++) {
    const int px = c0 + l, p = py * TILE + px;
    if (!((lane_bits >> l) & 1) || kk >= st.L[p]) continue;
    double dx = s.mxi - (double)(float)px;
    double sigma = sigma_exact(s, dx, dy);
    if (!(sigma <= (double)s.tau)) continue;  // NaN too (unreachable for valid splats)
    bool pos = sigma > 0;
    if (!pos) sigma = 0.0;
    double g_exp = std::exp(-sigma);
    double raw = (double)s.o * g_exp;
    double alpha = raw < (double)ALPHA_MAX_F ? raw : (double)ALPHA_MAX_F;
    if (alpha < (double)ALPHA_MIN_F) continue;
    double one_m = 1.0 - alpha;
    double Ti = (double)st.T[p] / one_m;
    double w = alpha * Ti;
    const float G0 = st.G[0][p], G1 = st.G[1][p], G2 = st.G[2][p];
    g[6] += w * G0;
    g[7] += w * G1;
    g[8] += w * G2;
    // float32 in numba too (float32 array elements times float32 scalars)
    float behind = st.S[0][p] * G0 + st.S[1][p] * G1 + st.S[2][p] * G2;
    float mine = s.cr * G0 + s.cg * G1 + s.cb * G2;
    double dA = Ti * (double)mine - (double)(behind - st.GT[p]) / one_m;
    st.S[0][p] = (float)((double)st.S[0][p] + w * (double)s.cr);
    st.S[1][p] = (float)((double)st.S[1][p] + w * (double)s.cg);
    st.S[2][p] = (float)((double)st.S[2][p] + w * (double)s.cb);
    st.T[p] = (float)Ti;
    if (raw < (double)ALPHA_MAX_F) {
      g[5] += g_exp * dA;
      if (pos) {
        double gs = -alpha * dA;
        g[2] += gs * 0.5 * dx * dx;
        g[3] += gs * dx * dy;
        g[4] += gs * 0.5 * dy * dy;
        g[0] += gs * ((double)s.a * dx + (double)s.b * dy);
        g[1] += gs * ((double)s.c * dy + (double)s.b * dx);
      }
    }
  }
}

// Gradients of the tile's list entries into gp [entries, 9]: those of entries s0 .. s0 + kmax
// - 1, kmax = the tile's largest `last` (stored in kend[t]); the entries after them are zeroed
// only with zero_rest (numba's output has them; the per-splat sums skip them).
void backward_tile(int64_t t, const int64_t* starts, const int32_t* entries, const Rec* recs,
                   const float* bg, const float* T_fin, const int32_t* last, const float* g_rgb,
                   const float* g_alpha, int64_t W, int64_t H, int64_t tiles_x, float* gp,
                   bool zero_rest, int32_t* kend) {
  const int64_t ty = t / tiles_x, tx = t - ty * tiles_x;
  const int64_t x0 = tx * TILE, y0 = ty * TILE;
  const int tw = (int)(W - x0 < TILE ? W - x0 : TILE);
  const int th = (int)(H - y0 < TILE ? H - y0 : TILE);
  const int64_t s0 = starts[t], s1 = starts[t + 1];
  BwdTile st;
  std::memset(&st, 0, sizeof st);  // pixels outside the image: L = 0, never touched
  int32_t kmax = 0;
  for (int py = 0; py < th; py++) {
    for (int px = 0; px < tw; px++) {
      const int p = py * TILE + px;
      const int64_t q = (y0 + py) * W + (x0 + px);
      const float Tf = T_fin[q];
      st.T[p] = Tf;
      for (int ch = 0; ch < 3; ch++) {
        st.S[ch][p] = Tf * bg[ch];
        st.G[ch][p] = g_rgb[3 * q + ch];
      }
      st.GT[p] = g_alpha[q] * Tf;
      st.L[p] = last[q];
      int32_t& hm = st.Lmax[2 * py + px / 8];
      hm = st.L[p] > hm ? st.L[p] : hm;
      kmax = st.L[p] > kmax ? st.L[p] : kmax;
    }
  }
  // entries no pixel reached (and below, those whose box misses the tile): no gradient
  kend[t] = kmax;
  if (zero_rest && s0 + kmax < s1)
    std::memset(gp + 9 * (s0 + kmax), 0, sizeof(float) * 9 * (s1 - s0 - kmax));
  Splat s;
  for (int32_t kk = kmax - 1; kk >= 0; kk--) {
    const int64_t k = s0 + kk;
    if (kk >= 8) __builtin_prefetch(recs + entries[k - 8]);
    if (!setup(s, recs[entries[k]], x0, y0, tw, th)) {
      std::memset(gp + 9 * k, 0, 9 * sizeof(float));
      continue;
    }
    // Per-lane sums. With gs = -alpha dA (numba's), the conic and mean gradients are
    // g_a = sum gs dx^2 / 2, g_b = sum gs dx dy, g_c = sum gs dy^2 / 2, and
    // g_mx = a sum gs dx + b sum gs dy, g_my = c sum gs dy + b sum gs dx (summed at the end).
    // g_o holds -(d loss / d o): the kernel carries -dA, one negation fewer per lane.
    v8f g_r = vf(0), g_g = vf(0), g_bl = vf(0), g_o = vf(0), g_a = vf(0), g_b = vf(0);
    v8f g_c = vf(0), s_x = vf(0), s_y = vf(0);
    double gx[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};  // the float64 lanes' sums, numba's order
    const v8i kkv = vi(kk);
    const v8f half_a = vf(0.5f * s.a), cr = vf(s.cr), cg = vf(s.cg), cbl = vf(s.cb);
    for (int py = s.va; py <= s.vb; py++) {
      const uint32_t chord = chord_bits(s, py);
      if (!chord) continue;
      const double dy = s.myi - (double)(float)py;
      const float dyf = (float)dy;
      const v8f bdy = vf(s.b * dyf), cdy2 = vf(0.5f * s.c * dyf * dyf);
      const v8f vdy = vf(dyf), hdy2 = vf(0.5f * dyf * dyf);
      for (int h = 0; h < 2; h++) {
        const int hb = (chord >> (8 * h)) & 0xff;
        if (!hb || kk >= st.Lmax[2 * py + h]) continue;
        const int p0 = py * TILE + 8 * h;
        const v8i in = LANES.m[hb] & (load(st.L + p0) > kkv);
        if (!bits(in)) continue;
        const Eval v = evaluate(s, h, half_a, bdy, cdy2);
        v8i m;
        if (!alpha_test(in, v, m) || (s.near_max && bits(in & near(v.raw, ALPHA_MAX_F)))) {
          backward_exact(st, s, py, dy, 8 * h, hb, kk, gx);
          continue;
        }
        if (!bits(m)) continue;
        const v8f inv = vf(1.0f) / (vf(1.0f) - v.alpha);
        const v8f T = load(st.T + p0);
        const v8f Ti = T * inv;
        const v8f w = keep(m, v.alpha * Ti);
        const v8f G0 = load(st.G[0] + p0), G1 = load(st.G[1] + p0), G2 = load(st.G[2] + p0);
        const v8f S0 = load(st.S[0] + p0), S1 = load(st.S[1] + p0), S2 = load(st.S[2] + p0);
        g_r = fma8(w, G0, g_r);
        g_g = fma8(w, G1, g_g);
        g_bl = fma8(w, G2, g_bl);
        const v8f behind = fma8(S2, G2, fma8(S1, G1, S0 * G0));
        const v8f mine = fma8(cbl, G2, fma8(cg, G1, cr * G0));
        // -dA = (behind - g_alpha T_final) / (1 - alpha) - T_i mine
        const v8f ndA = (behind - load(st.GT + p0)) * inv - Ti * mine;
        store(st.S[0] + p0, fma8(w, cr, S0));
        store(st.S[1] + p0, fma8(w, cg, S1));
        store(st.S[2] + p0, fma8(w, cbl, S2));
        store(st.T + p0, sel(m, Ti, T));
        // no gradient through the clamp at ALPHA_MAX (raw <= o < ALPHA_MAX unless near_max);
        // none to the conic and the mean where sigma <= 0
        const v8i mg = s.near_max ? m & (v.raw < vf(ALPHA_MAX_F)) : m;
        const v8f nd = keep(mg, ndA);
        g_o = fma8(v.e, nd, g_o);
        const v8f gs = keep(v.sigma > vf(0.0f), v.alpha * nd);
        const v8f gsx = gs * s.dx[h];
        g_a = fma8(gs, s.hdx2[h], g_a);
        g_b = fma8(gsx, vdy, g_b);
        g_c = fma8(gs, hdy2, g_c);
        s_x += gsx;
        s_y = fma8(gs, vdy, s_y);
      }
    }
    const double sx = hsum(s_x), sy = hsum(s_y);
    float* gk = gp + 9 * k;
    gk[0] = (float)((double)s.a * sx + (double)s.b * sy + gx[0]);
    gk[1] = (float)((double)s.c * sy + (double)s.b * sx + gx[1]);
    gk[2] = (float)(hsum(g_a) + gx[2]);
    gk[3] = (float)(hsum(g_b) + gx[3]);
    gk[4] = (float)(hsum(g_c) + gx[4]);
    gk[5] = (float)(gx[5] - hsum(g_o));
    gk[6] = (float)(hsum(g_r) + gx[6]);
    gk[7] = (float)(hsum(g_g) + gx[7]);
    gk[8] = (float)(hsum(g_bl) + gx[8]);
  }
}

// g [n, 9] = the sums per splat of the rows of gp [entries, 9] of the list entries
// starts[t] .. starts[t] + kend[t] - 1 of each tile t (all of them where kend is null), added in
// list order, as cpu.py _reduce: bit for bit. Serial, one pass: gp streams through once and the
// adds land in g (~36 bytes a splat, mostly in cache); splitting the splats between threads
// would stream gp once per thread, and bucketing the entries by splat first reads gp out of
// order -- both measured slower.
void sum_per_splat(const int64_t* starts, const int32_t* kend, int64_t n_t,
                   const int32_t* entries, const float* gp, int64_t n, float* g) {
  std::memset(g, 0, sizeof(float) * 9 * n);
  for (int64_t t = 0; t < n_t; t++) {
    const int64_t end = kend ? starts[t] + kend[t] : starts[t + 1];
    for (int64_t k = starts[t]; k < end; k++) {
      float* gi = g + 9 * (int64_t)entries[k];
      for (int q = 0; q < 9; q++) gi[q] += gp[9 * k + q];
    }
  }
}

}  // namespace

extern "C" {

// ALPHA_MAX, ALPHA_MIN, T_MIN, TILE as compiled in (the loader compares them with common.py)
void wg_constants(double* out) {
  out[0] = ALPHA_MAX_D;
  out[1] = ALPHA_MIN_D;
  out[2] = T_MIN_D;
  out[3] = TILE;
}

// Threads of the tile loops (n <= 0: OpenMP's default). Deliberately not omp_set_num_threads:
// torch shares the process's libgomp and reads that setting for its own parallel regions.
void wg_set_threads(int n) { g_threads = n; }

int wg_openmp() {
#ifdef _OPENMP
  return 1;
#else
  return 0;
#endif
}

// cpu.py _forward over n splats, its output out [H, W, 5] (r, g, b, T, depth) as separate
// planes rgb [H, W, 3], T [H, W], depth [H, W] (what the caller wants), and last [H, W], all
// written in full. Returns 0, or -1 when out of memory.
int wg_forward(const int64_t* starts, const int32_t* entries, const float* mx, const float* my,
               const float* hx, const float* hy, const float* ca, const float* cb,
               const float* cc, const float* op, const float* col, const float* z,
               const float* bg, int64_t n, int64_t W, int64_t H, int64_t tiles_x,
               int64_t tiles_y, float* rgb, float* T, float* depth, int32_t* last) {
  Rec* recs = pack_all(n, mx, my, hx, hy, ca, cb, cc, op, col, z);
  if (recs == nullptr) return -1;
  OMP(omp parallel for schedule(dynamic, 4) num_threads(n_threads()))
  for (int64_t t = 0; t < tiles_x * tiles_y; t++)
    forward_tile(t, starts, entries, recs, bg, W, H, tiles_x, rgb, T, depth, last);
  std::free(recs);
  return 0;
}

// cpu.py _backward over n splats: the gradients (mx, my, a, b, c, o, r, g, b) per list entry
// into gp [entries, 9] (numba's output, written in full: zeros for the entries no pixel
// reached) when gp is not null, and their sums per splat into g [n, 9] when g is not null --
// then the per-entry array (~5x larger, mostly unreached entries) is internal and only
// partly written. The sums are cpu.py _reduce's, bit for bit (sum_per_splat): deterministic,
// whatever the threads. Returns 0, or -1 when out of memory.
int wg_backward(const int64_t* starts, const int32_t* entries, const float* mx, const float* my,
                const float* hx, const float* hy, const float* ca, const float* cb,
                const float* cc, const float* op, const float* col, const float* bg,
                const float* T_fin, const int32_t* last, const float* g_rgb,
                const float* g_alpha, int64_t n, int64_t W, int64_t H, int64_t tiles_x,
                int64_t tiles_y, float* gp, float* g) {
  const int64_t n_t = tiles_x * tiles_y, m = starts[n_t];
  Rec* recs = pack_all(n, mx, my, hx, hy, ca, cb, cc, op, col, nullptr);
  const bool own_gp = gp == nullptr;
  if (own_gp) gp = (float*)std::malloc(sizeof(float) * 9 * m + 1);
  int32_t* kend = (int32_t*)std::malloc(sizeof(int32_t) * n_t + 1);
  int err = recs == nullptr || gp == nullptr || kend == nullptr ? -1 : 0;
  if (!err) {
    OMP(omp parallel for schedule(dynamic, 4) num_threads(n_threads()))
    for (int64_t t = 0; t < n_t; t++)
      backward_tile(t, starts, entries, recs, bg, T_fin, last, g_rgb, g_alpha, W, H, tiles_x, gp,
                    !own_gp, kend);
    if (g) sum_per_splat(starts, kend, n_t, entries, gp, n, g);
  }
  std::free(recs);
  std::free(kend);
  if (own_gp) std::free(gp);
  return err;
}

// cpu.py _reduce: out [n, 9] = sum of gp [m, 9] over the entries of each splat, in list order.
void wg_reduce(const int32_t* entries, const float* gp, int64_t m, int64_t n, float* out) {
  const int64_t starts[2] = {0, m};
  sum_per_splat(starts, nullptr, 1, entries, gp, n, out);
}

// cpu.py _order: the ids i with valid[i], sorted by depth[i] (stable: ties by id, as
// torch.argsort(stable=True)), into out; returns their count. LSD radix sort, 4 passes of 8
// bits (skipping those where all keys share the digit) over keys that order as the floats do
// (-0 as +0, NaN last); -1 when out of memory.
int64_t wg_order(const float* depth, const uint8_t* valid, int64_t n, int64_t* out) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) m += valid[i] != 0;
  uint32_t* key = (uint32_t*)std::malloc(sizeof(uint32_t) * 2 * (m + 1));
  int32_t* id = (int32_t*)std::malloc(sizeof(int32_t) * 2 * (m + 1));
  if (key == nullptr || id == nullptr) {
    std::free(key);
    std::free(id);
    return -1;
  }
  m = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!valid[i]) continue;
    float f = depth[i] + 0.0f;  // -0 -> +0
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if (f != f) u = 0x7FC00000u;  // one NaN, after +inf
    key[m] = u & 0x80000000u ? ~u : u | 0x80000000u;
    id[m++] = (int32_t)i;
  }
  uint32_t *k0 = key, *k1 = key + m + 1;
  int32_t *i0 = id, *i1 = id + m + 1;
  for (int shift = 0; shift < 32; shift += 8) {
    int64_t count[257] = {0};
    for (int64_t j = 0; j < m; j++) count[((k0[j] >> shift) & 255) + 1]++;
    bool trivial = false;  // one digit for all (e.g. the exponent bits of similar depths)
    for (int b = 0; b < 256; b++) {
      trivial |= count[b + 1] == m;
      count[b + 1] += count[b];
    }
    if (trivial) continue;
    for (int64_t j = 0; j < m; j++) {
      const int64_t dst = count[(k0[j] >> shift) & 255]++;
      k1[dst] = k0[j];
      i1[dst] = i0[j];
    }
    std::swap(k0, k1);
    std::swap(i0, i1);
  }
  for (int64_t j = 0; j < m; j++) out[j] = i0[j];
  std::free(key);
  std::free(id);
  return m;
}

// exp_neg on n floats (the tests measure its error)
void wg_exp_neg(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    alignas(32) float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t m = n - i < 8 ? n - i : 8;
    std::memcpy(buf, x + i, sizeof(float) * m);
    store(buf, exp_neg(-load(buf)));
    std::memcpy(y + i, buf, sizeof(float) * m);
  }
}

}  // extern "C"
