#version 330 core
// Gaussian of one splat at one pixel centre; premultiplied output for back-to-front "over"
// blending (glBlendFunc(ONE, ONE_MINUS_SRC_ALPHA)). worldgen/raster/common.py conventions.

uniform vec2 u_origin;     // viewport origin in the framebuffer (pixels)
uniform vec2 u_size;       // viewport width, height

flat in vec3 v_color;
flat in float v_opacity;
flat in vec3 v_conic;
flat in vec2 v_mean;
flat in float v_z;

layout(location = 0) out vec4 out_color;  // (sum w c, 1 - T) after blending
layout(location = 1) out vec4 out_depth;  // (sum w z, 0, 0, 1 - T) after blending

const float ALPHA_MIN = 1.0 / 255.0;
const float ALPHA_MAX = 0.999;

void main() {
    vec2 w = gl_FragCoord.xy - u_origin;
    vec2 pix = vec2(w.x - 0.5, u_size.y - w.y - 0.5);  // pixel centre (i, j), row 0 on top
    vec2 d = v_mean - pix;
    float sigma = max(0.0, 0.5 * (v_conic.x * d.x * d.x + v_conic.z * d.y * d.y)
                           + v_conic.y * d.x * d.y);
    float alpha = min(ALPHA_MAX, v_opacity * exp(-sigma));
    if (alpha < ALPHA_MIN) discard;
    out_color = vec4(v_color * alpha, alpha);
    out_depth = vec4(v_z * alpha, 0.0, 0.0, alpha);
}
