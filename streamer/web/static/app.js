// The page for the ground: live view (WebRTC, WHEP-style through POST /api/v1/live), the
// stack's status every second (GET /api/v1/status), the recordings (GET /api/v1/recordings),
// and the record and photo buttons (POST /api/v1/recording, POST /api/v1/snapshot).
//
// Plain JavaScript, no build step, nothing from elsewhere. What the page shows comes from the
// API's answers, never from what a click is assumed to have done. Errors are shown in the
// banner (or, for the live view, on the picture), never swallowed. See docs/page.md.

"use strict";

(() => {
  const POLL_MS = 1000; // status: a new request at most this long after the last one began
  const REQUEST_TIMEOUT_MS = 8000;
  const COMMAND_TIMEOUT_MS = 40000; // the server waits up to 20 s in line, then 15 s for the recorder
  const LISTING_EVERY_MS = 120000; // the whole listing (retention deletes old sessions; ~40 KB gzipped an hour)
  const LATEST_EVERY_MS = 5000; // the latest image, while images are being written (a full-size JPEG)
  const ANSWER_HOLD_MS = 2500; // a recording answer stands until the status agrees, or this long
  const CHUNKS_SHOWN = 12; // per session, newest first, before "show all"

  const LIVE_CHECK_MS = 250; // how often the live view counts decoded frames
  const LIVE_STALL_MS = 2000; // no new frame for this long: close and offer again
  const LIVE_FIRST_FRAME_MS = 3000; // a new session's first frame may take this long
  const LIVE_BACKOFF_MIN_MS = 250; // pause before a new offer, doubling...
  const LIVE_BACKOFF_MAX_MS = 1000; // ...up to this
  const LIVE_ABSENT_RETRY_MS = 5000; // the server has no live view (404): ask again slowly
  const LIVE_OFFER_TIMEOUT_MS = 10000;
  const LIVE_STATUS_FRESH_MS = 3000; // a status this recent saying the stream is down holds offers back
  const LIVE_FIRST_STATUS_MS = 2000; // the first offer waits this long at most for the first status
  const ICE_GATHER_MS = 1000; // non-trickle: the offer carries the candidates gathered by then
  const HIDDEN_STOP_MS = 10000; // a page hidden this long stops its live view (the radio link)

  const WORKER_ORDER = ["feeder", "recorder", "rtsp", "live", "web"];

  // --- small helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const pad = (n) => String(n).padStart(2, "0");
  const clock = (date) => `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
  const day = (date) => `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  const basename = (path) => (typeof path === "string" && path ? path.split("/").filter(Boolean).pop() : null);

  function bytes(n) {
    if (typeof n !== "number") return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) {
      n /= 1000;
      i += 1;
    }
    return `${i === 0 || n >= 100 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
  }

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  function duration(seconds) {
    if (typeof seconds !== "number") return "–";
    const s = Math.max(0, seconds);
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    const minutes = Math.floor(s / 60);
    if (minutes < 60) return `${minutes} min ${pad(Math.floor(s % 60))} s`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h ${pad(minutes % 60)} min`;
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }

  // --- errors: the banner holds one line per source, until that source succeeds or is dismissed

  const problems = new Map();

  function report(source, message) {
    problems.set(source, message);
    renderBanner();
  }

  function clear(source) {
    if (problems.delete(source)) renderBanner();
  }

  function renderBanner() {
    const items = [...problems].map(([source, message]) =>
      el(
        "li",
        { "data-source": source },
        el("span", { text: message }),
        el("button", { type: "button", class: "small", "aria-label": "dismiss", onclick: () => clear(source) }, "×"),
      ),
    );
    $("banner-list").replaceChildren(...items);
    $("banner").hidden = items.length === 0;
  }

  // --- the API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (err) {
      // not JSON: the status line says it
    }
    return response.statusText || "error";
  }

  function failure(err, timeoutMs) {
    if (err instanceof ApiError) return err;
    if (err && err.name === "TimeoutError") return new ApiError(0, `no answer within ${timeoutMs / 1000} s`);
    return new ApiError(0, `cannot reach the drone (${err && err.message ? err.message : err})`);
  }

  async function request(path, options = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    let response;
    try {
      response = await fetch(path, { cache: "no-store", ...options, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      throw failure(err, timeoutMs);
    }
    if (!response.ok) throw new ApiError(response.status, `${response.status}: ${await errorText(response)}`);
    return response;
  }

  async function requestJson(path, options, timeoutMs) {
    const response = await request(path, options, timeoutMs);
    try {
      return await response.json();
    } catch (err) {
      throw failure(err, timeoutMs);
    }
  }

  // --- live view: WebRTC, WHEP-style

  function iceGathered(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => {
        if (pc.iceGatheringState === "complete") done();
      };
      const timer = setTimeout(done, timeoutMs);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  // Offer H.264 only (the stream's codec, passed through unchanged: there is no other), in
  // packetization mode 1, constrained baseline first: a short offer (about 2 KB instead of 5)
  // that the server can only answer one way.
  function preferH264(transceiver) {
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const capabilities = RTCRtpReceiver.getCapabilities("video");
    const profiles = ["42e0", "4200", "4d00", "f400", "6400"];
    const rank = (codec) => {
      const profile = /profile-level-id=([0-9a-f]{4})/i.exec(codec.sdpFmtpLine || "");
      const i = profile ? profiles.indexOf(profile[1].toLowerCase()) : -1;
      return i < 0 ? profiles.length : i;
    };
    const h264 = ((capabilities && capabilities.codecs) || [])
      .filter((c) => c.mimeType.toLowerCase() === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""))
      .sort((a, b) => rank(a) - rank(b));
    if (h264.length) transceiver.setCodecPreferences(h264); // none: the server's answer will say so
  }

  async function framesDecoded(pc, video) {
    try {
      const stats = await pc.getStats();
      for (const report of stats.values()) {
        if (report.type === "inbound-rtp" && report.kind === "video" && typeof report.framesDecoded === "number") {
          return report.framesDecoded;
        }
      }
    } catch (err) {
      // the connection is closing: count what the element decoded instead
    }
    return video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality().totalVideoFrames : 0;
  }

  class LiveView {
    constructor(video, overlay) {
      this.video = video;
      this.overlay = overlay;
      this.backoffMs = LIVE_BACKOFF_MIN_MS;
      this.end = null; // ends the current session with an outcome
      this.resource = null; // the current session's URL (Location), for DELETE
      this.hiddenTimer = null;
      this.wakeUp = null;
      this.sessions = 0; // answered offers (data-session on the overlay)
      this.epoch = undefined; // which run of the RTSP and live workers the status shows
      this.watching = null; // the current session's {live, lastNew}
      this.streamSeenAt = null; // {at, problem}: the latest status's word on the stream
    }

    start() {
      document.addEventListener("visibilitychange", () => this.visibilityChanged());
      window.addEventListener("pagehide", () => this.release(this.resource));
      this.run();
    }

    show(state, text) {
      this.overlay.dataset.state = state;
      this.overlay.dataset.session = String(this.sessions);
      this.overlay.textContent = text;
    }

    async run() {
      for (;;) {
        await this.untilVisible();
        await this.untilStreamReady();
        const outcome = await this.session();
        if (outcome.hidden) continue;
        const pause = outcome.retryMs ?? this.backoffMs;
        if (outcome.retryMs === undefined) this.backoffMs = Math.min(this.backoffMs * 2, LIVE_BACKOFF_MAX_MS);
        this.show(outcome.state || "reconnecting", `${outcome.reason} · reconnecting`);
        await sleep(pause);
      }
    }

    // One WebRTC session: offer, answer, then watch until it fails or stalls. Resolves with
    // {reason, state?, retryMs?, hidden?}.
    async session() {
      const pc = new RTCPeerConnection({ iceServers: [] });
      const watch = { done: false };
      let resource = null;
      const ended = new Promise((resolve) => {
        this.end = resolve;
      });
      try {
        preferH264(pc.addTransceiver("video", { direction: "recvonly" }));
        pc.addEventListener("track", (event) => {
          this.video.srcObject = event.streams[0] || new MediaStream([event.track]);
        });
        const stateChanged = () => {
          const connection = pc.connectionState;
          const ice = pc.iceConnectionState;
          if (connection === "failed" || ice === "failed") this.end({ reason: "connection failed" });
          else if (connection === "disconnected" || ice === "disconnected") this.end({ reason: "connection lost" });
          else if (connection === "closed") this.end({ reason: "connection closed" });
        };
        pc.addEventListener("connectionstatechange", stateChanged);
        pc.addEventListener("iceconnectionstatechange", stateChanged);

        this.show(this.sessions === 0 ? "connecting" : "reconnecting", "connecting…");
        await pc.setLocalDescription(await pc.createOffer());
        await iceGathered(pc, ICE_GATHER_MS);
        let response;
        try {
          response = await fetch("api/v1/live", {
            method: "POST",
            headers: { "Content-Type": "application/sdp" },
            body: pc.localDescription.sdp,
            cache: "no-store",
            signal: AbortSignal.timeout(LIVE_OFFER_TIMEOUT_MS),
          });
        } catch (err) {
          return { reason: `live view: ${failure(err, LIVE_OFFER_TIMEOUT_MS).message}`, state: "unavailable" };
        }
        if (response.status !== 201) {
          const message = `${response.status}: ${await errorText(response)}`;
          if (response.status === 404) {
            return { reason: `no live view here (${message})`, state: "unavailable", retryMs: LIVE_ABSENT_RETRY_MS };
          }
          return { reason: `live view refused (${message})`, state: "unavailable" };
        }
        const location = response.headers.get("Location");
        resource = location ? new URL(location, document.baseURI).href : null;
        this.resource = resource;
        const answer = await response.text();
        await pc.setRemoteDescription({ type: "answer", sdp: answer });
        this.sessions += 1;
        this.show("connecting", "waiting for the picture…");
        return await Promise.race([ended, this.watchFrames(pc, watch)]);
      } catch (err) {
        return { reason: `live view: ${err && err.message ? err.message : err}` };
      } finally {
        watch.done = true;
        if (this.watching === watch) this.watching = null;
        this.end = null;
        pc.close();
        this.release(resource);
      }
    }

    // Resolves when no new frame was decoded for LIVE_STALL_MS (LIVE_FIRST_FRAME_MS for the first).
    async watchFrames(pc, watch) {
      let frames = -1;
      let live = false;
      let lastNew = performance.now();
      let rateFrom = { at: lastNew, frames: 0 };
      this.watching = watch;
      let fps = null;
      while (!watch.done) {
        await sleep(LIVE_CHECK_MS);
        if (watch.done) break;
        const now = performance.now();
        const decoded = await framesDecoded(pc, this.video);
        if (decoded > frames && decoded > 0) {
          if (!live) {
            live = true;
            this.backoffMs = LIVE_BACKOFF_MIN_MS;
            rateFrom = { at: now, frames: decoded };
            clear("live");
          }
          frames = decoded;
          lastNew = now;
          watch.live = true;
          watch.lastNew = now;
        }
        if (now - rateFrom.at >= 1000) {
          fps = ((frames - rateFrom.frames) * 1000) / (now - rateFrom.at);
          rateFrom = { at: now, frames };
        }
        if (live) {
          const size = this.video.videoWidth ? `${this.video.videoWidth}×${this.video.videoHeight}` : "";
          const rate = fps === null ? "" : `${Math.round(fps)} fps`;
          this.show("live", ["live", size, rate].filter(Boolean).join(" · "));
        }
        const allowed = live ? LIVE_STALL_MS : LIVE_FIRST_FRAME_MS;
        if (now - lastNew > allowed) {
          return { reason: live ? `no new frame for ${allowed / 1000} s` : `no picture within ${allowed / 1000} s` };
        }
      }
      return { reason: "stopped" };
    }

    // From each status: when the RTSP worker (our stream's source) or the live worker has been
    // restarted, a session whose frames stopped is over: offer again at once rather than after
    // LIVE_STALL_MS. A session that receives frames is left alone.
    // What the latest status says of the stream, when it is fresh: null (go ahead) or why not.
    streamProblem() {
      const seen = this.streamSeenAt;
      if (!seen || performance.now() - seen.at > LIVE_STATUS_FRESH_MS) return null;
      return seen.problem;
    }

    async untilStreamReady() {
      const began = performance.now(); // the first offer waits a moment for the first status
      while (!this.streamSeenAt && performance.now() - began < LIVE_FIRST_STATUS_MS) await sleep(50);
      for (let problem = this.streamProblem(); problem; problem = this.streamProblem()) {
        this.show("unavailable", problem);
        await sleep(LIVE_CHECK_MS);
      }
    }

    streamSeen(status) {
      const workers = status.workers || {};
      const rtsp = workers.rtsp || {};
      const live = workers.live || {};
      let problem = null;
      if (status.rtsp && status.rtsp.enabled === false) problem = "no live view: the RTSP stream is off (ENABLE_RTSP=0)";
      else if (!status.stack || !status.stack.running) problem = "no live view: the stack is not running";
      else if (rtsp.state !== "ready") problem = `waiting for the stream (RTSP worker ${rtsp.state || "not started"})`;
      else if (live.state && live.state !== "ready") problem = `waiting for the live worker (${live.state})`;
      this.streamSeenAt = { at: performance.now(), problem };
      const epoch = `${rtsp.pid}/${rtsp.ready_at}/${live.pid}`;
      const changed = this.epoch !== undefined && epoch !== this.epoch;
      this.epoch = epoch;
      const w = this.watching;
      if (changed && this.end && w && w.live && performance.now() - w.lastNew > 500) {
        this.end({ reason: "the stream restarted" });
      }
    }

    // DELETE the session (best effort: the server also ends sessions whose browser went away).
    release(resource) {
      if (!resource) return;
      if (this.resource === resource) this.resource = null;
      fetch(resource, { method: "DELETE", keepalive: true, cache: "no-store" }).then(
        async (response) => {
          // 404: the server had already ended it (e.g. its stream went away): nothing to end.
          if (!response.ok && response.status !== 404) {
            report("live", `Live view: ending the old session: ${response.status}: ${await errorText(response)}`);
          }
        },
        (err) => report("live", `Live view: ending the old session: ${failure(err, 0).message}`),
      );
    }

    visibilityChanged() {
      clearTimeout(this.hiddenTimer);
      if (document.hidden) {
        this.hiddenTimer = setTimeout(() => {
          if (this.end) this.end({ reason: "page hidden", hidden: true });
        }, HIDDEN_STOP_MS);
      } else if (this.wakeUp) {
        this.wakeUp();
        this.wakeUp = null;
      }
    }

    untilVisible() {
      if (!document.hidden) return Promise.resolve();
      this.show("paused", "paused while the page is hidden");
      return new Promise((resolve) => {
        this.wakeUp = resolve;
      });
    }
  }

  // --- recording and photo buttons

  const recorder = {
    shown: null, // {on, video, images, state, session}: the latest answer or status
    answer: null, // the latest answer to a command, held until the status agrees
    answeredAt: 0,
    pending: false,
  };

  function recordingOf(fields) {
    return {
      on: Boolean(fields.video || fields.images),
      video: Boolean(fields.video),
      images: Boolean(fields.images),
      state: fields.state || null,
      session: basename(fields.session),
    };
  }

  function showRecording(rec) {
    recorder.shown = rec;
    const button = $("record");
    const paused = { "disk-full": "paused: disk full", "no-disk": "paused: SSD not mounted" };
    if (!recorder.pending) {
      button.textContent = rec.on ? "Stop recording" : "Start recording";
      button.dataset.recording = String(rec.on);
    }
    for (const [id, on] of [["rec-video", rec.video], ["rec-images", rec.images]]) {
      $(id).setAttribute("aria-pressed", String(on));
    }
    for (const id of ["record", "rec-video", "rec-images"]) $(id).disabled = recorder.pending;
    const kinds = [rec.video && "video", rec.images && "images"].filter(Boolean).join(" + ");
    const state = $("rec-state");
    let shown = "off";
    if (rec.on && rec.state === "recording") shown = `recording ${kinds}`;
    else if (rec.on) shown = paused[rec.state] || (rec.state ? `${rec.state} (${kinds})` : `${kinds}: no recorder running`);
    state.textContent = shown;
    state.className = rec.on && rec.state === "recording" ? "rec-on" : "";
  }

  function recordingFromStatus(status) {
    const rec = recordingOf(status.recording);
    const held = recorder.answer;
    if (held && performance.now() - recorder.answeredAt < ANSWER_HOLD_MS && (held.video !== rec.video || held.images !== rec.images)) {
      return; // the status was sampled before the change: the answer stands a moment longer
    }
    recorder.answer = null;
    showRecording(rec);
  }

  async function setRecording(wanted, pendingLabel) {
    recorder.pending = true;
    $("record").textContent = pendingLabel;
    showRecording(recorder.shown);
    try {
      const answer = await requestJson(
        "api/v1/recording",
        { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(wanted) },
        COMMAND_TIMEOUT_MS,
      );
      clear("recording");
      recorder.answer = recordingOf(answer);
      recorder.answeredAt = performance.now();
      recorder.pending = false;
      showRecording(recorder.answer);
      recordings.refresh("full"); // a new session, or the chunk just finished
    } catch (err) {
      report("recording", `Recording: ${err.message}`);
    } finally {
      recorder.pending = false;
      showRecording(recorder.shown);
    }
  }

  function toggleRecording() {
    const shown = recorder.shown;
    if (!shown) return;
    if (shown.on) setRecording({ video: false, images: false }, "Stopping…");
    else setRecording({ video: true, images: true }, "Starting…");
  }

  function toggleKind(kind) {
    const shown = recorder.shown;
    if (!shown) return;
    setRecording({ [kind]: !shown[kind] }, "Changing…");
  }

  let photoUrl = null;

  async function takePhoto() {
    const button = $("photo");
    button.disabled = true;
    button.textContent = "Taking photo…";
    try {
      const response = await request("api/v1/snapshot", { method: "POST" }, COMMAND_TIMEOUT_MS);
      const where = response.headers.get("Content-Location");
      const blob = await response.blob();
      if (photoUrl) URL.revokeObjectURL(photoUrl);
      photoUrl = URL.createObjectURL(blob);
      $("photo-image").src = photoUrl;
      $("photo-open").href = where || photoUrl;
      const download = $("photo-download");
      download.href = where || photoUrl;
      download.setAttribute("download", basename(where) || "photo.jpg");
      $("photo-caption").textContent = `${clock(new Date())} · ${bytes(blob.size)} · ${basename(where) || "photo"}`;
      $("photo-result").hidden = false;
      clear("photo");
      const session = where ? where.split("/").filter(Boolean).slice(-2)[0] : null;
      recordings.refresh(session && recordings.has(session) ? session : "full");
    } catch (err) {
      report("photo", `Photo: ${err.message}`);
    } finally {
      button.disabled = false;
      button.textContent = "Take photo";
    }
  }

  // --- status panel

  let lastStatus = null;
  let lastAnswerAt = null;
  let shownUrls = "";

  function healthBadge(status) {
    const badge = $("health");
    const health = status.health || {};
    if (health.healthy) {
      badge.dataset.level = "good";
      badge.textContent = status.stack && typeof status.stack.uptime_s === "number" ? `healthy · up ${duration(status.stack.uptime_s)}` : "healthy";
    } else {
      badge.dataset.level = ["starting", "restarting"].includes(health.state) ? "warn" : "bad";
      badge.textContent = health.reason || health.state || "not healthy";
    }
  }

  function liveViewers(status) {
    const live = status.live || (status.workers && status.workers.live && status.workers.live.progress) || null;
    if (!live) return null;
    for (const key of ["playing", "viewers", "sessions"]) {
      if (typeof live[key] === "number") return live[key];
      if (Array.isArray(live[key])) return live[key].length;
    }
    return null;
  }

  function renderViewers(status) {
    const rtsp = status.rtsp || {};
    const parts = [];
    if (rtsp.enabled === false) parts.push("RTSP off");
    else {
      const clients = Array.isArray(rtsp.viewers) ? rtsp.viewers : [];
      const who = clients.map((v) => `${v.address} ${v.transport}`).join(", ");
      parts.push(`${typeof rtsp.watching === "number" ? rtsp.watching : "–"} on RTSP${who ? ` (${who})` : ""}`);
    }
    const browsers = liveViewers(status);
    if (browsers !== null) parts.push(`${browsers} in browsers`);
    $("viewers").textContent = parts.join(" · ");
  }

  // The stream's bitrate: "1200 kbit/s · adaptive up to 2000 · worst loss 3.1 % (viewer 2)".
  function renderBitrate(status) {
    const rtsp = status.rtsp || {};
    const b = rtsp.bitrate || {};
    const kbit = (bits) => (typeof bits === "number" ? `${Math.round(bits / 1000)} kbit/s` : "–");
    let text = rtsp.enabled === false ? "RTSP off" : `${kbit(b.current)} · ${b.mode || "?"}`;
    if (rtsp.enabled !== false && b.mode === "adaptive" && typeof b.ceiling === "number") {
      text += ` up to ${Math.round(b.ceiling / 1000)}`;
    }
    const reported = (Array.isArray(rtsp.viewers) ? rtsp.viewers : []).filter((v) => typeof v.fraction_lost === "number");
    if (reported.length) {
      const worst = reported.reduce((a, v) => (v.fraction_lost > a.fraction_lost ? v : a));
      const who = typeof worst.number === "number" ? ` (viewer ${worst.number})` : "";
      text += ` · worst loss ${(worst.fraction_lost * 100).toFixed(1)} %${who}`;
    }
    $("bitrate").textContent = text;
    $("bitrate").title = b.reason ? `last change: ${b.reason}` : "";
  }

  function renderWorkers(status) {
    const workers = status.workers || {};
    const names = Object.keys(workers).sort((a, b) => {
      const rank = (name) => (WORKER_ORDER.includes(name) ? WORKER_ORDER.indexOf(name) : WORKER_ORDER.length);
      return rank(a) - rank(b) || a.localeCompare(b);
    });
    const rows = names.map((name) => {
      const w = workers[name];
      const causes = Object.entries(w.restarts_by_cause || {}).map(([cause, n]) => `${cause}: ${n}`).join(", ");
      return el(
        "tr",
        { "data-worker": name },
        el("td", { text: name }),
        el("td", { class: `state-${w.state}`, text: w.state }),
        el("td", { class: "num", text: typeof w.uptime_s === "number" ? duration(w.uptime_s) : "–" }),
        el("td", { class: "num", title: causes || null, text: String(w.restarts ?? 0) }),
        el("td", { text: w.last_problem || "" }),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no stack running" })));
    document.querySelector("#workers tbody").replaceChildren(...rows);
  }

  function renderRestarts(status) {
    const restarts = (status.stack && status.stack.restarts) || [];
    const items = restarts.slice(0, 5).map((r) => {
      const when = new Date(r.at * 1000);
      const ago = typeof status.at === "number" ? ` (${duration(status.at - r.at)} ago)` : "";
      return el(
        "li",
        { title: `${day(when)} ${clock(when)} · ${r.cause} · paused ${r.delay_s} s` },
        el("span", { class: "muted", text: `${clock(when)}${ago} ` }),
        `${r.scope}: ${r.reason}`,
      );
    });
    $("restarts").classList.toggle("empty", !items.length);
    if (!items.length) items.push(el("li", { class: "muted", text: "none" }));
    $("restarts").replaceChildren(...items);
  }

  async function copyText(text, input, button) {
    let copied = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (err) {
        copied = false; // refused (no permission): fall back to the selection below
      }
    }
    if (!copied) {
      input.focus();
      input.select();
      try {
        copied = document.execCommand("copy");
      } catch (err) {
        copied = false;
      }
    }
    button.textContent = copied ? "copied" : "selected: press Ctrl+C";
    setTimeout(() => {
      button.textContent = "copy";
    }, 2000);
  }

  function renderUrls(status) {
    const rtsp = status.rtsp || {};
    const urls = rtsp.enabled === false ? [] : rtsp.urls || [];
    const key = JSON.stringify([urls, rtsp.auth]);
    if (key === shownUrls) return; // leave a selection in place
    shownUrls = key;
    const items = urls.map((url) => {
      const input = el("input", { type: "text", readonly: true, value: url, "aria-label": "stream URL" });
      const button = el("button", { type: "button", class: "small" }, "copy");
      button.addEventListener("click", () => copyText(url, input, button));
      return el("li", {}, input, button);
    });
    if (!items.length) items.push(el("li", { class: "muted", text: rtsp.enabled === false ? "RTSP is off" : "–" }));
    if (urls.length && rtsp.auth) items.push(el("li", { class: "muted", text: `needs a user and password (${rtsp.auth})` }));
    $("rtsp-urls").replaceChildren(...items);
  }

  function renderStatus(status) {
    lastStatus = status;
    healthBadge(status);
    const camera = status.camera || {};
    const fps = typeof camera.fps === "number" ? `${camera.fps} fps measured` : "fps not measured yet";
    const dropped = camera.dropped ? ` · ${camera.dropped} dropped` : "";
    $("camera").textContent = `${camera.device || "?"} · ${camera.mode || "?"} · ${fps}${dropped}`;
    const live = $("live");
    if (camera.width && camera.height && live.getAttribute("width") !== String(camera.width)) {
      live.setAttribute("width", camera.width);
      live.setAttribute("height", camera.height);
      live.parentElement.style.aspectRatio = `${camera.width} / ${camera.height}`;
    }
    liveView?.streamSeen(status);
    const rec = status.recording || {};
    recordingFromStatus(status);
    $("rec-session").textContent = basename(rec.session) || "–";
    renderRecordedTime();
    $("disk").textContent =
      typeof rec.disk_free_bytes === "number" ? `${bytes(rec.disk_free_bytes)} of ${bytes(rec.disk_total_bytes)} (${rec.path})` : "–";
    $("hours-left").textContent =
      typeof rec.hours_left === "number" ? `${rec.hours_left} h${rec.rate_measured ? "" : " (estimated)"}` : rec.on ? "–" : "– (not recording)";
    renderViewers(status);
    renderBitrate(status);
    renderWorkers(status);
    renderRestarts(status);
    renderUrls(status);
  }

  function renderRecordedTime() {
    const rec = (lastStatus && lastStatus.recording) || {};
    const session = recordings.find(basename(rec.session));
    $("rec-time").textContent = session
      ? `${duration(session.totals.duration_s)} in ${plural(session.totals.chunks, "chunk")} · ${bytes(session.totals.bytes)}`
      : "–";
  }

  async function pollStatus() {
    const began = performance.now();
    try {
      const status = await requestJson("api/v1/status");
      clear("status");
      lastAnswerAt = new Date();
      $("updated").textContent = `updated ${clock(lastAnswerAt)}`;
      renderStatus(status);
      recordings.statusSeen(status);
    } catch (err) {
      report("status", `Status: ${err.message}`);
      const badge = $("health");
      badge.dataset.level = "bad";
      badge.textContent = "no answer";
      $("updated").textContent = lastAnswerAt ? `no answer since ${clock(lastAnswerAt)}` : "no answer yet";
    }
    setTimeout(pollStatus, Math.max(0, POLL_MS - (performance.now() - began)));
  }

  // --- recordings

  class Recordings {
    constructor() {
      this.sessions = []; // newest first, as listed
      this.rendered = new Map(); // name → {key, node}
      this.expanded = new Set(); // sessions whose every chunk is shown
      this.loadedAt = 0;
      this.busy = false;
      this.queued = null; // "full" or a session's name
      this.seen = {};
      this.playing = null; // {session, chunk}
      this.latestAt = 0;
      this.latestUrl = null;
    }

    find(name) {
      return name ? this.sessions.find((s) => s.name === name) || null : null;
    }

    has(name) {
      return this.find(name) !== null;
    }

    // From each status: ask again when the recorder's session, chunk count or state changed;
    // the whole listing every LISTING_EVERY_MS; the latest image while images are written.
    statusSeen(status) {
      const rec = status.recording || {};
      const now = { session: basename(rec.session), chunks: rec.chunks, state: rec.state, snapshots: rec.snapshots };
      const changed = now.session !== this.seen.session || now.chunks !== this.seen.chunks || now.state !== this.seen.state;
      const wroteImages = now.snapshots !== this.seen.snapshots;
      this.seen = now;
      if (performance.now() - this.loadedAt > LISTING_EVERY_MS || (now.session && !this.has(now.session))) this.refresh("full");
      else if (changed && now.session) this.refresh(now.session);
      if (wroteImages || !this.latestUrl) this.refreshLatest(false);
    }

    refresh(what) {
      if (this.busy) {
        this.queued = this.queued === "full" || what === "full" ? "full" : what;
        return;
      }
      this.busy = true;
      this.load(what).finally(() => {
        this.busy = false;
        const next = this.queued;
        this.queued = null;
        if (next) this.refresh(next);
      });
    }

    async load(what) {
      try {
        if (what === "full" || !this.has(what)) {
          const listing = await requestJson("api/v1/recordings");
          this.sessions = listing.sessions;
          this.loadedAt = performance.now();
        } else {
          const listing = await requestJson(`api/v1/recordings?session=${encodeURIComponent(what)}`);
          const fresh = listing.sessions[0];
          this.sessions = this.sessions.map((s) => (s.name === fresh.name ? fresh : s));
        }
        clear("recordings");
        this.render();
        this.refreshLatest(false);
      } catch (err) {
        report("recordings", `Recordings: ${err.message}`);
      }
    }

    render() {
      const container = $("sessions");
      const sum = (field) => this.sessions.reduce((total, s) => total + s.totals[field], 0);
      const count = this.sessions.length;
      $("rec-totals").textContent = count
        ? `${plural(count, "session")} · ${plural(sum("chunks"), "chunk")} · ${duration(sum("duration_s"))} · ${plural(sum("snapshots"), "picture")} · ${bytes(sum("bytes"))}`
        : "";
      renderRecordedTime();
      if (!this.sessions.length) {
        container.replaceChildren(el("p", { class: "muted", text: "Nothing recorded yet." }));
        this.rendered.clear();
        return;
      }
      const current = this.seen.session;
      const nodes = this.sessions.map((session, i) => this.sessionNode(session, i === 0, session.name === current));
      const names = new Set(this.sessions.map((s) => s.name));
      for (const name of [...this.rendered.keys()]) if (!names.has(name)) this.rendered.delete(name);
      container.replaceChildren(...nodes);
      this.markPlaying();
    }

    sessionNode(session, newest, current) {
      const last = (list) => (list.length ? list[list.length - 1] : null);
      const key = JSON.stringify([session.totals, last(session.chunks), last(session.snapshots), current, this.expanded.has(session.name)]);
      const kept = this.rendered.get(session.name);
      if (kept && kept.key === key) return kept.node;
      const started = new Date(Date.parse(session.started));
      const t = session.totals;
      const summary = el(
        "summary",
        {},
        el("span", { class: "name", text: `${day(started)} ${clock(started)}` }),
        current ? el("span", { class: "now", text: "recording" }) : null,
        el("span", { class: "muted", text: `${plural(t.chunks, "chunk")} · ${duration(t.duration_s)} · ${plural(t.snapshots, "picture")} · ${bytes(t.bytes)}` }),
      );
      const details = el("details", { class: "session", "data-session": session.name }, summary, this.sessionBody(session));
      details.open = kept ? kept.node.open : newest;
      this.rendered.set(session.name, { key, node: details });
      return details;
    }

    sessionBody(session) {
      const body = el("div", { class: "session-body" });
      const images = session.snapshots.filter((p) => p.kind === "image");
      const photos = session.snapshots.filter((p) => p.kind !== "image");
      if (session.chunks.length) {
        const thumbs = thumbnailsFor(session.chunks, images);
        const order = session.chunks.map((chunk, i) => [chunk, thumbs[i]]).reverse(); // newest first
        const all = this.expanded.has(session.name);
        const shown = all ? order : order.slice(0, CHUNKS_SHOWN);
        body.append(el("ol", { class: "chunks" }, shown.map(([chunk, thumb]) => this.chunkItem(session, chunk, thumb))));
        if (shown.length < order.length) {
          const more = el("button", { type: "button", class: "small" }, `show all ${order.length} chunks`);
          more.addEventListener("click", () => {
            this.expanded.add(session.name);
            this.render();
          });
          body.append(more);
        }
      } else {
        body.append(el("p", { class: "pictures-note muted", text: "no video in this session" }));
      }
      if (photos.length) {
        body.append(el("p", { class: "pictures-note muted", text: plural(photos.length, "photo") }));
        body.append(el("div", { class: "pictures" }, photos.slice().reverse().map((p) => picture(p))));
      }
      if (images.length) {
        body.append(el("p", { class: "pictures-note muted", text: `${images.length} images, one a second` }));
        if (!session.chunks.length) body.append(el("div", { class: "pictures" }, images.slice(-CHUNKS_SHOWN).reverse().map((p) => picture(p))));
      }
      return body;
    }

    chunkItem(session, chunk, thumb) {
      const start = new Date(Date.parse(chunk.start));
      const play = el(
        "button",
        { type: "button", class: "play", title: `play ${chunk.name}` },
        el("span", { class: "when", text: clock(start) }),
        el("span", { class: "meta", text: `${duration(chunk.duration_s)} · ${bytes(chunk.size)}` }),
        chunk.open ? el("span", { class: "open-tag", text: "recording" }) : null,
      );
      play.addEventListener("click", () => this.play(session.name, chunk.name));
      const image = thumb
        ? el("img", { class: "thumb", src: thumb.url, alt: "", loading: "lazy", decoding: "async" })
        : el("span", { class: "thumb empty" });
      return el(
        "li",
        { class: "chunk", "data-url": chunk.url, "data-chunk": chunk.name, "data-open": String(chunk.open) },
        image,
        play,
        el("a", { href: chunk.url, download: chunk.name, title: `download ${chunk.name}` }, "download"),
      );
    }

    play(sessionName, chunkName) {
      const session = this.find(sessionName);
      const chunk = session && session.chunks.find((c) => c.name === chunkName);
      if (!chunk) return;
      const player = $("player");
      this.playing = { session: sessionName, chunk: chunkName, url: chunk.url };
      $("playback").hidden = false;
      player.src = chunk.url;
      const start = new Date(Date.parse(chunk.start));
      $("player-caption").replaceChildren(
        `${day(start)} ${clock(start)} · ${chunk.name} · ${duration(chunk.duration_s)} · `,
        el("a", { href: chunk.url, download: chunk.name }, "download"),
      );
      clear("player");
      player.play().catch((err) => {
        if (err.name !== "AbortError") report("player", `Playing ${chunk.name}: ${err.message}`); // AbortError: another chunk was chosen
      });
      this.markPlaying();
      $("playback").scrollIntoView({ block: "nearest" });
    }

    // The chunk after the one that ended, in time order, within its session.
    playNext() {
      if (!this.playing) return;
      const session = this.find(this.playing.session);
      if (!session) return;
      const i = session.chunks.findIndex((c) => c.name === this.playing.chunk);
      if (i >= 0 && i + 1 < session.chunks.length) this.play(session.name, session.chunks[i + 1].name);
    }

    markPlaying() {
      for (const item of document.querySelectorAll(".chunk[aria-current]")) item.removeAttribute("aria-current");
      if (!this.playing) return;
      for (const item of document.querySelectorAll(".chunk")) {
        if (item.dataset.url === this.playing.url) item.setAttribute("aria-current", "true");
      }
    }

    // The latest image: /recordings/latest/image redirects to it; asked (HEAD) only once an
    // image exists, at most every LATEST_EVERY_MS, and downloaded only when it is a new one.
    async refreshLatest(force) {
      const anyImage = this.sessions.some((s) => s.snapshots.some((p) => p.kind === "image"));
      if (!anyImage && !(this.seen.snapshots > 0)) return;
      const now = performance.now();
      if (!force && now - this.latestAt < LATEST_EVERY_MS) return;
      this.latestAt = now;
      try {
        const response = await request("recordings/latest/image", { method: "HEAD" });
        const url = new URL(response.url).pathname;
        clear("latest");
        if (url === this.latestUrl) return;
        this.latestUrl = url;
        const image = $("latest-image");
        image.src = url;
        $("latest-open").href = url;
        $("latest-open").hidden = false;
        $("latest-none").hidden = true;
        const parts = url.split("/").filter(Boolean);
        $("latest-time").textContent = `${parts[parts.length - 1]} · ${clock(new Date())}`;
      } catch (err) {
        report("latest", `Latest image: ${err.message}`);
      }
    }
  }

  // The image taken nearest each chunk's start (both lists in time order): its thumbnail.
  function thumbnailsFor(chunks, images) {
    const times = images.map((p) => Date.parse(p.time));
    let j = 0;
    return chunks.map((chunk) => {
      const start = Date.parse(chunk.start);
      while (j + 1 < times.length && Math.abs(times[j + 1] - start) <= Math.abs(times[j] - start)) j += 1;
      return times.length && Math.abs(times[j] - start) <= Math.max(2000, chunk.duration_s * 1000) ? images[j] : null;
    });
  }

  function picture(p) {
    const when = new Date(Date.parse(p.time));
    return el(
      "a",
      { href: p.url, target: "_blank", rel: "noopener", title: `${p.name} · ${clock(when)} · ${bytes(p.size)}` },
      el("img", { src: p.url, alt: `${p.kind} ${clock(when)}`, loading: "lazy", decoding: "async" }),
    );
  }

  // --- start

  const recordings = new Recordings();
  let liveView = null;

  function start() {
    $("record").addEventListener("click", toggleRecording);
    $("rec-video").addEventListener("click", () => toggleKind("video"));
    $("rec-images").addEventListener("click", () => toggleKind("images"));
    $("photo").addEventListener("click", takePhoto);
    const player = $("player");
    player.addEventListener("ended", () => recordings.playNext());
    player.addEventListener("error", () => {
      if (!player.error || !recordings.playing) return;
      report("player", `Cannot play ${recordings.playing.chunk}: ${player.error.message || `media error ${player.error.code}`}`);
    });
    $("latest-image").addEventListener("error", () => {
      if ($("latest-image").getAttribute("src")) report("latest", "Latest image: it could not be loaded");
    });
    if (typeof RTCPeerConnection === "function") {
      liveView = new LiveView($("live"), $("live-state"));
      liveView.start();
    } else {
      $("live-state").dataset.state = "unavailable";
      $("live-state").textContent = "this browser has no WebRTC: no live view";
    }
    pollStatus();
    recordings.refresh("full");
  }

  start();
})();
