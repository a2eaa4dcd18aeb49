// Native versions of the tile kernels of worldgen/raster/cpu.py (_forward, _backward with
// _reduce, and the depth sort of _order), SIMD over pixels, and of its splat projection
// (_project_fwd, _project_bwd, for float32 parameters), SIMD over splats. Plain C ABI, loaded
// with ctypes by worldgen/raster/native/__init__.py, which builds this file with
// `c++ -O3 -march=native -fopenmp -ffp-contract=off ...`. -march=native and OpenMP are
// optional: without them the 8-lane vectors are split into SSE/NEON halves and the tiles run
// serially. GCC vector extensions (GCC >= 9, clang), AVX/FMA intrinsics only where available.
//
// The projection (its section below) is numba's float64 arithmetic operation for operation, 4
// splats to a v4d, branches as lane masks: the same bits but where its polynomial exp/log
// (within 1 ulp, vectorised: libm's are not) differ from libm's by an ulp.
//
// The tile kernels' semantics are the numba kernels' (read cpu.py's docstring first); the
// differences:
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
// and adds (numba/LLVM does not fuse without fastmath), in the projection too; the float32 path
// and the projection's exp ask for their FMAs explicitly (fma8, vfma). No -ffast-math:
// comparisons with NaN and inf stay IEEE (a pair whose sigma is NaN, impossible for a valid
// splat, is skipped).

#include <cmath>
#include <utility>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#ifdef __linux__
#include <sys/mman.h>
#include <unistd.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#define OMP(directive) _Pragma(#directive)
#else
#define OMP(directive)
#endif
#if defined(__AVX__) || defined(__SSE__)
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

// ------------------------------------------------------------------------------ projection
//
// cpu.py's _project_fwd / _project_bwd for float32 parameters, 4 splats at a time: every
// per-splat quantity is a V (v4d), lane l for splat i0 + l, and numba's branches are lane masks
// (a lane that numba would leave computes garbage that is masked out of the outputs). The
// float64 arithmetic is numba's operation for operation, in its order (no FMAs:
// -ffp-contract=off; min/max with numba's NaN behaviour: nmin/nmax; float32 products where
// numba multiplies two float32 values), so the results are numba's bits except where vexp/vlog
// differ from libm's exp/log (by an ulp, rarely) and in the sign of zero sums (terms that are
// zero by construction, e.g. of the SH derivatives, are left out). A splat's parameters and
// gradients are rows of the caller's arrays: 4x4 transposes turn 4 rows into lane vectors and
// back.

constexpr int NL = 4;  // splats a block
typedef v4d V;
typedef v4l VL;  // masks: all ones or zero per lane
typedef uint64_t v4q __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

// m ? a : b per lane
inline V blend(VL m, V a, V b) {
#if defined(__AVX__)
  return (V)_mm256_blendv_pd((__m256d)b, (__m256d)a, (__m256d)m);
#else
  return sel4(m, a, b);
#endif
}
// numba's max(a, b) and min(a, b): b if b > a (b < a) else a, so a NaN a stays
inline V nmax(V a, V b) { return blend(b > a, b, a); }
inline V nmin(V a, V b) { return blend(b < a, b, a); }

inline V vfma(V a, V b, V c) {
#if defined(__FMA__) && defined(__AVX__)
  return (V)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
  return a * b + c;
#endif
}

// float32 <-> float64 (round to nearest even, as numba's casts; GCC's __builtin_convertvector
// takes 5 instructions for what AVX does in one)
inline v4f to_f32(V a) {
#if defined(__AVX__)
  return (v4f)_mm256_cvtpd_ps((__m256d)a);
#else
  return __builtin_convertvector(a, v4f);
#endif
}
inline V to_f64(v4f a) {
#if defined(__AVX__)
  return (V)_mm256_cvtps_pd((__m128)a);
#else
  return __builtin_convertvector(a, V);
#endif
}

constexpr double LN2_HI = 6.93147180369123816490e-01;  // 32 significant bits: n * LN2_HI exact
constexpr double LN2_LO = 1.90821492927058770002e-10;
constexpr double BIG = 6755399441055744.0;  // 1.5 * 2^52: x + BIG - BIG rounds x to an integer

// e^x in float64 for every x (NaN stays NaN, inf beyond ~709.78, subnormals then 0 below
// ~-708): x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite, ln2 in two parts), e^r by its Taylor
// series to r^13 (truncation < 5e-18 relative; Estrin's scheme, FMAs), 2^n as the product of
// two powers of two built in the exponent field (so that 2^n below 2^-1022 rounds once, in the
// last product). Within 1 ulp of libm's exp (~9% of results differ from it by 1 ulp;
// tests/test_raster_cpu.py measures it).
inline V vexp(V x) {
  V xc = blend(x > 710.0, vd(710.0), x);  // comparisons with NaN are false: NaN kept
  xc = blend(xc < -746.0, vd(-746.0), xc);
  const V t = vfma(xc, vd(1.4426950408889634), vd(BIG));  // BIG + round(x / ln2)
  const V n = t - BIG;
  const V r = vfma(n, vd(-LN2_LO), vfma(n, vd(-LN2_HI), xc));
  // e^r = 1 + r + r^2 q(r), q = 1/2! + r/3! + ... + r^11/13!
  const V r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
  const V a0 = vfma(vd(1.0 / 6.0), r, vd(0.5)), a1 = vfma(vd(1.0 / 120.0), r, vd(1.0 / 24.0));
  const V a2 = vfma(vd(1.0 / 5040.0), r, vd(1.0 / 720.0));
  const V a3 = vfma(vd(1.0 / 362880.0), r, vd(1.0 / 40320.0));
  const V a4 = vfma(vd(1.0 / 39916800.0), r, vd(1.0 / 3628800.0));
  const V a5 = vfma(vd(1.0 / 6227020800.0), r, vd(1.0 / 479001600.0));
  const V b0 = vfma(a1, r2, a0), b1 = vfma(a3, r2, a2), b2 = vfma(a5, r2, a4);
  const V q = vfma(b2, r8, vfma(b1, r4, b0));
  const V p = 1.0 + vfma(r2, q, r);
  // n in [-1077, 1025] = n1 + n2, both in [-539, 513]; the shift is a logical one (AVX2 has
  // no arithmetic 64-bit shift): n1 = floor((n + 2048) / 2) - 1024
  const VL ni = (VL)t - (VL)vd(BIG);
  const VL n1 = (VL)((v4q)(ni + 2048) >> 1) - 1024, n2 = ni - n1;
  return p * (V)((n1 + 1023) << 52) * (V)((n2 + 1023) << 52);
}

// log(x) in float64 for positive normal x (and NaN): fdlibm's/musl's log (x = 2^k (1 + f),
// sqrt(2)/2 <= 1 + f < sqrt(2), log(1 + f) = f - hfsq + s (hfsq + R(s^2)), s = f / (2 + f)),
// < 1 ulp. Here x = 255 max(opacity, 1/255) in [1, 255].
inline V vlog(V x) {
  const int64_t c0 = (int64_t)0x3fe6a09e << 32;  // the high word of sqrt(2)/2
  VL hx = (VL)x + (((int64_t)0x3ff00000 << 32) - c0);
  const VL k = (VL)((v4q)hx >> 52) - 0x3ff;  // hx >= 0 (AVX2: logical shifts only)
  hx = (hx & 0x000fffffffffffffLL) + c0;
  const V f = (V)hx - 1.0;
  const V hfsq = 0.5 * f * f;
  const V s = f / (2.0 + f);
  const V z = s * s;
  const V w = z * z;
  const V t1 = w * (3.999999999940941908e-01 +
                    w * (2.222219843214978396e-01 + w * 1.531383769920937332e-01));
  const V t2 = z * (6.666666666666735130e-01 +
                    w * (2.857142874366239149e-01 +
                         w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
  const V R = t2 + t1;
  const V dk = (V)(k + (VL)vd(BIG)) - BIG;  // exact: |k| < 2^51
  const V res = s * (hfsq + R) + dk * LN2_LO - hfsq + f + dk * LN2_HI;
  return blend(x != x, x, res);
}

// a <- (a0 b0 c0 d0), b <- (a1 b1 c1 d1), ...
inline void transpose4(v4f& a, v4f& b, v4f& c, v4f& d) {
#if defined(__SSE__)
  __m128 r0 = (__m128)a, r1 = (__m128)b, r2 = (__m128)c, r3 = (__m128)d;
  _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
  a = (v4f)r0, b = (v4f)r1, c = (v4f)r2, d = (v4f)r3;
#else
  const v4f A = a, B = b, C = c, D = d;
  a = (v4f){A[0], B[0], C[0], D[0]};
  b = (v4f){A[1], B[1], C[1], D[1]};
  c = (v4f){A[2], B[2], C[2], D[2]};
  d = (v4f){A[3], B[3], C[3], D[3]};
#endif
}

inline v4f loadu4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu4(float* p, v4f v) { std::memcpy(p, &v, sizeof v); }

// columns [0, NC) of the rows idx[0, 4) of a row-major float32 array with `stride` floats a
// row, as NC float32 lane vectors
template <int NC>
inline void get_rows_f32(const float* src, int64_t stride, const int64_t* idx, v4f* cols) {
  const float* p[4] = {src + idx[0] * stride, src + idx[1] * stride, src + idx[2] * stride,
                       src + idx[3] * stride};
  int c = 0;
  for (; c + 4 <= NC; c += 4) {
    v4f a = loadu4(p[0] + c), b = loadu4(p[1] + c), cc = loadu4(p[2] + c),
        d = loadu4(p[3] + c);
    transpose4(a, b, cc, d);
    cols[c] = a, cols[c + 1] = b, cols[c + 2] = cc, cols[c + 3] = d;
  }
  for (; c < NC; c++) cols[c] = (v4f){p[0][c], p[1][c], p[2][c], p[3][c]};
}

// the same as float64 lane vectors
template <int NC>
inline void get_rows(const float* src, int64_t stride, const int64_t* idx, V* cols) {
  v4f f[NC];
  get_rows_f32<NC>(src, stride, idx, f);
  for (int c = 0; c < NC; c++) cols[c] = to_f64(f[c]);
}

// the lane vectors cols[0, NC), rounded to float32, into columns [0, NC) of the rows
// i0 .. i0 + cnt - 1 of a row-major array with `stride` floats a row
template <int NC>
inline void put_rows(float* dst, int64_t stride, int64_t i0, int cnt, const V* cols) {
  float* p = dst + i0 * stride;
  int c = 0;
  for (; c + 4 <= NC; c += 4) {
    v4f a = to_f32(cols[c]), b = to_f32(cols[c + 1]), cc = to_f32(cols[c + 2]),
        d = to_f32(cols[c + 3]);
    transpose4(a, b, cc, d);
    if (cnt == 4) {
      storeu4(p + c, a), storeu4(p + stride + c, b);
      storeu4(p + 2 * stride + c, cc), storeu4(p + 3 * stride + c, d);
    } else {
      const v4f r[4] = {a, b, cc, d};
      for (int l = 0; l < cnt; l++) storeu4(p + l * stride + c, r[l]);
    }
  }
  for (; c < NC; c++) {
    const v4f a = to_f32(cols[c]);
    if (cnt == 4) {
      p[c] = a[0], p[stride + c] = a[1], p[2 * stride + c] = a[2], p[3 * stride + c] = a[3];
    } else {
      for (int l = 0; l < cnt; l++) p[l * stride + c] = a[l];
    }
  }
}

// gsplat's SH constants (common.py's _SH_C*; wg_constants reports them to the loader)
constexpr double SH_C0 = 0.2820947917738781, SH_C1 = 0.48860251190292;
constexpr double SH_C2[4] = {1.092548430592079, 0.9461746957575601, 0.3153915652525201,
                             0.5462742152960395};
constexpr double SH_C3[6] = {2.285228997322329,  0.4570457994644658, 1.445305721320277,
                             0.5900435899266435, 1.865881662950577,  1.119528997770346};
constexpr double EPS2D_D = 0.3, EXTEND_MAX_D = 3.33;

// cpu.py _sh_basis: the bases b[0, K) at the unit direction (x, y, z)
template <int DEG>
inline void sh_basis(V x, V y, V z, V* b) {
  constexpr double C1 = SH_C1;
  constexpr double C20 = SH_C2[0], C21 = SH_C2[1], C22 = SH_C2[2], C23 = SH_C2[3];
  constexpr double C30 = SH_C3[0], C31 = SH_C3[1], C32 = SH_C3[2], C33 = SH_C3[3],
                   C34 = SH_C3[4], C35 = SH_C3[5];
  b[0] = vd(SH_C0);
  if (DEG < 1) return;
  b[1] = -C1 * y;
  b[2] = C1 * z;
  b[3] = -C1 * x;
  if (DEG < 2) return;
  b[4] = C23 * 2.0 * x * y;
  b[5] = -C20 * z * y;
  b[6] = C21 * z * z - C22;
  b[7] = -C20 * z * x;
  b[8] = C23 * (x * x - y * y);
  if (DEG < 3) return;
  const V tc = -C30 * z * z + C31;
  b[9] = -C33 * (3.0 * x * x * y - y * y * y);
  b[10] = C32 * z * 2.0 * x * y;
  b[11] = tc * y;
  b[12] = z * (C34 * z * z - C35);
  b[13] = tc * x;
  b[14] = C32 * z * (x * x - y * y);
  b[15] = -C33 * (x * x * x - 3.0 * x * y * y);
}

// the derivatives d b_k / d (x, y, z) that are not zero by construction: D[k][j] where
// SH_NZ[k][j] (cpu.py _sh_basis's dout)
constexpr bool SH_NZ[16][3] = {{0, 0, 0}, {0, 1, 0}, {0, 0, 1}, {1, 0, 0},
                               {1, 1, 0}, {0, 1, 1}, {0, 0, 1}, {1, 0, 1},
                               {1, 1, 0}, {1, 1, 0}, {1, 1, 1}, {0, 1, 1},
                               {0, 0, 1}, {1, 0, 1}, {1, 1, 1}, {1, 1, 0}};

template <int DEG>
inline void sh_dbasis(V x, V y, V z, V (*D)[3]) {
  constexpr double C1 = SH_C1;
  constexpr double C20 = SH_C2[0], C21 = SH_C2[1], C23 = SH_C2[3];
  constexpr double C30 = SH_C3[0], C31 = SH_C3[1], C32 = SH_C3[2], C33 = SH_C3[3],
                   C34 = SH_C3[4], C35 = SH_C3[5];
  if (DEG < 1) return;
  D[1][1] = vd(-C1);
  D[2][2] = vd(C1);
  D[3][0] = vd(-C1);
  if (DEG < 2) return;
  D[4][0] = 2.0 * C23 * y;
  D[4][1] = 2.0 * C23 * x;
  D[5][1] = -C20 * z;
  D[5][2] = -C20 * y;
  D[6][2] = 2.0 * C21 * z;
  D[7][0] = -C20 * z;
  D[7][2] = -C20 * x;
  D[8][0] = 2.0 * C23 * x;
  D[8][1] = -2.0 * C23 * y;
  if (DEG < 3) return;
  const V tc = -C30 * z * z + C31;
  D[9][0] = -C33 * 6.0 * x * y;
  D[9][1] = -C33 * (3.0 * x * x - 3.0 * y * y);
  D[10][0] = 2.0 * C32 * z * y;
  D[10][1] = 2.0 * C32 * z * x;
  D[10][2] = 2.0 * C32 * x * y;
  D[11][1] = tc;
  D[11][2] = -2.0 * C30 * z * y;
  D[12][2] = 3.0 * C34 * z * z - C35;
  D[13][0] = tc;
  D[13][2] = -2.0 * C30 * z * x;
  D[14][0] = 2.0 * C32 * z * x;
  D[14][1] = -2.0 * C32 * z * y;
  D[14][2] = C32 * (x * x - y * y);
  D[15][0] = -C33 * (3.0 * x * x - 3.0 * y * y);
  D[15][1] = 6.0 * C33 * x * y;
}

// The camera as the projection kernels see it: cpu.py's scalars, broadcast (memory operands)
struct Cam {
  V R[3][3], t[3], fx, fy, cx, cy, lxp, lxn, lyp, lyn, ccx, ccy, ccz, near, far;
};

Cam make_cam(const double* Rv, const double* tv, const double* cam, int64_t W, int64_t H,
             double near, double far) {
  const double fx = cam[0], fy = cam[1], cx = cam[2], cy = cam[3];
  const double tan_fx = 0.5 * (double)W / fx, tan_fy = 0.5 * (double)H / fy;
  Cam C;
  for (int a = 0; a < 3; a++) {
    for (int b = 0; b < 3; b++) C.R[a][b] = vd(Rv[3 * a + b]);
    C.t[a] = vd(tv[a]);
  }
  C.fx = vd(fx), C.fy = vd(fy), C.cx = vd(cx), C.cy = vd(cy);
  C.lxp = vd(((double)W - cx - 0.5) / fx + 0.3 * tan_fx);
  C.lxn = vd((cx + 0.5) / fx + 0.3 * tan_fx);
  C.lyp = vd(((double)H - cy - 0.5) / fy + 0.3 * tan_fy);
  C.lyn = vd((cy + 0.5) / fy + 0.3 * tan_fy);
  C.ccx = vd(-(Rv[0] * tv[0] + Rv[3] * tv[1] + Rv[6] * tv[2]));
  C.ccy = vd(-(Rv[1] * tv[0] + Rv[4] * tv[1] + Rv[7] * tv[2]));
  C.ccz = vd(-(Rv[2] * tv[0] + Rv[5] * tv[1] + Rv[8] * tv[2]));
  C.near = vd(near), C.far = vd(far);
  return C;
}

struct ProjArgs {
  const float *means, *quats, *log_scales, *logits, *sh;
  int64_t n, kt;  // splats, SH coefficients a splat in sh ([n, kt, 3])
  float* out;     // forward: [n, 12]
  uint8_t* valid_out;
  const uint8_t* valid;  // backward
  const float *g_uv, *g_conic, *g_opacity, *g_color;
  float *g_means, *g_quats, *g_log_scales, *g_logits, *g_sh;
};

// What the forward and backward passes share, per lane: the camera-frame mean, the
// normalised quaternion, its rotation matrix, the scales, M = R diag(s) and Sc = Rv M M^T Rv^T
// (cpu.py _rotmat and _cov_in_camera, all nine entries as numba computes them: Sc is not
// exactly symmetric)
struct Geo {
  V mx, my, mz, x, y, z, op, qn, qw, qx, qy, qz, sc[3], R[3][3], M[3][3], Sc[3][3];
};

inline void geometry(const Cam& C, const ProjArgs& A, const int64_t* idx, Geo& g) {
  V m[3], q[4], ls[3], lg[1];
  get_rows<3>(A.means, 3, idx, m);
  get_rows<4>(A.quats, 4, idx, q);
  get_rows<3>(A.log_scales, 3, idx, ls);
  get_rows<1>(A.logits, 1, idx, lg);
  g.mx = m[0], g.my = m[1], g.mz = m[2];
  const V(*Rv)[3] = C.R;
  g.x = Rv[0][0] * g.mx + Rv[0][1] * g.my + Rv[0][2] * g.mz + C.t[0];
  g.y = Rv[1][0] * g.mx + Rv[1][1] * g.my + Rv[1][2] * g.mz + C.t[1];
  g.z = Rv[2][0] * g.mx + Rv[2][1] * g.my + Rv[2][2] * g.mz + C.t[2];
  g.op = 1.0 / (1.0 + vexp(-lg[0]));
  g.qn = nmax(sqrt4(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]), vd(1e-12));
  const V qw = q[0] / g.qn, qx = q[1] / g.qn, qy = q[2] / g.qn, qz = q[3] / g.qn;
  g.qw = qw, g.qx = qx, g.qy = qy, g.qz = qz;
  V(*R)[3] = g.R;
  R[0][0] = 1.0 - 2.0 * (qy * qy + qz * qz);
  R[0][1] = 2.0 * (qx * qy - qw * qz);
  R[0][2] = 2.0 * (qx * qz + qw * qy);
  R[1][0] = 2.0 * (qx * qy + qw * qz);
  R[1][1] = 1.0 - 2.0 * (qx * qx + qz * qz);
  R[1][2] = 2.0 * (qy * qz - qw * qx);
  R[2][0] = 2.0 * (qx * qz - qw * qy);
  R[2][1] = 2.0 * (qy * qz + qw * qx);
  R[2][2] = 1.0 - 2.0 * (qx * qx + qy * qy);
  for (int b = 0; b < 3; b++) g.sc[b] = vexp(ls[b]);
  V(*M)[3] = g.M;
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) M[a][b] = R[a][b] * g.sc[b];
  V S[3][3], T1[3][3];
  for (int a = 0; a < 3; a++)
    for (int b = a; b < 3; b++)  // exactly symmetric (the same products, in the same order)
      S[a][b] = S[b][a] = M[a][0] * M[b][0] + M[a][1] * M[b][1] + M[a][2] * M[b][2];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++)
      T1[a][b] = Rv[a][0] * S[0][b] + Rv[a][1] * S[1][b] + Rv[a][2] * S[2][b];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++)
      g.Sc[a][b] = T1[a][0] * Rv[b][0] + T1[a][1] * Rv[b][1] + T1[a][2] * Rv[b][2];
}

// cpu.py _cov2d
inline void cov2d(const V (*Sc)[3], V j00, V j02, V j11, V j12, V& c00, V& c01, V& c11) {
  c00 = j00 * j00 * Sc[0][0] + 2.0 * j00 * j02 * Sc[0][2] + j02 * j02 * Sc[2][2] + EPS2D_D;
  c11 = j11 * j11 * Sc[1][1] + 2.0 * j11 * j12 * Sc[1][2] + j12 * j12 * Sc[2][2] + EPS2D_D;
  c01 = j00 * j11 * Sc[0][1] + j00 * j12 * Sc[0][2];
  c01 += j02 * j11 * Sc[2][1] + j02 * j12 * Sc[2][2];
}

inline void lanes(int64_t i0, int cnt, int64_t* idx) {
  for (int l = 0; l < NL; l++) idx[l] = i0 + (l < cnt ? l : cnt - 1);  // the tail repeats
}

// cpu.py _project_fwd for the splats i0 .. i0 + cnt - 1 (cnt <= NL)
template <int DEG>
void project_fwd_block(const Cam& C, const ProjArgs& A, int64_t i0, int cnt) {
  constexpr int K = (DEG + 1) * (DEG + 1);
  int64_t idx[NL];
  lanes(i0, cnt, idx);
  Geo g;
  geometry(C, A, idx, g);
  const V x = g.x, y = g.y, z = g.z, op = g.op;
  VL w = (z >= C.near) & (z <= C.far) & ~(op < ALPHA_MIN_D);  // numba's `continue`s
  const V tx = z * nmin(nmax(x / z, -C.lxn), C.lxp);
  const V ty = z * nmin(nmax(y / z, -C.lyn), C.lyp);
  const V j00 = C.fx / z, j02 = -C.fx * tx / (z * z);
  const V j11 = C.fy / z, j12 = -C.fy * ty / (z * z);
  V c00, c01, c11;
  cov2d(g.Sc, j00, j02, j11, j12, c00, c01, c11);
  const V det = c00 * c11 - c01 * c01;
  w &= det > 0.0;
  const V u = C.fx * x / z + C.cx, v = C.fy * y / z + C.cy;
  const V ext =
      nmin(sqrt4(2.0 * vlog(nmax(op, vd(ALPHA_MIN_D)) / ALPHA_MIN_D)), vd(EXTEND_MAX_D));
  V o[12];
  o[0] = u, o[1] = v;
  o[2] = c11 / det, o[3] = -c01 / det, o[4] = c00 / det;
  o[5] = z, o[6] = op;
  o[10] = ext * sqrt4(c00), o[11] = ext * sqrt4(c11);
  // colour
  const V dx = g.mx - C.ccx, dy = g.my - C.ccy, dz = g.mz - C.ccz;
  const V dn = nmax(sqrt4(dx * dx + dy * dy + dz * dz), vd(1e-12));
  V b[K];
  v4f sh[3 * K];
  sh_basis<DEG>(dx / dn, dy / dn, dz / dn, b);
  get_rows_f32<3 * K>(A.sh, 3 * A.kt, idx, sh);
  for (int ch = 0; ch < 3; ch++) {
    V acc = b[0] * to_f64(sh[ch]);  // numba starts from 0.0: the same sum (but for -0)
    for (int k = 1; k < K; k++) acc += b[k] * to_f64(sh[3 * k + ch]);
    o[7 + ch] = nmax(acc + 0.5, vd(0.0));
  }
  const V zero = vd(0.0);
  for (int j = 0; j < 12; j++)
    if (j != 5 && j != 6) o[j] = blend(w, o[j], zero);
  put_rows<12>(A.out, 12, i0, cnt, o);
  const VL ok = w & (u - u == 0.0) & (v - v == 0.0);  // finite u and v
  for (int l = 0; l < cnt; l++) A.valid_out[i0 + l] = ok[l] != 0;
}

// cpu.py _project_bwd for the splats i0 .. i0 + cnt - 1 (cnt <= NL)
template <int DEG>
void project_bwd_block(const Cam& C, const ProjArgs& A, int64_t i0, int cnt) {
  constexpr int K = (DEG + 1) * (DEG + 1);
  const int64_t rs = 3 * A.kt;  // floats per splat in sh and g_sh
  bool any = false;
  for (int l = 0; l < cnt; l++) {
    any |= A.valid[i0 + l] != 0;
    // the coefficients above the degree (every one where the splat is invalid)
    if (rs > 3 * K) std::memset(A.g_sh + (i0 + l) * rs + 3 * K, 0, sizeof(float) * (rs - 3 * K));
  }
  if (!any) {
    for (int l = 0; l < cnt; l++) {
      const int64_t i = i0 + l;
      std::memset(A.g_sh + i * rs, 0, sizeof(float) * 3 * K);
      std::memset(A.g_means + 3 * i, 0, sizeof(float) * 3);
      std::memset(A.g_quats + 4 * i, 0, sizeof(float) * 4);
      std::memset(A.g_log_scales + 3 * i, 0, sizeof(float) * 3);
      A.g_logits[i] = 0.0f;
    }
    return;
  }
  int64_t idx[NL];
  lanes(i0, cnt, idx);
  VL vm;
  for (int l = 0; l < NL; l++) vm[l] = A.valid[idx[l]] ? -1 : 0;
  Geo g;
  geometry(C, A, idx, g);
  const V x = g.x, y = g.y, z = g.z, op = g.op;
  const V(*Rv)[3] = C.R;
  V guv[2], gcn[3], gop[1], gcol[3];
  get_rows<2>(A.g_uv, 2, idx, guv);
  get_rows<3>(A.g_conic, 3, idx, gcn);
  get_rows<1>(A.g_opacity, 1, idx, gop);
  get_rows<3>(A.g_color, 3, idx, gcol);
  V g_logit[1] = {gop[0] * op * (1.0 - op)};
  const V(*Sc)[3] = g.Sc;
  const V clx0 = x / z, cly0 = y / z;
  const VL free_x = (-C.lxn <= clx0) & (clx0 <= C.lxp);
  const VL free_y = (-C.lyn <= cly0) & (cly0 <= C.lyp);
  const V clx = nmin(nmax(clx0, -C.lxn), C.lxp);
  const V cly = nmin(nmax(cly0, -C.lyn), C.lyp);
  const V tx = z * clx, ty = z * cly;
  const V j00 = C.fx / z, j02 = -C.fx * tx / (z * z);
  const V j11 = C.fy / z, j12 = -C.fy * ty / (z * z);
  V c00, c01, c11;
  cov2d(Sc, j00, j02, j11, j12, c00, c01, c11);
  const V det = c00 * c11 - c01 * c01;
  const V ga = gcn[0], gb = gcn[1], gc = gcn[2];
  // conic = (c11, -c01, c00) / det
  const V g_det = -(ga * c11 - gb * c01 + gc * c00) / (det * det);
  const V g00 = gc / det + g_det * c11;
  const V g11 = ga / det + g_det * c00;
  const V g01 = -gb / det - 2.0 * g_det * c01;
  const V h = 0.5 * g01;
  // rows of Gc J and g_J = 2 (Gc J) Sc (entries 00, 02, 11, 12)
  const V gj0[3] = {g00 * j00, h * j11, g00 * j02 + h * j12};
  const V gj1[3] = {h * j00, g11 * j11, h * j02 + g11 * j12};
  const V gJ00 = 2.0 * (gj0[0] * Sc[0][0] + gj0[1] * Sc[1][0] + gj0[2] * Sc[2][0]);
  const V gJ02 = 2.0 * (gj0[0] * Sc[0][2] + gj0[1] * Sc[1][2] + gj0[2] * Sc[2][2]);
  const V gJ11 = 2.0 * (gj1[0] * Sc[0][1] + gj1[1] * Sc[1][1] + gj1[2] * Sc[2][1]);
  const V gJ12 = 2.0 * (gj1[0] * Sc[0][2] + gj1[1] * Sc[1][2] + gj1[2] * Sc[2][2]);
  // g_Sc = J^T (Gc J) (numba's 0.0 * x terms left out)
  V gSc[3][3];
  for (int b = 0; b < 3; b++) {
    gSc[0][b] = j00 * gj0[b];
    gSc[1][b] = j11 * gj1[b];
    gSc[2][b] = j02 * gj0[b] + j12 * gj1[b];
  }
  // mean2d and the J entries
  const V gu = guv[0], gv = guv[1];
  V g_x = gu * C.fx / z;
  V g_y = gv * C.fy / z;
  V g_z = -(gu * C.fx * x + gv * C.fy * y) / (z * z);
  g_z += -gJ00 * C.fx / (z * z) - gJ11 * C.fy / (z * z);
  const V g_tx = -gJ02 * C.fx / (z * z);
  g_z += gJ02 * 2.0 * C.fx * tx / (z * z * z);
  const V g_ty = -gJ12 * C.fy / (z * z);
  g_z += gJ12 * 2.0 * C.fy * ty / (z * z * z);
  g_x = blend(free_x, g_x + g_tx, g_x);
  g_z = blend(free_x, g_z, g_z + g_tx * clx);
  g_y = blend(free_y, g_y + g_ty, g_y);
  g_z = blend(free_y, g_z, g_z + g_ty * cly);
  V gm[3];
  for (int a = 0; a < 3; a++) gm[a] = Rv[0][a] * g_x + Rv[1][a] * g_y + Rv[2][a] * g_z;
  // Sc = Rv S Rv^T -> g_S = Rv^T g_Sc Rv, numba's sum order
  V gS[3][3];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) {
      V acc = Rv[0][a] * gSc[0][0] * Rv[0][b];  // numba starts from 0.0 (but for -0)
      for (int c = 0; c < 3; c++)
        for (int d = c == 0 ? 1 : 0; d < 3; d++) acc += Rv[c][a] * gSc[c][d] * Rv[d][b];
      gS[a][b] = acc;
    }
  // S = M M^T -> g_M = (g_S + g_S^T) M; M = R diag(s)
  const V(*M)[3] = g.M;
  const V(*R)[3] = g.R;
  V gM[3][3];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++)
      gM[a][b] = (gS[a][0] + gS[0][a]) * M[0][b] + (gS[a][1] + gS[1][a]) * M[1][b] +
                 (gS[a][2] + gS[2][a]) * M[2][b];
  V gl[3];
  for (int b = 0; b < 3; b++)
    gl[b] = (gM[0][b] * R[0][b] + gM[1][b] * R[1][b] + gM[2][b] * R[2][b]) * g.sc[b];
  V G[3][3];
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) G[a][b] = gM[a][b] * g.sc[b];
  const V qw = g.qw, qx = g.qx, qy = g.qy, qz = g.qz;
  const V gw = 2.0 * (-qz * G[0][1] + qy * G[0][2] + qz * G[1][0] - qx * G[1][2] -
                      qy * G[2][0] + qx * G[2][1]);
  const V gx = 2.0 * (qy * G[0][1] + qz * G[0][2] + qy * G[1][0] - 2.0 * qx * G[1][1] -
                      qw * G[1][2] + qz * G[2][0] + qw * G[2][1] - 2.0 * qx * G[2][2]);
  const V gy = 2.0 * (-2.0 * qy * G[0][0] + qx * G[0][1] + qw * G[0][2] + qx * G[1][0] +
                      qz * G[1][2] - qw * G[2][0] + qz * G[2][1] - 2.0 * qy * G[2][2]);
  const V gz = 2.0 * (-2.0 * qz * G[0][0] - qw * G[0][1] + qx * G[0][2] + qw * G[1][0] -
                      2.0 * qz * G[1][1] + qy * G[1][2] + qx * G[2][0] + qy * G[2][1]);
  const V dot = qw * gw + qx * gx + qy * gy + qz * gz;
  V gq[4] = {(gw - qw * dot) / g.qn, (gx - qx * dot) / g.qn, (gy - qy * dot) / g.qn,
             (gz - qz * dot) / g.qn};
  // colour: SH at the view direction, +0.5, clamp_min 0
  const V ddx = g.mx - C.ccx, ddy = g.my - C.ccy, ddz = g.mz - C.ccz;
  const V dn = nmax(sqrt4(ddx * ddx + ddy * ddy + ddz * ddz), vd(1e-12));
  const V ux = ddx / dn, uy = ddy / dn, uz = ddz / dn;
  V b[K], D[K][3], gsh[3 * K];
  v4f sh[3 * K];
  sh_basis<DEG>(ux, uy, uz, b);
  sh_dbasis<DEG>(ux, uy, uz, D);
  get_rows_f32<3 * K>(A.sh, rs, idx, sh);
  const V zero = vd(0.0);
  V gd[3] = {zero, zero, zero};
  for (int ch = 0; ch < 3; ch++) {
    V acc = vd(0.5);
    for (int k = 0; k < K; k++) acc += b[k] * to_f64(sh[3 * k + ch]);
    const VL off = (acc < 0.0) | ~vm;  // clamped (no gradient) or invalid
    const V gcl = gcol[ch];
    const v4f gcl32 = to_f32(gcl);  // exact: a float32 value
    V e[3] = {gd[0], gd[1], gd[2]};
#pragma GCC unroll 16
    for (int k = 0; k < K; k++) {
      gsh[3 * k + ch] = blend(off, zero, b[k] * gcl);
      // numba multiplies these two float32 values in float32
      const V wk = to_f64(sh[3 * k + ch] * gcl32);
      for (int j = 0; j < 3; j++)
        if (SH_NZ[k][j]) e[j] += D[k][j] * wk;
    }
    for (int j = 0; j < 3; j++) gd[j] = blend(off, gd[j], e[j]);
  }
  if (DEG > 0) {
    const V dd = ux * gd[0] + uy * gd[1] + uz * gd[2];
    gm[0] += (gd[0] - ux * dd) / dn;
    gm[1] += (gd[1] - uy * dd) / dn;
    gm[2] += (gd[2] - uz * dd) / dn;
  }
  for (int a = 0; a < 3; a++) gm[a] = blend(vm, gm[a], zero), gl[a] = blend(vm, gl[a], zero);
  for (int a = 0; a < 4; a++) gq[a] = blend(vm, gq[a], zero);
  g_logit[0] = blend(vm, g_logit[0], zero);
  put_rows<3>(A.g_means, 3, i0, cnt, gm);
  put_rows<4>(A.g_quats, 4, i0, cnt, gq);
  put_rows<3>(A.g_log_scales, 3, i0, cnt, gl);
  put_rows<1>(A.g_logits, 1, i0, cnt, g_logit);
  put_rows<3 * K>(A.g_sh, rs, i0, cnt, gsh);
}

// Faults in the pages of [p, p + bytes) writable, threads in parallel, one madvise
// (MADV_POPULATE_WRITE, Linux >= 5.14; contents kept) a MiB: the backward pass's SH gradient is
// a fresh mapping from the allocator at every call (57 MB at 300k splats, SH degree 3), and
// populating it so costs ~2/3 of taking its page faults one store at a time (the VM this was
// measured on pays ~1.6 us a page fault). Elsewhere, or where it fails, the stores fault.
void populate(void* p, int64_t bytes) {
#if defined(__linux__)
  constexpr int populate_write = 23;  // MADV_POPULATE_WRITE, for older headers
  const int64_t pg = sysconf(_SC_PAGESIZE);
  if (bytes < (1 << 20) || pg <= 0) return;
  // whole pages: the first and the last one hold bytes of the array, so they are mapped
  const uintptr_t b0 = (uintptr_t)p & ~(uintptr_t)(pg - 1);
  const uintptr_t b1 = ((uintptr_t)p + bytes + pg - 1) & ~(uintptr_t)(pg - 1);
  const int64_t len = (int64_t)(b1 - b0), step = 1 << 20;
  OMP(omp parallel for schedule(dynamic, 1) num_threads(n_threads()))
  for (int64_t o = 0; o < len; o += step)
    madvise((void*)(b0 + o), (size_t)(len - o < step ? len - o : step), populate_write);
#else
  (void)p, (void)bytes;
#endif
}

template <int DEG, bool FWD>
void project_blocks(const ProjArgs& A, const Cam& C) {
  const int64_t nb = (A.n + NL - 1) / NL;
  // chunks of 1024 splats (200 KB of g_sh at SH degree 3): little scheduling, and each page
  // of the outputs written by one thread
  OMP(omp parallel for schedule(dynamic, 256) num_threads(n_threads()))
  for (int64_t bi = 0; bi < nb; bi++) {
    const int64_t i0 = NL * bi;
    const int cnt = (int)(A.n - i0 < NL ? A.n - i0 : NL);
    if constexpr (FWD)
      project_fwd_block<DEG>(C, A, i0, cnt);
    else
      project_bwd_block<DEG>(C, A, i0, cnt);
  }
}

// -1 for an SH degree outside [0, 3] or fewer than (deg + 1)^2 coefficients a splat
template <bool FWD>
int project(const ProjArgs& A, int64_t deg, const Cam& C) {
  if (deg < 0 || deg > 3 || A.kt < (deg + 1) * (deg + 1)) return -1;
  switch (deg) {
    case 0: project_blocks<0, FWD>(A, C); break;
    case 1: project_blocks<1, FWD>(A, C); break;
    case 2: project_blocks<2, FWD>(A, C); break;
    default: project_blocks<3, FWD>(A, C);
  }
  return 0;
}

}  // namespace

extern "C" {

// ALPHA_MAX, ALPHA_MIN, T_MIN, TILE, EPS2D, EXTEND_MAX and the SH constants C0, C1, C2[4],
// C3[6] as compiled in (18 values; the loader compares them with common.py's)
void wg_constants(double* out) {
  out[0] = ALPHA_MAX_D;
  out[1] = ALPHA_MIN_D;
  out[2] = T_MIN_D;
  out[3] = TILE;
  out[4] = EPS2D_D;
  out[5] = EXTEND_MAX_D;
  out[6] = SH_C0;
  out[7] = SH_C1;
  for (int j = 0; j < 4; j++) out[8 + j] = SH_C2[j];
  for (int j = 0; j < 6; j++) out[12 + j] = SH_C3[j];
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

// cpu.py _project_fwd for float32 parameters means [n, 3], quats [n, 4], log_scales [n, 3],
// logits [n], sh [n, kt, 3] (kt >= (deg + 1)^2); viewmat rotation Rv [3, 3] and translation
// tv [3], cam = (fx, fy, cx, cy), all float64. Writes out [n, 12] (mean2d, conic, depth,
// opacity, colour, half extent; zeros where numba leaves them) and valid [n], in full.
// Returns 0, or -1 for a bad degree / kt.
int wg_project_fwd(const float* means, const float* quats, const float* log_scales,
                   const float* logits, const float* sh, int64_t n, int64_t kt, int64_t deg,
                   const double* Rv, const double* tv, const double* cam, int64_t W, int64_t H,
                   double near, double far, float* out, uint8_t* valid) {
  ProjArgs A = {};
  A.means = means, A.quats = quats, A.log_scales = log_scales, A.logits = logits, A.sh = sh;
  A.n = n, A.kt = kt, A.out = out, A.valid_out = valid;
  return project<true>(A, deg, make_cam(Rv, tv, cam, W, H, near, far));
}

// cpu.py _project_bwd for the same parameters and camera, the forward pass's valid [n] and the
// float32 gradients of mean2d [n, 2], conic [n, 3], opacity [n] and colour [n, 3]: writes the
// gradients w.r.t. means [n, 3], quats [n, 4], log_scales [n, 3], logits [n] and sh [n, kt, 3]
// (float32, each rounded once from numba's float64 value), every element. Returns 0, or -1 for
// a bad degree / kt.
int wg_project_bwd(const float* means, const float* quats, const float* log_scales,
                   const float* logits, const float* sh, int64_t n, int64_t kt, int64_t deg,
                   const double* Rv, const double* tv, const double* cam, int64_t W, int64_t H,
                   const uint8_t* valid, const float* g_uv, const float* g_conic,
                   const float* g_opacity, const float* g_color, float* g_means, float* g_quats,
                   float* g_log_scales, float* g_logits, float* g_sh) {
  ProjArgs A = {};
  A.means = means, A.quats = quats, A.log_scales = log_scales, A.logits = logits, A.sh = sh;
  A.n = n, A.kt = kt, A.valid = valid;
  A.g_uv = g_uv, A.g_conic = g_conic, A.g_opacity = g_opacity, A.g_color = g_color;
  A.g_means = g_means, A.g_quats = g_quats, A.g_log_scales = g_log_scales;
  A.g_logits = g_logits, A.g_sh = g_sh;
  if (deg >= 0 && deg <= 3 && kt >= (deg + 1) * (deg + 1)) populate(g_sh, 12 * n * kt);
  return project<false>(A, deg, make_cam(Rv, tv, cam, W, H, 0.0, 0.0));
}

// the projection's float64 exp and log on n values (the tests measure their error)
void wg_exp_f64(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; i += NL) {
    V v = vd(0.0);
    const int64_t m = n - i < NL ? n - i : NL;
    std::memcpy(&v, x + i, sizeof(double) * m);
    v = vexp(v);
    std::memcpy(y + i, &v, sizeof(double) * m);
  }
}

void wg_log_f64(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; i += NL) {
    V v = vd(1.0);
    const int64_t m = n - i < NL ? n - i : NL;
    std::memcpy(&v, x + i, sizeof(double) * m);
    v = vlog(v);
    std::memcpy(y + i, &v, sizeof(double) * m);
  }
}

}  // extern "C"
