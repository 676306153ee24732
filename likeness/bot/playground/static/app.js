"use strict";
// Likeness playground: plain JS over the JSON API; progress arrives as Server-Sent Events.
const $ = (id) => document.getElementById(id);
let current = null; // the result shown in the "Result" card
const picked = new Set();

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({ message: "Unexpected answer from the server." }));
  if (!response.ok) throw new Error(body.message || "Request failed.");
  return body;
}

async function loadPresets() {
  const data = await api("/api/presets");
  for (const preset of data.presets) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${preset.emoji} ${preset.name}`;
    button.title = preset.description;
    button.dataset.preset = preset.name;
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", () => {
      if (picked.has(preset.name)) picked.delete(preset.name); else picked.add(preset.name);
      button.setAttribute("aria-pressed", String(picked.has(preset.name)));
      $("preset").value = [...picked].join("+");
    });
    $("presets").append(button);
  }
  for (const format of data.formats) {
    const option = document.createElement("option");
    option.value = format.name;
    option.textContent = `${format.name} — ${format.description}`;
    $("format").append(option);
  }
}

function follow(jobId) {
  return new Promise((resolve, reject) => {
    const events = new EventSource(`/api/jobs/${jobId}/events`);
    events.addEventListener("progress", (e) => {
      const ev = JSON.parse(e.data);
      if (ev.stage === "queued" && ev.position) setStatus(`⏳ #${ev.position} in the queue…`);
      else if (ev.stage === "step" && ev.total) setStatus(`🎨 Painting… ${Math.round((100 * ev.step) / ev.total)}%`);
      else if (ev.stage === "started") setStatus("🎨 Starting…");
    });
    events.addEventListener("result", (e) => { events.close(); resolve(JSON.parse(e.data)); });
    events.addEventListener("error", (e) => {
      events.close();
      const data = e.data ? JSON.parse(e.data) : { message: "Connection lost." };
      reject(new Error(data.message || "Something went wrong."));
    });
  });
}

async function run(request) {
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  try {
    const ticket = await request();
    setStatus(ticket.position > 0 ? `⏳ #${ticket.position} in the queue…` : "🎨 Starting…");
    const result = await follow(ticket.job_id);
    show(result);
    setStatus("✅ Done.");
    await loadHistory();
  } catch (error) {
    setStatus(`⚠️ ${error.message}`, true);
  } finally {
    for (const b of document.querySelectorAll("button")) b.disabled = false;
  }
}

function show(result) {
  current = result;
  $("current").hidden = false;
  $("images").replaceChildren(...result.images.map((src, i) => {
    const img = document.createElement("img");
    img.src = src;
    img.alt = result.captions[i] || "portrait";
    img.dataset.seed = result.seeds[i];
    return img;
  }));
  $("caption").textContent = [...result.captions, ...(result.notices || [])].join(" · ");
  resetMask();
}

async function loadHistory() {
  const data = await api("/api/history");
  $("history").replaceChildren(...data.results.map((result) => {
    const img = document.createElement("img");
    img.src = result.images[0];
    img.alt = result.captions[0] || "earlier portrait";
    img.addEventListener("click", () => show(result));
    return img;
  }));
}

function resetMask() {
  const canvas = $("mask");
  const first = $("images").querySelector("img");
  if (!first) return;
  first.decode().then(() => {
    canvas.width = first.naturalWidth;
    canvas.height = first.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }).catch(() => {});
}

function paint(e) {
  if (!(e.buttons & 1)) return;
  const canvas = $("mask");
  const rect = canvas.getBoundingClientRect();
  const x = ((e.clientX - rect.left) / rect.width) * canvas.width;
  const y = ((e.clientY - rect.top) / rect.height) * canvas.height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.beginPath();
  ctx.arc(x, y, Math.max(2, canvas.width / 16), 0, 2 * Math.PI);
  ctx.fill();
}

$("selfie").addEventListener("change", () => {
  const file = $("selfie").files[0];
  $("selfie-preview").hidden = !file;
  if (file) $("selfie-preview").src = URL.createObjectURL(file);
});
$("portrait-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const form = new FormData();
  form.append("selfie", $("selfie").files[0]);
  form.append("preset", $("preset").value);
  form.append("prompt", $("prompt").value);
  form.append("format", $("format").value);
  form.append("count", $("count").value);
  run(() => api("/api/portrait", { method: "POST", body: form }));
});
$("reroll").addEventListener("click", () => run(() => api(`/api/results/${current.result_id}/reroll`, { method: "POST" })));
$("variations").addEventListener("click", () => run(() => api(`/api/results/${current.result_id}/variations`, { method: "POST" })));
$("paint").addEventListener("change", () => { $("mask").hidden = !$("paint").checked; });
$("mask").addEventListener("pointermove", paint);
$("mask").addEventListener("pointerdown", paint);
$("edit-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const send = async () => {
    const form = new FormData();
    form.append("instruction", $("instruction").value);
    if ($("paint").checked) {
      const blob = await new Promise((resolve) => $("mask").toBlob(resolve, "image/png"));
      form.append("mask", blob, "mask.png");
    }
    return api(`/api/results/${current.result_id}/edit`, { method: "POST", body: form });
  };
  run(send);
});
$("cancel").addEventListener("click", async () => setStatus((await api("/api/cancel", { method: "POST" })).message));
$("forget").addEventListener("click", async () => {
  setStatus((await api("/api/forget", { method: "POST" })).message);
  $("current").hidden = true;
  await loadHistory();
});

loadPresets().then(loadHistory).catch((error) => setStatus(`⚠️ ${error.message}`, true));
