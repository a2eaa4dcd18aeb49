#version 430
// Depth keys and a bitonic sort of (key, index) pairs; see renderer/sort.py.
// Defines inserted by the host: TEX_W_LOG2, STRIDE (texels per splat), LOCAL_BLOCK (512),
// LOCAL_HALF (256).
// Final order: descending by key, ties by descending index (= back to front, the exact reverse
// of a stable ascending sort). Padding pairs are (0, 0xFFFFFFFF) and end up last.

layout(local_size_x = LOCAL_HALF) in;

layout(std430, binding = 0) buffer Keys { uint keys[]; };
layout(std430, binding = 1) buffer Vals { uint vals[]; };

uniform int u_mode;     // 0: depth keys, 1: sort blocks, 2: one global step, 3: merge in blocks
uniform uint u_n;       // number of splats (mode 0)
uniform vec4 u_view_z;  // row 2 of the view matrix (mode 0)
uniform uint u_k;       // bitonic stage (block size being merged)
uniform uint u_j;       // bitonic step (compare distance)
uniform sampler2D u_data;

shared uint s_key[LOCAL_BLOCK];
shared uint s_val[LOCAL_BLOCK];

uint float_key(float z) {
    if (isnan(z)) return 0xFFFFFFFFu;
    uint b = floatBitsToUint(z);
    if (b == 0x80000000u) return 0x80000000u;  // -0.0 sorts as +0.0
    return (b & 0x80000000u) != 0u ? ~b : (b | 0x80000000u);
}

// a comes after b in the final (descending) order
bool after(uint ka, uint va, uint kb, uint vb) {
    return ka < kb || (ka == kb && va < vb);
}

void local_steps(uint base, uint k, uint j_start) {
    uint t = gl_LocalInvocationID.x;
    for (uint j = j_start; j > 0u; j >>= 1) {
        memoryBarrierShared();
        barrier();
        uint i = 2u * j * (t / j) + (t % j);
        uint l = i + j;
        bool up = ((base + i) & k) == 0u;
        uint ki = s_key[i], vi = s_val[i], kl = s_key[l], vl = s_val[l];
        bool swap = up ? after(ki, vi, kl, vl) : after(kl, vl, ki, vi);
        if (swap) {
            s_key[i] = kl; s_val[i] = vl;
            s_key[l] = ki; s_val[l] = vi;
        }
    }
}

void main() {
    uint gid = gl_GlobalInvocationID.x;
    if (u_mode == 0) {
        if (gid < u_n) {
            int lin = int(gid) * STRIDE;
            int w = 1 << TEX_W_LOG2;
            vec3 m = texelFetch(u_data, ivec2(lin & (w - 1), lin >> TEX_W_LOG2), 0).xyz;
            float z = dot(u_view_z.xyz, m) + u_view_z.w;
            keys[gid] = float_key(z);
            vals[gid] = gid;
        } else {
            keys[gid] = 0u;
            vals[gid] = 0xFFFFFFFFu;
        }
        return;
    }
    if (u_mode == 2) {  // one compare-exchange step over the whole array
        uint j = u_j;
        uint i = 2u * j * (gid / j) + (gid % j);
        uint l = i + j;
        bool up = (i & u_k) == 0u;
        uint ki = keys[i], vi = vals[i], kl = keys[l], vl = vals[l];
        bool swap = up ? after(ki, vi, kl, vl) : after(kl, vl, ki, vi);
        if (swap) {
            keys[i] = kl; vals[i] = vl;
            keys[l] = ki; vals[l] = vi;
        }
        return;
    }
    // modes 1 and 3: a block of LOCAL_BLOCK elements in shared memory
    uint base = gl_WorkGroupID.x * uint(LOCAL_BLOCK);
    uint t = gl_LocalInvocationID.x;
    s_key[t] = keys[base + t];
    s_val[t] = vals[base + t];
    s_key[t + uint(LOCAL_HALF)] = keys[base + t + uint(LOCAL_HALF)];
    s_val[t + uint(LOCAL_HALF)] = vals[base + t + uint(LOCAL_HALF)];
    if (u_mode == 1) {
        for (uint k = 2u; k <= uint(LOCAL_BLOCK); k <<= 1) local_steps(base, k, k / 2u);
    } else {
        local_steps(base, u_k, uint(LOCAL_HALF));
    }
    memoryBarrierShared();
    barrier();
    keys[base + t] = s_key[t];
    vals[base + t] = s_val[t];
    keys[base + t + uint(LOCAL_HALF)] = s_key[t + uint(LOCAL_HALF)];
    vals[base + t + uint(LOCAL_HALF)] = s_val[t + uint(LOCAL_HALF)];
}
