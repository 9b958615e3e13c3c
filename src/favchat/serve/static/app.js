// The page of `favchat serve`: choose a video (upload, or pick one under the server's allowed roots), see a few
// of its frames, ask questions about it and read the answers as they stream, with the adapters' weights of each
// answer. It speaks the same OpenAI-compatible API as any client: every question sends the whole conversation and
// the video; the server keeps the video's encoder states by content hash, so follow-ups do not encode it again.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, videoUrl: null, turns: [], controller: null };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  $("error").textContent = message || "";
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function start() {
  const health = await (await fetch("/health")).json();
  state.model = health.model;
  $("model").textContent = health.model;
  $("key-label").hidden = !health.auth_required;
  await loadServerVideos();
}

async function loadServerVideos() {
  const response = await fetch("/v1/favchat/videos", { headers: headers() });
  if (!response.ok) return; // no key yet, or none allowed
  const videos = (await response.json()).data;
  const pick = $("pick");
  pick.length = 1;
  for (const v of videos) pick.add(new Option(v.name, v.url));
  $("pick-label").hidden = videos.length === 0;
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function chooseVideo(url, label) {
  state.videoUrl = null;
  state.turns = [];
  $("conversation").replaceChildren();
  $("frames").replaceChildren();
  $("question").disabled = $("send").disabled = true;
  $("video-info").textContent = `Reading ${label}…`;
  showError("");
  const response = await fetch("/v1/favchat/frames", {
    method: "POST", headers: headers(), body: JSON.stringify({ video_url: { url } }),
  });
  if (!response.ok) {
    $("video-info").textContent = "No video yet.";
    showError(await errorMessage(response));
    return;
  }
  const info = await response.json();
  for (const src of info.frames) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = "a frame of the video";
    $("frames").append(img);
  }
  $("video-info").textContent = `${label}: ${info.width}×${info.height}, ${info.num_frames} frames, ` +
    `${info.duration_s.toFixed(1)} s`;
  $("video-info").dataset.sha256 = info.sha256;
  state.videoUrl = url;
  $("question").disabled = $("send").disabled = false;
  $("question").focus();
}

function messages(question) {
  const out = [];
  state.turns.forEach((turn, i) => {
    out.push({ role: "user", content: i === 0 ? withVideo(turn.question) : turn.question });
    out.push({ role: "assistant", content: turn.answer });
  });
  out.push({ role: "user", content: state.turns.length === 0 ? withVideo(question) : question });
  return out;
}

function withVideo(text) {
  return [{ type: "video_url", video_url: { url: state.videoUrl } }, { type: "text", text }];
}

function weightsLine(favchat) {
  const line = document.createElement("div");
  line.className = "weights";
  const w = favchat.adapter_weights;
  if (w) {
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.title = "adapter weights: general (blue) and facial (red) stream";
    for (const [cls, weight] of [["g", w.w_g], ["f", w.w_f]]) {
      const part = document.createElement("span");
      part.className = cls;
      part.style.width = `${(100 * weight).toFixed(1)}%`; // set through the DOM: the page's CSP allows no inline style
      bar.append(part);
    }
    const text = document.createElement("span");
    text.textContent = `w_g ${w.w_g.toFixed(3)} · w_f ${w.w_f.toFixed(3)}`;
    line.append(bar, text);
  }
  const cache = document.createElement("span");
  cache.textContent = favchat.video.cached ? "video from cache" : "video encoded";
  line.append(cache);
  return line;
}

async function ask(question) {
  const item = document.createElement("li");
  const q = document.createElement("div");
  q.className = "question";
  q.textContent = question;
  const answer = document.createElement("div");
  answer.className = "answer";
  answer.dataset.state = "waiting";
  answer.dataset.chunks = "0";
  item.append(q, answer);
  $("conversation").append(item);
  showError("");
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").hidden = false;
  let text = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ model: state.model, messages: messages(question), stream: true }),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    answer.dataset.state = "streaming";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    while (!done) {
      const { value, done: ended } = await reader.read();
      if (ended) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") { done = true; break; }
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.favchat) item.append(weightsLine(chunk.favchat));
        const delta = chunk.choices.length ? chunk.choices[0].delta.content : "";
        if (delta) {
          text += delta;
          answer.textContent = text;
          answer.dataset.chunks = String(Number(answer.dataset.chunks) + 1);
        }
      }
    }
    if (!done) throw new Error("the answer was cut off");
    answer.dataset.state = "done";
    state.turns.push({ question, answer: text });
  } catch (error) {
    answer.dataset.state = "failed";
    showError(error.name === "AbortError" ? "stopped" : error.message);
  } finally {
    state.controller = null;
    $("send").disabled = false;
    $("stop").hidden = true;
  }
}

$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  $("pick").value = "";
  chooseVideo(await readAsDataURL(file), file.name);
});

$("pick").addEventListener("change", (event) => {
  if (event.target.value) chooseVideo(event.target.value, event.target.selectedOptions[0].text);
});

$("key").addEventListener("change", loadServerVideos);

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question || !state.videoUrl || state.controller) return;
  $("question").value = "";
  ask(question);
});

$("stop").addEventListener("click", () => state.controller && state.controller.abort());

start().catch((error) => showError("cannot reach the server: " + error.message));
