// worldgen's browser viewer: one classic script (esbuild IIFE) for a `worldgen export --to web`
// folder. It reads the site's settings from the page (<script type="application/json"
// id="worldgen-site">), loads the splats (SPZ, world frame = three.js's frame: +Y up, the
// source camera at the origin facing -Z) and collision.glb (world frame) either with fetch
// (http/https) or, from file:// where Chromium blocks fetch and modules, from the generated
// data script (window.WORLDGEN_DATA, base64), and lets the player walk: desktop pointer-lock
// mouse look + WASD/arrows, Shift run, Space jump; phones a virtual joystick + drag-to-look;
// headsets WebXR (xr.js). The first view is `worldgen view`'s: the spawn's feet point, yaw,
// the source camera's pitch and the photo's horizontal field of view.
//
// window.worldgen exposes the state for tests and scripts (read-only use; see `hooks` below).

import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { MeshBVH } from "three-mesh-bvh";
import { Walker } from "./walker.js";
import { XrSupport } from "./xr.js";

const MOUSE_RAD_PER_PIXEL = (0.1 * Math.PI) / 180; // as `worldgen view`
const TOUCH_RAD_PER_PIXEL = (0.25 * Math.PI) / 180;
const $ = (id) => document.getElementById(id);

const hooks = {
  ready: false,
  error: null,
  frames: 0,
  numSplats: 0,
  mode: "loading", // "loading" | "desktop" | "xr"
  frozen: false, // physics paused (tests hold a pose for a screenshot)
  frameTimes: [], // performance.now() of the last 120 frames
  firstFrameSeconds: null, // navigation start -> the first frame (the world may not show yet)
  loadSeconds: null, // navigation start -> the first frame with the splats drawn is on screen
  worldFrame: null, // the number of the first frame that drew splats
  activeSplats: 0,
};
window.worldgen = hooks;

function fail(msg) {
  hooks.error = msg;
  $("loading-text").textContent = msg;
  $("loading").classList.add("failed");
  console.error("worldgen: " + msg);
}

function base64Bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement("script");
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error("cannot read " + src));
    document.head.appendChild(el);
  });
}

/** fetch with progress: onProgress(bytesSoFar) */
async function fetchBytes(url, onProgress) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(url + ": HTTP " + res.status);
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    n += value.length;
    onProgress(n);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

/** The splat and collision bytes, from the data script (file://) or the folder (http). */
async function loadData(site, progress) {
  if (location.protocol === "file:") {
    progress(0.05, "reading " + site.data_script);
    await loadScript(site.data_script);
    const d = window.WORLDGEN_DATA;
    if (!d || !d.spz || !d.glb) throw new Error(site.data_script + " holds no world");
    const out = { spz: base64Bytes(d.spz), glb: base64Bytes(d.glb) };
    window.WORLDGEN_DATA = null;
    return out;
  }
  const total = site.splats.bytes + site.collision.bytes;
  let a = 0, b = 0;
  const show = () => progress((0.9 * (a + b)) / Math.max(total, 1), "downloading");
  const [spz, glb] = await Promise.all([
    fetchBytes(site.splats.file, (n) => ((a = n), show())),
    fetchBytes(site.collision.file, (n) => ((b = n), show())),
  ]);
  return { spz, glb };
}

/** A MeshBVH over every triangle of a GLB (node transforms applied), world frame. */
async function collisionBVH(glbBytes) {
  const buf = glbBytes.buffer.slice(glbBytes.byteOffset, glbBytes.byteOffset + glbBytes.byteLength);
  const gltf = await new GLTFLoader().parseAsync(buf, "");
  gltf.scene.updateMatrixWorld(true);
  const parts = [];
  gltf.scene.traverse((o) => {
    if (!o.isMesh) return;
    const g = o.geometry.index ? o.geometry.toNonIndexed() : o.geometry.clone();
    const pos = g.getAttribute("position").clone().applyMatrix4(o.matrixWorld);
    parts.push(pos.array);
  });
  if (parts.length === 0) throw new Error("collision.glb has no triangles");
  const n = parts.reduce((s, p) => s + p.length, 0);
  const all = new Float32Array(n);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  const geom = new THREE.BufferGeometry();
  geom.setAttribute("position", new THREE.BufferAttribute(all, 3));
  return new MeshBVH(geom);
}

function verticalFov(hfovDeg, aspect) {
  const t = Math.tan((hfovDeg * Math.PI) / 360) / aspect;
  return (360 / Math.PI) * Math.atan(t);
}

async function main() {
  const site = JSON.parse($("worldgen-site").textContent);
  const progress = (f, what) => {
    $("loading-bar").style.width = Math.round(100 * Math.min(Math.max(f, 0), 1)) + "%";
    $("loading-text").textContent = what;
  };
  progress(0, "loading");

  const canvas = $("view");
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  renderer.setClearColor(0x000000, 1); // `worldgen view` and `render` draw on black
  renderer.shadowMap.enabled = false;
  const scene = new THREE.Scene();
  const spark = new SparkRenderer({
    renderer,
    // as worldgen's rasterizer: a 0.3 px^2 low-pass on every projected splat, no opacity
    // compensation, splats cut at 3 sigma, depth-sorted (z, not radial)
    preBlurAmount: 0.3,
    blurAmount: 0.0,
    maxStdDev: 3.0,
    sortRadial: false,
  });
  scene.add(spark);
  const rig = new THREE.Group(); // the feet point on the floor, turned by the yaw
  scene.add(rig);
  const camera = new THREE.PerspectiveCamera(60, 1, 0.02, 20000);
  rig.add(camera);

  const data = await loadData(site, progress);
  progress(0.92, "decoding splats");
  const mesh = new SplatMesh({ fileBytes: data.spz, fileType: "spz", fileName: site.splats.file });
  await mesh.initialized;
  scene.add(mesh);
  hooks.numSplats = mesh.packedSplats ? mesh.packedSplats.numSplats : mesh.numSplats;
  $("splat-count").textContent = hooks.numSplats.toLocaleString("en-US");
  progress(0.96, "building collision");
  const bvh = await collisionBVH(data.glb);

  const sp = site.spawn;
  const walker = new Walker(
    bvh,
    { min: site.bounds.min, max: site.bounds.max.map((v) => (v === null ? Infinity : v)) },
    {
      position: sp.position,
      yaw: (sp.yaw_deg * Math.PI) / 180,
      pitch: (sp.pitch_deg * Math.PI) / 180,
      eyeHeight: sp.eye_height,
    },
    { radius: site.capsule.radius, headRoom: site.capsule.head_room, walkSpeed: site.speeds.walk, runSpeed: site.speeds.run },
  );

  // -- desktop / phone input ------------------------------------------------------------------
  const keys = new Set();
  const touch = { move: [0, 0], stickId: null, lookId: null, origin: [0, 0], last: [0, 0] };
  addEventListener("keydown", (e) => {
    if (e.code === "Space" || e.code.startsWith("Arrow")) e.preventDefault();
    keys.add(e.code);
    if (e.code === "KeyR") walker.reset();
    if (e.code === "KeyH") $("help").hidden = !$("help").hidden;
  });
  addEventListener("keyup", (e) => keys.delete(e.code));
  addEventListener("blur", () => keys.clear());
  const held = (...codes) => codes.some((c) => keys.has(c));
  const input = () => {
    const kf = (held("KeyW", "ArrowUp") ? 1 : 0) - (held("KeyS", "ArrowDown") ? 1 : 0);
    const kr = (held("KeyD", "ArrowRight") ? 1 : 0) - (held("KeyA", "ArrowLeft") ? 1 : 0);
    return {
      forward: kf || -touch.move[1],
      right: kr || touch.move[0],
      run: held("ShiftLeft", "ShiftRight"),
      jump: held("Space"),
    };
  };
  let dragging = false;
  canvas.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    dragging = true;
    if (canvas.requestPointerLock && document.pointerLockElement !== canvas) {
      try {
        const p = canvas.requestPointerLock();
        if (p && p.catch) p.catch(() => {});
      } catch (_) {
        /* no pointer lock (an iframe, a headless browser): drag to look instead */
      }
    }
  });
  addEventListener("mouseup", () => (dragging = false));
  addEventListener("mousemove", (e) => {
    if (document.pointerLockElement === canvas || dragging) {
      walker.look(e.movementX * MOUSE_RAD_PER_PIXEL, -e.movementY * MOUSE_RAD_PER_PIXEL);
    }
  });
  // phones: the joystick (bottom left) moves, a drag anywhere else looks
  const stick = $("stick"), knob = $("stick-knob");
  const isTouch = "ontouchstart" in window || navigator.maxTouchPoints > 0;
  if (isTouch) stick.hidden = false;
  const stickRadius = () => stick.getBoundingClientRect().width / 2;
  stick.addEventListener("pointerdown", (e) => {
    touch.stickId = e.pointerId;
    const r = stick.getBoundingClientRect();
    touch.origin = [r.left + r.width / 2, r.top + r.height / 2];
    stick.setPointerCapture(e.pointerId);
    moveStick(e);
    e.preventDefault();
  });
  const moveStick = (e) => {
    const R = stickRadius();
    let dx = (e.clientX - touch.origin[0]) / R, dy = (e.clientY - touch.origin[1]) / R;
    const len = Math.hypot(dx, dy);
    if (len > 1) (dx /= len), (dy /= len);
    touch.move = [dx, dy];
    knob.style.transform = `translate(${dx * R * 0.6}px, ${dy * R * 0.6}px)`;
  };
  const endStick = (e) => {
    if (e.pointerId !== touch.stickId) return;
    touch.stickId = null;
    touch.move = [0, 0];
    knob.style.transform = "";
  };
  stick.addEventListener("pointermove", (e) => e.pointerId === touch.stickId && moveStick(e));
  stick.addEventListener("pointerup", endStick);
  stick.addEventListener("pointercancel", endStick);
  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType !== "touch") return;
    touch.lookId = e.pointerId;
    touch.last = [e.clientX, e.clientY];
  });
  canvas.addEventListener("pointermove", (e) => {
    if (e.pointerId !== touch.lookId) return;
    walker.look((e.clientX - touch.last[0]) * TOUCH_RAD_PER_PIXEL, (e.clientY - touch.last[1]) * TOUCH_RAD_PER_PIXEL);
    touch.last = [e.clientX, e.clientY];
  });
  const endLook = (e) => e.pointerId === touch.lookId && (touch.lookId = null);
  canvas.addEventListener("pointerup", endLook);
  canvas.addEventListener("pointercancel", endLook);
  canvas.style.touchAction = "none";

  // -- camera ---------------------------------------------------------------------------------
  const resize = () => {
    if (renderer.xr.isPresenting) return;
    const w = canvas.clientWidth || innerWidth, h = canvas.clientHeight || innerHeight;
    renderer.setSize(w, h, false);
    camera.aspect = w / h;
    camera.fov = verticalFov(site.fov.horizontal_deg, camera.aspect);
    camera.updateProjectionMatrix();
  };
  addEventListener("resize", resize);
  resize();
  const placeDesktop = () => {
    rig.position.copy(walker.position);
    rig.rotation.set(0, -walker.yaw, 0);
    camera.position.set(0, walker.eyeHeight, 0);
    camera.rotation.set(walker.pitch, 0, 0, "YXZ");
  };

  const xr = new XrSupport({
    renderer,
    rig,
    camera,
    walker,
    button: $("enter-vr"),
    onEnter: () => {
      hooks.mode = "xr";
      spark.maxStdDev = Math.sqrt(5); // fewer, smaller fragments per splat at headset rates
    },
    onExit: () => {
      hooks.mode = "desktop";
      spark.maxStdDev = 3.0;
      walker.pitch = 0;
      camera.position.set(0, walker.eyeHeight, 0);
      resize();
    },
  });

  // -- hooks for tests and scripts ------------------------------------------------------------
  hooks.walker = walker;
  hooks.camera = camera;
  hooks.rig = rig;
  hooks.xr = xr;
  hooks.site = site;
  hooks.pose = () => {
    const eye = new THREE.Vector3();
    camera.getWorldPosition(eye);
    return {
      feet: walker.position.toArray(),
      eye: eye.toArray(),
      yaw: walker.yaw,
      pitch: walker.pitch,
      onGround: walker.onGround,
      simTime: walker.simTime,
      heldTime: { ...walker.heldTime },
      rig: rig.position.toArray(),
    };
  };
  hooks.setPose = ({ feet, yaw, pitch }) => {
    if (feet) walker.position.fromArray(feet);
    if (yaw !== undefined) walker.yaw = yaw;
    if (pitch !== undefined) walker.pitch = pitch;
    walker.velocity.set(0, 0, 0);
    walker.onGround = false;
    walker.acc = 0;
    placeDesktop();
  };

  // -- loop -----------------------------------------------------------------------------------
  let last = null;
  renderer.setAnimationLoop((time, frame) => {
    // two frames after the first one that drew splats (at most one frame is in flight): that
    // frame has been drawn and presented, the world is on screen
    if (hooks.worldFrame !== null && hooks.loadSeconds === null && hooks.frames >= hooks.worldFrame + 2) {
      hooks.loadSeconds = performance.now() / 1000;
    }
    const dt = last === null ? 0 : (time - last) / 1000;
    last = time;
    if (xr.presenting) {
      if (!hooks.frozen) xr.update(dt, frame);
    } else {
      if (!hooks.frozen) walker.update(dt, input());
      placeDesktop();
    }
    renderer.render(scene, camera);
    hooks.activeSplats = spark.activeSplats; // drawn this frame (0 until the first sort lands)
    hooks.frames++;
    if (hooks.activeSplats > 0 && hooks.worldFrame === null) hooks.worldFrame = hooks.frames;
    hooks.frameTimes.push(performance.now()); // ms since navigation (benchmarks: fps)
    if (hooks.frameTimes.length > 120) hooks.frameTimes.shift();
    if (!hooks.ready) {
      hooks.ready = true;
      hooks.mode = "desktop";
      hooks.firstFrameSeconds = performance.now() / 1000;
      $("loading").hidden = true;
    }
  });
}

main().catch((e) => fail("could not load the world: " + (e && e.message ? e.message : e)));
