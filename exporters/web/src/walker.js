// First-person walker with capsule collision: the browser twin of renderer/controller.py.
//
// Frames: worldgen's world frame (metres, +Y up, the source camera at the origin facing -Z at
// yaw 0), which is also three.js's. The walker is a vertical capsule whose bottom touches its
// *feet* point; the eye is `eyeHeight` above the feet. yaw > 0 turns right (toward +X),
// pitch > 0 looks up (radians).
//
// Physics runs in fixed substeps (120 Hz) fed from a time accumulator, so a span of time moves
// the walker the same whatever the frame rate, with the same speeds, gravity, jump height,
// capsule radius and slope limit as `worldgen view`. Collision: the capsule's axis against the
// triangles of collision.glb through a three-mesh-bvh shapecast (exact closest points), the
// capsule pushed out along each contact's normal, deepest first; walkable contacts (normal
// within maxSlopeDeg of up) push straight up so the walker does not slide down slopes. The
// world's bounds box is a last fence no motion crosses.

import * as THREE from "three";

export const WALKER_DEFAULTS = {
  walkSpeed: 1.4, // m/s
  runSpeed: 3.0, // m/s, Shift
  jumpHeight: 1.0, // m above the take-off point
  gravity: 9.81, // m/s^2 along -Y
  radius: 0.3, // capsule radius, m
  headRoom: 0.1, // capsule top above the eye, m
  maxSlopeDeg: 50, // steeper contacts are walls
  stepHz: 120, // physics substeps per second
  maxFrameDt: 0.25, // longer frames simulate only this much
  maxFallSpeed: 50, // m/s
};

const UP = new THREE.Vector3(0, 1, 0);

export class Walker {
  /**
   * bvh: a MeshBVH over the collision triangles (world frame); bounds: {min: [3], max: [3]}
   * (max[1] may be Infinity); spawn: {position: [3] feet, yaw, pitch, eyeHeight}.
   */
  constructor(bvh, bounds, spawn, config = {}) {
    this.bvh = bvh;
    this.cfg = { ...WALKER_DEFAULTS, ...config };
    this.spawn = spawn;
    this.eyeHeight = spawn.eyeHeight;
    this.height = Math.max(this.eyeHeight + this.cfg.headRoom, 2 * this.cfg.radius);
    this.cosSlope = Math.cos((this.cfg.maxSlopeDeg * Math.PI) / 180);
    this.boundsMin = new THREE.Vector3().fromArray(bounds.min);
    this.boundsMax = new THREE.Vector3().fromArray(bounds.max);
    this.simTime = 0; // seconds simulated since load
    this.heldTime = { forward: 0, right: 0 }; // seconds simulated with a move input held
    // scratch
    this._seg = new THREE.Line3();
    this._box = new THREE.Box3();
    this._triPt = new THREE.Vector3();
    this._segPt = new THREE.Vector3();
    this._n = new THREE.Vector3();
    this._prevMid = new THREE.Vector3();
    this.reset();
  }

  reset() {
    this.position = new THREE.Vector3().fromArray(this.spawn.position);
    this.velocity = new THREE.Vector3();
    this.onGround = false;
    this.yaw = this.spawn.yaw;
    this.pitch = this.spawn.pitch;
    this.acc = 0;
    this.clampToBounds();
  }

  /** Turn by the given angles (radians); pitch stays within +-89 degrees. */
  look(dYaw, dPitch) {
    this.yaw = ((((this.yaw + dYaw + Math.PI) % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI)) - Math.PI;
    const lim = (89 * Math.PI) / 180;
    this.pitch = Math.min(Math.max(this.pitch + dPitch, -lim), lim);
  }

  eye(target = new THREE.Vector3()) {
    return target.copy(this.position).addScaledVector(UP, this.eyeHeight);
  }

  /**
   * Advance by dt seconds of held input {forward, right (each -1..1), run, jump}, moving along
   * `yaw` (default: the walker's). Returns the number of substeps run.
   */
  update(dt, input, yaw = this.yaw) {
    const h = 1 / this.cfg.stepHz;
    this.acc += Math.min(Math.max(dt, 0), this.cfg.maxFrameDt);
    let n = 0;
    while (this.acc >= h - 1e-9) {
      this.acc = Math.max(this.acc - h, 0);
      this.substep(input, h, yaw);
      n++;
    }
    return n;
  }

  substep(input, h, yaw) {
    const cfg = this.cfg;
    const speed = input.run ? cfg.runSpeed : cfg.walkSpeed;
    const fx = Math.sin(yaw), fz = -Math.cos(yaw); // forward
    const rx = Math.cos(yaw), rz = Math.sin(yaw); // right
    let wx = input.forward * fx + input.right * rx;
    let wz = input.forward * fz + input.right * rz;
    const norm = Math.hypot(wx, wz);
    const s = norm > 1 ? speed / norm : speed;
    wx *= s;
    wz *= s;
    let vy = this.velocity.y;
    if (input.jump && this.onGround) vy = Math.sqrt(2 * cfg.gravity * cfg.jumpHeight);
    const disp = new THREE.Vector3(wx * h, vy * h - 0.5 * cfg.gravity * h * h, wz * h);
    vy = Math.max(vy - cfg.gravity * h, -cfg.maxFallSpeed);
    this.velocity.set(wx, vy, wz);
    this.move(disp);
    this.simTime += h;
    if (input.forward) this.heldTime.forward += h;
    if (input.right) this.heldTime.right += h;
  }

  /** Move by `disp` in pieces shorter than half the radius (no tunnelling). */
  move(disp) {
    const r = this.cfg.radius;
    const pieces = Math.max(1, Math.ceil(disp.length() / (0.5 * r)));
    this.onGround = false;
    for (let i = 0; i < pieces; i++) {
      this._prevMid.copy(this.position);
      this._prevMid.y += 0.5 * this.height;
      this.position.addScaledVector(disp, 1 / pieces);
      this.resolve();
      this.clampToBounds();
    }
  }

  /** Push the capsule out of the triangles it overlaps (deepest contact first). */
  resolve() {
    const r = this.cfg.radius;
    const seg = this._seg, box = this._box;
    for (let iter = 0; iter < 3; iter++) {
      seg.start.set(this.position.x, this.position.y + r, this.position.z);
      seg.end.set(this.position.x, this.position.y + this.height - r, this.position.z);
      box.makeEmpty();
      box.expandByPoint(seg.start);
      box.expandByPoint(seg.end);
      box.min.addScalar(-r);
      box.max.addScalar(r);
      const contacts = [];
      this.bvh.shapecast({
        intersectsBounds: (b) => b.intersectsBox(box),
        intersectsTriangle: (tri) => {
          const d = tri.closestPointToSegment(seg, this._triPt, this._segPt);
          if (d >= r - 1e-7) return false;
          const n = new THREE.Vector3();
          let pen = r - d;
          if (d > 1e-6) {
            n.subVectors(this._segPt, this._triPt).divideScalar(d);
          } else {
            // the axis touches or pierces the face: its normal, toward where the capsule was
            tri.getNormal(n);
            if (n.dot(this._n.subVectors(this._prevMid, tri.a)) < 0) n.negate();
            const lo = Math.min(n.dot(this._n.subVectors(seg.start, tri.a)), n.dot(this._n.subVectors(seg.end, tri.a)));
            pen = r - Math.min(lo, 0);
          }
          contacts.push({ n, pen });
          return false;
        },
      });
      if (contacts.length === 0) return;
      for (let k = 0; k < contacts.length; k++) {
        let j = 0;
        for (let i = 1; i < contacts.length; i++) if (contacts[i].pen > contacts[j].pen) j = i;
        const c = contacts[j];
        if (c.pen <= 1e-7) break;
        const walkable = c.n.y >= this.cosSlope;
        const push = walkable ? new THREE.Vector3(0, c.pen / c.n.y, 0) : c.n.clone().multiplyScalar(c.pen);
        if (walkable) this.onGround = true;
        this.position.add(push);
        for (const o of contacts) o.pen -= o.n.dot(push);
        const vn = this.velocity.dot(c.n);
        if (vn < 0) this.velocity.addScaledVector(c.n, -vn);
      }
      if (Math.max(...contacts.map((c) => c.pen)) <= 1e-7) return;
    }
  }

  clampToBounds() {
    const r = this.cfg.radius;
    const lo = new THREE.Vector3(this.boundsMin.x + r, this.boundsMin.y, this.boundsMin.z + r);
    const hi = new THREE.Vector3(this.boundsMax.x - r, this.boundsMax.y - this.height, this.boundsMax.z - r);
    if (hi.y < lo.y) hi.y = Infinity; // a box lower than the capsule: keep its floor only
    hi.max(lo);
    for (const a of ["x", "y", "z"]) {
      const v = Math.min(Math.max(this.position[a], lo[a]), hi[a]);
      if (v !== this.position[a]) {
        if (a === "y" && v > this.position.y) this.onGround = true;
        this.velocity[a] = 0;
        this.position[a] = v;
      }
    }
  }
}
