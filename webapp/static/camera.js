// The live camera check: frames from getUserMedia go to POST /api/detect as JPEG, one request
// in flight at a time (the next frame is sent when the answer arrives), and the answer's boxes
// are drawn over the picture. "Save" records the current frame through the upload form.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("camera");
  if (!root) return;
  const video = document.getElementById("camera-video");
  const canvas = document.getElementById("camera-overlay");
  const ctx = canvas.getContext("2d");
  const status = document.getElementById("camera-status");
  const errorBox = document.getElementById("camera-error");
  const saved = document.getElementById("camera-saved");
  const saveButton = document.getElementById("camera-save");
  const counts = {
    faces: document.getElementById("count-faces"),
    masked: document.getElementById("count-masked"),
    unmasked: document.getElementById("count-unmasked"),
    frames: document.getElementById("count-frames"),
  };
  const grab = document.createElement("canvas");
  let faces = [];      // boxes of the last answer, in video pixels
  let frames = 0;
  let lastFrame = null; // the JPEG of the last frame sent

  const fail = (msg) => { errorBox.textContent = msg; errorBox.hidden = false; };

  // Draw the picture and the last boxes on every animation frame.
  const draw = () => {
    window.requestAnimationFrame(draw);
    if (video.videoWidth) {
      if (canvas.width !== video.videoWidth) { canvas.width = video.videoWidth; canvas.height = video.videoHeight; }
      ctx.drawImage(video, 0, 0);
      ctx.lineWidth = Math.max(2, canvas.width / 320);
      ctx.font = Math.max(12, Math.round(canvas.width / 40)) + "px sans-serif";
      for (const f of faces) {
        const [x1, y1, x2, y2] = f.box;
        const colour = f.label === "mask" ? "#1a7f37" : "#cf222e";
        ctx.strokeStyle = colour;
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
        const text = (f.label === "mask" ? "mask " : "no mask ") + Math.round(100 * f.mask_probability) + "%";
        const h = parseInt(ctx.font, 10) + 4;
        ctx.fillStyle = colour;
        ctx.fillRect(x1, Math.max(0, y1 - h), ctx.measureText(text).width + 6, h);
        ctx.fillStyle = "#fff";
        ctx.fillText(text, x1 + 3, Math.max(h, y1) - 4);
      }
    }
  };

  const frameBlob = () => new Promise((resolve) => {
    grab.width = video.videoWidth;
    grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0);
    grab.toBlob(resolve, "image/jpeg", 0.85);
  });

  // One request at a time: the next frame goes when this answer is in.
  const loop = async () => {
    try {
      if (!video.videoWidth) { window.setTimeout(loop, 100); return; }
      const blob = await frameBlob();
      const r = await fetch("/api/detect", {
        method: "POST", body: blob, credentials: "same-origin",
        headers: { "Content-Type": "image/jpeg", "X-Requested-With": "camera" },
      });
      const answer = await r.json();
      if (!r.ok || !answer.success) {
        fail(answer.error ? answer.error.message : "The check failed (" + r.status + ").");
        window.setTimeout(loop, r.status === 429 || r.status === 503 ? 2000 : 1000);
        return;
      }
      errorBox.hidden = true;
      const d = answer.payload;
      faces = d.faces;
      lastFrame = blob;
      frames += 1;
      counts.faces.textContent = d.num_faces;
      counts.masked.textContent = d.num_masked;
      counts.unmasked.textContent = d.num_unmasked;
      counts.frames.textContent = frames;
      root.dataset.faces = String(d.num_faces);
      saveButton.disabled = false;
      window.setTimeout(loop, 0);
    } catch (e) {
      fail("The check failed: " + e.message);
      window.setTimeout(loop, 2000);
    }
  };

  saveButton.addEventListener("click", async () => {
    if (!lastFrame) return;
    saveButton.disabled = true;
    const form = new FormData();
    form.append("csrf_token", root.dataset.csrf);
    form.append("file", lastFrame, "camera-" + new Date().toISOString().replace(/[:.]/g, "-") + ".jpg");
    try {
      const r = await fetch("/upload", { method: "POST", body: form, credentials: "same-origin" });
      if (r.ok && r.redirected && r.url.indexOf("/results/") >= 0) {
        saved.textContent = "";
        const a = document.createElement("a");
        a.href = r.url; a.id = "camera-saved-link"; a.textContent = "Saved: see the result";
        saved.appendChild(a);
        saved.hidden = false;
      } else {
        fail("Saving failed (" + r.status + ").");
      }
    } catch (e) {
      fail("Saving failed: " + e.message);
    }
    saveButton.disabled = false;
  });

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    fail("This browser cannot use a camera here (it needs https or localhost).");
    return;
  }
  navigator.mediaDevices.getUserMedia({ video: true, audio: false }).then((stream) => {
    video.srcObject = stream;
    status.textContent = "Checking the camera picture; nothing is stored unless you press Save.";
    video.play().catch(() => {});
    window.requestAnimationFrame(draw);
    loop();
  }, (e) => fail("No camera: " + e.message));
});
