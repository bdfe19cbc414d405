// Batch upload with progress per file: each chosen file (photo or zip) is posted on its own to
// POST /batch, one after another, and its line in the list shows what became of it. The form
// works without this script (one post with every file, then the summary page).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("batch-form");
  if (!form || !window.fetch || !window.FormData) return;
  const maxBytes = Number(form.dataset.maxBytes);
  const input = document.getElementById("files");
  const list = document.getElementById("batch-progress");
  const done = document.getElementById("batch-done");
  const link = document.getElementById("summary-link");
  const err = document.getElementById("client-error");
  const csrf = form.querySelector("input[name=csrf_token]").value;
  const button = form.querySelector("button[type=submit]");

  const line = (name) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = name + ": ";
    const state = document.createElement("span");
    state.className = "state";
    state.textContent = "waiting";
    li.append(label, state);
    list.appendChild(li);
    return { li, state };
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    const files = Array.from(input.files || []);
    if (!files.length) { err.textContent = "Choose one or more photos or zips."; err.hidden = false; return; }
    button.disabled = true;
    done.hidden = true;
    list.textContent = "";
    const ids = [];
    const lines = files.map((f) => line(f.name));
    for (let i = 0; i < files.length; i += 1) {
      const { li, state } = lines[i];
      if (files[i].size > maxBytes) {
        state.textContent = "too large (the limit is " + Math.round(maxBytes / 1048576) + " MiB)";
        li.className = "failed";
        continue;
      }
      state.textContent = "uploading…";
      li.className = "active";
      const body = new FormData();
      body.append("csrf_token", csrf);
      body.append("files", files[i], files[i].name);
      try {
        const r = await fetch(form.action, { method: "POST", body, credentials: "same-origin", headers: { Accept: "application/json" } });
        const answer = await r.json();
        if (!r.ok || !answer.success) {
          state.textContent = "refused: " + (answer.error ? answer.error.message : r.status);
          li.className = "failed";
          continue;
        }
        const parts = answer.items.map((it) => {
          if (it.id) ids.push(it.id);
          return it.error ? it.name + ": " + it.error : (answer.items.length > 1 ? it.name + ": " : "") + it.message;
        });
        state.textContent = parts.join("; ");
        li.className = answer.items.some((it) => it.error) ? "failed" : "done";
      } catch (e) {
        state.textContent = "failed: " + e.message;
        li.className = "failed";
      }
    }
    link.href = "/batch/summary?ids=" + ids.join(",");
    done.hidden = false;
    button.disabled = false;
  });
});
