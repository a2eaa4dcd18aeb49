#version 330 core
// Pass 1 of the splat draw: projects one splat per vertex (drawn as points, in draw order, into a
// transform feedback buffer; quad.vert expands each into an instanced quad). Projection, culling
// and colour follow worldgen/raster/common.py (gsplat's classic pinhole conventions) in float32.
// Defines inserted by the host: SH_DEGREE (0-3), STRIDE (texels per splat), TEX_W_LOG2.
//
// Data texture (RGBA32F, splat i at texels i*STRIDE ...):
//   0: mean.xyz, opacity        1: cov00, cov01, cov02, cov11        2: cov12, cov22, 0, 0
//   3...: SH coefficients, packed flat: coefficient c, channel ch at float 3c + ch.

uniform sampler2D u_data;
uniform mat3 u_rot;        // camera-from-splats rotation (rows 0-2 of the view matrix)
uniform vec3 u_trans;      // its translation
uniform vec3 u_cam_pos;    // camera centre in the splats' frame
uniform vec4 u_intr;       // fx, fy, cx, cy (pixel centres at integers)
uniform vec2 u_size;       // image width, height
uniform vec4 u_lim;        // EWA clamp of x/z, y/z: lim_x_neg, lim_x_pos, lim_y_neg, lim_y_pos
uniform vec2 u_near_far;

in uint in_index;          // splat index (the sorted order, one per vertex)

// captured by transform feedback, one record per splat (opacity 0 = culled)
out vec4 p_mean_axis;      // centre (pixels, centre of pixel (i, j) at (i, j)), major half-axis
out vec4 p_conic_minor;    // (a, b, c) of the inverse 2D covariance [[a, b], [b, c]], minor
                           // half-axis length
out vec4 p_color;          // colour after SH, opacity
out float p_z;             // camera z

const float ALPHA_MIN = 1.0 / 255.0;
const float EPS2D = 0.3;
const float EXTEND_MAX = 3.33;

const float C0 = 0.2820947917738781;
const float C1 = 0.48860251190292;
const float C2_0 = 1.092548430592079;
const float C2_1 = 0.9461746957575601;
const float C2_2 = 0.3153915652525201;
const float C2_3 = 0.5462742152960395;
const float C3_0 = 2.285228997322329;
const float C3_1 = 0.4570457994644658;
const float C3_2 = 1.445305721320277;
const float C3_3 = 0.5900435899266435;
const float C3_4 = 1.865881662950577;
const float C3_5 = 1.119528997770346;

#define N_COEF ((SH_DEGREE + 1) * (SH_DEGREE + 1))
#define N_SH_TEXELS ((3 * N_COEF + 3) / 4)

vec4 fetch(int k) {
    int lin = int(in_index) * STRIDE + k;
    return texelFetch(u_data, ivec2(lin & ((1 << TEX_W_LOG2) - 1), lin >> TEX_W_LOG2), 0);
}

void cull() {
    p_mean_axis = vec4(0.0);
    p_conic_minor = vec4(0.0);
    p_color = vec4(0.0);
    p_z = 0.0;
}

vec3 sh_color(vec3 mean) {
    float f[4 * N_SH_TEXELS];
    for (int t = 0; t < N_SH_TEXELS; ++t) {
        vec4 v = fetch(3 + t);
        f[4 * t] = v.x;
        f[4 * t + 1] = v.y;
        f[4 * t + 2] = v.z;
        f[4 * t + 3] = v.w;
    }
#define COEF(c) vec3(f[3 * (c)], f[3 * (c) + 1], f[3 * (c) + 2])
    vec3 c = C0 * COEF(0);
#if SH_DEGREE >= 1
    vec3 d = mean - u_cam_pos;
    d = d / max(length(d), 1e-12);
    float x = d.x, y = d.y, z = d.z;
    c += -C1 * y * COEF(1) + C1 * z * COEF(2) - C1 * x * COEF(3);
#endif
#if SH_DEGREE >= 2
    float z2 = z * z;
    float tb = -C2_0 * z;
    float c1 = x * x - y * y;
    float s1 = 2.0 * x * y;
    c += C2_3 * s1 * COEF(4) + tb * y * COEF(5) + (C2_1 * z2 - C2_2) * COEF(6)
        + tb * x * COEF(7) + C2_3 * c1 * COEF(8);
#endif
#if SH_DEGREE >= 3
    float tc = -C3_0 * z2 + C3_1;
    float tb3 = C3_2 * z;
    float c2 = x * c1 - y * s1;
    float s2 = x * s1 + y * c1;
    c += -C3_3 * s2 * COEF(9) + tb3 * s1 * COEF(10) + tc * y * COEF(11)
        + z * (C3_4 * z2 - C3_5) * COEF(12) + tc * x * COEF(13) + tb3 * c1 * COEF(14)
        - C3_3 * c2 * COEF(15);
#endif
    return max(c + 0.5, 0.0);
}

void main() {
    vec4 t0 = fetch(0);
    vec3 mc = u_rot * t0.xyz + u_trans;
    float z = mc.z;
    float opacity = t0.w;
    if (!(z >= u_near_far.x && z <= u_near_far.y) || !(opacity >= ALPHA_MIN)) {
        cull();
        return;
    }
    vec4 t1 = fetch(1);
    vec4 t2 = fetch(2);
    mat3 S = mat3(t1.x, t1.y, t1.z, t1.y, t1.w, t2.x, t1.z, t2.x, t2.y);
    float fx = u_intr.x, fy = u_intr.y;
    float tx = z * clamp(mc.x / z, -u_lim.x, u_lim.y);
    float ty = z * clamp(mc.y / z, -u_lim.z, u_lim.w);
    // rows of J * R_view (J the EWA Jacobian): cov2d = (J R) Sigma (J R)^T
    vec3 a = vec3(fx / z, 0.0, -fx * tx / (z * z)) * u_rot;
    vec3 b = vec3(0.0, fy / z, -fy * ty / (z * z)) * u_rot;
    vec3 Sa = S * a;
    float c00 = dot(a, Sa) + EPS2D;
    float c01 = dot(b, Sa);
    float c11 = dot(b, S * b) + EPS2D;
    float det = c00 * c11 - c01 * c01;
    if (!(det > 0.0)) {
        cull();
        return;
    }
    vec2 mean2d = vec2(fx * mc.x / z + u_intr.z, fy * mc.y / z + u_intr.w);
    // alpha >= 1/255 inside the ellipse d^T conic d <= extend^2: its bounding box (per-axis
    // half-size) culls, its axes (eigenvectors of cov2d) span the quad; the alpha test decides
    float extend = min(sqrt(2.0 * log(opacity / ALPHA_MIN)), EXTEND_MAX);
    vec2 half_box = extend * sqrt(vec2(c00, c11));
    bool misses = any(lessThan(mean2d + half_box, vec2(-1.0)))
                  || any(greaterThan(mean2d - half_box, u_size));
    if (misses) {
        cull();  // the box misses the image
        return;
    }
    float mid = 0.5 * (c00 + c11);
    float disc = sqrt(max(mid * mid - det, 0.0));
    float l1 = mid + disc;
    float l2 = max(mid - disc, 0.0);
    vec2 v1 = abs(c01) > 1e-6 * l1 ? normalize(vec2(c01, l1 - c00))
                                    : (c00 >= c11 ? vec2(1.0, 0.0) : vec2(0.0, 1.0));
    float r1 = extend * sqrt(l1) * 1.001 + 0.05;  // padded a little
    float r2 = extend * sqrt(l2) * 1.001 + 0.05;
    p_mean_axis = vec4(mean2d, v1 * r1);
    p_conic_minor = vec4(vec3(c11, -c01, c00) / det, r2);
    p_z = z;
    p_color = vec4(sh_color(t0.xyz), opacity);
}
