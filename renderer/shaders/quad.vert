#version 330 core
// Pass 2 of the splat draw: one instanced quad (4-vertex triangle strip) per projected splat,
// in draw order (the records splat.vert wrote by transform feedback).

uniform vec2 u_size;       // viewport width, height (pixels)

in vec4 a_mean_axis;       // centre (pixels), major half-axis of the ellipse alpha >= 1/255
in vec4 a_conic_minor;     // inverse 2D covariance (a, b, c), minor half-axis length
in vec4 a_color;           // colour, opacity (0: culled)
in float a_z;              // camera z

flat out vec3 v_color;
flat out float v_opacity;
flat out vec3 v_conic;
flat out vec2 v_mean;
flat out float v_z;

void main() {
    v_color = a_color.rgb;
    v_opacity = a_color.a;
    v_conic = a_conic_minor.xyz;
    v_mean = a_mean_axis.xy;
    v_z = a_z;
    if (a_color.a == 0.0) {
        gl_Position = vec4(0.0, 0.0, 2.0, 1.0);  // outside the clip volume: dropped
        return;
    }
    vec2 corner = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1)) * 2.0 - 1.0;
    vec2 major = a_mean_axis.zw;
    vec2 minor = vec2(-major.y, major.x) * (a_conic_minor.w / max(length(major), 1e-30));
    vec2 p = a_mean_axis.xy + corner.x * major + corner.y * minor;
    // pixel centre (i, j) -> window (i + 0.5, H - j - 0.5): row 0 at the top of the viewport
    gl_Position = vec4((p.x + 0.5) * 2.0 / u_size.x - 1.0, 1.0 - (p.y + 0.5) * 2.0 / u_size.y,
                       0.0, 1.0);
}
