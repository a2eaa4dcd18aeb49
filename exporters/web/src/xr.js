// WebXR: an "Enter VR" button, an immersive-vr session on a `local-floor` reference space, the
// world at metric scale with the floor under the player's feet, thumbstick smooth locomotion
// (left stick, walking speed along the head's heading; Shift's run speed with the stick pushed
// in) and 30-degree snap turns (right stick), collision applied to the head's position.
//
// The camera sits in a `rig` group whose origin is the player's feet point on the floor (world
// frame); in XR three.js sets the camera's pose relative to the rig from the headset. Each frame
// the walker's capsule follows the head's floor point (physically walking collides too), the
// stick moves it further, and the rig is shifted so the head stays where the capsule ended.

import * as THREE from "three";

const SNAP_TURN = (30 * Math.PI) / 180;
const DEAD_ZONE = 0.15;

export class XrSupport {
  /** renderer: THREE.WebGLRenderer (xr.enabled set here); rig: THREE.Group holding camera. */
  constructor({ renderer, rig, camera, walker, button, onEnter, onExit }) {
    this.renderer = renderer;
    this.rig = rig;
    this.camera = camera;
    this.walker = walker;
    this.button = button;
    this.onEnter = onEnter;
    this.onExit = onExit;
    this.session = null;
    this.frames = 0; // XR frames rendered
    this.views = 0; // views of the last viewer pose
    this.snapArmed = true;
    renderer.xr.enabled = true;
    renderer.xr.setReferenceSpaceType("local-floor");
    renderer.xr.setFramebufferScaleFactor(0.5); // splats are fill-bound: half resolution
    this._head = new THREE.Vector3();
    this._dir = new THREE.Vector3();
    button.addEventListener("click", () => (this.session ? this.session.end() : this.enter()));
    if (navigator.xr && navigator.xr.isSessionSupported) {
      navigator.xr
        .isSessionSupported("immersive-vr")
        .then((ok) => {
          if (ok) button.hidden = false;
        })
        .catch(() => {});
    }
  }

  async enter() {
    let session;
    try {
      session = await navigator.xr.requestSession("immersive-vr", {
        requiredFeatures: ["local-floor"],
      });
    } catch (e) {
      console.warn("worldgen: no VR session (" + (e && e.message) + ")");
      return;
    }
    this.session = session;
    this.frames = 0;
    session.addEventListener("end", () => this._ended());
    await this.renderer.xr.setSession(session);
    this.button.textContent = "Exit VR";
    this._synced = false;
    if (this.onEnter) this.onEnter();
  }

  _ended() {
    this.session = null;
    this.button.textContent = "Enter VR";
    if (this.onExit) this.onExit();
  }

  get presenting() {
    return !!this.session && this.renderer.xr.isPresenting;
  }

  /** The head's world position and heading (yaw, radians, > 0 right) of the last frame. */
  head() {
    this.camera.updateMatrixWorld(true);
    this._head.setFromMatrixPosition(this.camera.matrixWorld);
    this.camera.getWorldDirection(this._dir);
    const yaw = Math.atan2(this._dir.x, -this._dir.z);
    return { position: this._head.clone(), yaw };
  }

  _sticks() {
    const out = { move: [0, 0], turn: 0, run: false };
    if (!this.session) return out;
    for (const src of this.session.inputSources) {
      const gp = src.gamepad;
      if (!gp || gp.axes.length < 2) continue;
      const x = gp.axes.length >= 4 ? gp.axes[2] : gp.axes[0];
      const y = gp.axes.length >= 4 ? gp.axes[3] : gp.axes[1];
      if (src.handedness === "right") out.turn = x;
      else {
        out.move = [Math.abs(x) > DEAD_ZONE ? x : 0, Math.abs(y) > DEAD_ZONE ? y : 0];
        out.run = !!(gp.buttons[3] && gp.buttons[3].pressed); // thumbstick pressed in
      }
    }
    return out;
  }

  /** One XR frame's locomotion and collision (dt seconds), before rendering. */
  update(dt, frame) {
    const walker = this.walker, rig = this.rig;
    if (frame) {
      const pose = frame.getViewerPose(this.renderer.xr.getReferenceSpace());
      if (pose) this.views = pose.views.length;
      this.frames++;
    }
    const sticks = this._sticks();
    // snap turn about the head (edge-triggered)
    if (Math.abs(sticks.turn) > 0.6 && this.snapArmed) {
      this.snapArmed = false;
      const before = this.head().position;
      rig.rotation.y -= Math.sign(sticks.turn) * SNAP_TURN;
      rig.updateMatrixWorld(true);
      const after = this.head().position;
      rig.position.x += before.x - after.x;
      rig.position.z += before.z - after.z;
    } else if (Math.abs(sticks.turn) < 0.3) {
      this.snapArmed = true;
    }
    const head = this.head();
    if (!this._synced) {
      // the capsule starts under the head
      walker.position.x = head.position.x;
      walker.position.z = head.position.z;
      this._synced = true;
    }
    // the head moved physically: the capsule follows it, colliding
    const phys = new THREE.Vector3(head.position.x - walker.position.x, 0, head.position.z - walker.position.z);
    if (phys.lengthSq() > 1e-12) walker.move(phys);
    // the stick: smooth locomotion along the head's heading, with gravity
    walker.update(dt, { forward: -sticks.move[1], right: sticks.move[0], run: sticks.run, jump: false }, head.yaw);
    walker.yaw = head.yaw;
    rig.position.x += walker.position.x - head.position.x;
    rig.position.z += walker.position.z - head.position.z;
    rig.position.y = walker.position.y;
    rig.updateMatrixWorld(true);
  }
}
