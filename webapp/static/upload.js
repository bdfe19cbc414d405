// Upload progress and a size check before sending. The form works without this script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  if (!form || !window.XMLHttpRequest || !window.FormData) return;
  const maxBytes = Number(form.dataset.maxBytes);
  const file = document.getElementById("file");
  const bar = document.getElementById("progress");
  const err = document.getElementById("client-error");
  const fail = (msg) => { err.textContent = msg; err.hidden = false; };
  form.addEventListener("reset", () => { err.hidden = true; bar.hidden = true; bar.value = 0; });
  form.addEventListener("submit", (ev) => {
    err.hidden = true;
    const f = file.files && file.files[0];
    if (f && f.size > maxBytes) { ev.preventDefault(); fail("That file is too large: the limit is " + Math.round(maxBytes / 1048576) + " MiB."); return; }
    if (!f) return; // URL uploads: a normal form post.
    ev.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    bar.hidden = false;
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); });
    xhr.addEventListener("load", () => {
      if (xhr.responseURL && xhr.status < 400) { window.location.assign(xhr.responseURL); return; }
      document.open(); document.write(xhr.responseText); document.close();
    });
    xhr.addEventListener("error", () => fail("The upload failed: the connection was interrupted."));
    xhr.send(new FormData(form));
  });
});
