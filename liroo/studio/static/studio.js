// The studio page: start a generation, follow its progress, keep and reopen what was made.
// Plain JavaScript, no build step, nothing from elsewhere (results are laid out by
// studio-results.js). Every text from the server or the user goes into the page as text.
"use strict";

(function () {
  const POLL_MS = 600;          // progress polls while a request runs (the app polls every 2 s)
  const HEALTH_MS = 5000;       // the memory gauge
  const POLL_FAILURES = 5;      // consecutive failed polls before giving up on a request
  const SHARE_MAX = 3500;       // longer links are refused by servers (414)
  const KEY_STORE = "liroo-api-key";          // sessionStorage: this tab only
  const HISTORY_STORE = "liroo-history";      // localStorage: ids, kinds and titles, no content
  const HISTORY_MAX = 20;
  const LABELS = {comic: "Comic", story: "Story", lecture: "Lecture", study: "Study page", speech: "Speech"};

  const R = window.LirooResults;
  const el = R.el;
  const $ = (id) => document.getElementById(id);
  const form = $("studio-form");
  const run = $("run");
  const result = $("result");
  const keyField = $("api-key");
  const textBox = $("text");
  const JOB_TTL_S = Number(form.dataset.jobTtl) || 3600;
  const DEADLINE_S = Number(form.dataset.deadline) || 600;

  let current = null;     // {mode, route, body, id, text}
  let generation = 0;     // bumps on every start or open: late answers of an older run are ignored
  let countdownTimer = null;

  function newRequestId() {
    // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return "studio-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function values() {
    const data = new FormData(form);
    return {
      mode: data.get("mode") || "comic",
      text: String(data.get("text") || "").trim(),
      level: data.get("level"), style: data.get("style"), genre: data.get("genre"), voice: data.get("voice"),
    };
  }

  // Each route's body, as the app sends it.
  function bodyFor(v) {
    switch (v.mode) {
      case "comic": return {text: v.text, level: v.level, image_style: v.style};
      case "story": return Object.assign({text: v.text, level: v.level, image_style: v.style}, v.genre ? {genre: v.genre} : {});
      case "lecture": return {text: v.text, level: v.level, image_style: v.style};
      case "study": return {input_text: v.text, level: v.level, image_style: v.style, summarization_tier: "Detailed Explanation",
                            profile: {studentLevel: v.level, topicsOfInterest: []}};
      case "speech": return {text: v.text, voice: v.voice};
    }
    throw new Error("unknown mode " + v.mode);
  }

  function routeFor(mode) {
    return form.querySelector(`input[name="mode"][value="${mode}"]`).dataset.route;
  }

  function headers(id, json) {
    const h = {"X-Request-ID": id};
    if (json) Object.assign(h, {"Content-Type": "application/json", "Prefer": "respond-async"});
    if (keyField && keyField.value.trim()) h["X-API-Key"] = keyField.value.trim();
    return h;
  }

  // --- the form: fields per mode, the character counter, the link ---------------------------
  const segmenter = window.Intl && Intl.Segmenter ? new Intl.Segmenter(undefined, {granularity: "grapheme"}) : null;

  function characters(text) {
    // Counted as people (and the app) count them: grapheme clusters, not UTF-16 units.
    if (!segmenter) return Array.from(text).length;
    let count = 0;
    for (const _ of segmenter.segment(text)) count += 1;   // eslint-disable-line no-unused-vars
    return count;
  }

  function limit() {
    return Number(values().mode === "speech" ? textBox.dataset.maxSpeech : textBox.dataset.max);
  }

  function updateCounter() {
    const count = characters(textBox.value.trim());
    const max = limit();
    const counter = $("counter");
    const over = count - max;
    counter.textContent = over > 0
      ? `${count.toLocaleString("en")} / ${max.toLocaleString("en")} characters: ${over.toLocaleString("en")} too many, shorten the text.`
      : `${count.toLocaleString("en")} / ${max.toLocaleString("en")} characters`;
    counter.classList.toggle("over", over > 0);
    return over <= 0;
  }

  function showFieldsForMode() {
    const mode = values().mode;
    for (const field of form.querySelectorAll("[data-modes]")) {
      field.hidden = !field.dataset.modes.split(" ").includes(mode);
    }
    updateCounter();
  }

  function updateShareLink() {
    const link = $("share-link");
    const note = $("share-note");
    if (current && current.id && run.dataset.state === "done") {
      link.href = "/?" + new URLSearchParams({result: current.id, mode: current.mode}).toString();
      link.textContent = "Link to this result";
      link.title = "Opens this result (kept for a while), without making it again";
      link.hidden = false;
      note.hidden = true;
      return;
    }
    const v = values();
    const query = new URLSearchParams({mode: v.mode, level: v.level, style: v.style});
    if (v.mode === "speech") query.set("voice", v.voice);
    if (v.mode === "story" && v.genre) query.set("genre", v.genre);
    query.set("text", v.text);
    const href = "/?" + query.toString();
    link.href = href;
    link.textContent = "Link to this text";
    link.title = "A link that fills in this form (it does not start it)";
    link.hidden = !v.text || href.length > SHARE_MAX;
    note.hidden = !v.text || href.length <= SHARE_MAX;
  }

  // --- history: the browser keeps ids, the server keeps results for LIROO_JOB_TTL_S ------------
  function loadHistory() {
    try {
      const list = JSON.parse(localStorage.getItem(HISTORY_STORE) || "[]");
      return Array.isArray(list) ? list.filter((e) => e && typeof e.id === "string") : [];
    } catch (err) {
      return [];
    }
  }

  function saveHistory(list) {
    try { localStorage.setItem(HISTORY_STORE, JSON.stringify(list.slice(0, HISTORY_MAX))); } catch (err) { /* full or off */ }
    renderHistory();
  }

  function remember(id, changes) {
    const list = loadHistory();
    const index = list.findIndex((e) => e.id === id);
    const entry = Object.assign(index >= 0 ? list[index] : {id, at: Date.now()}, changes);
    if (index >= 0) list.splice(index, 1);
    list.unshift(entry);
    saveHistory(list);
  }

  function firstWords(text) {
    const words = String(text || "").trim().split(/\s+/).slice(0, 8).join(" ");
    return words.length > 60 ? words.slice(0, 57) + "..." : words + (text.trim().split(/\s+/).length > 8 ? "..." : "");
  }

  function renderHistory() {
    const list = loadHistory();
    const items = list.map((entry) => {
      const when = new Date(entry.at).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
      const expired = entry.state === "expired" || Date.now() - entry.at > (JOB_TTL_S + DEADLINE_S) * 1000;
      const button = el("button", {type: "button", className: "history-entry", "data-id": entry.id},
        el("span", {className: "history-title", text: entry.title || "Untitled"}),
        el("span", {className: "history-meta",
                    text: `${LABELS[entry.mode] || ""} · ${when}` + (entry.state === "running" ? " · running" : "") +
                          (entry.state === "cancelled" ? " · cancelled" : "") + (expired ? " · expired" : "")}));
      button.addEventListener("click", () => openResult(entry.id, entry.mode));
      return el("li", {}, button);
    });
    $("history").hidden = !items.length;
    $("history-list").replaceChildren(...items);
  }

  // --- states --------------------------------------------------------------------------------
  function setState(state) {
    run.dataset.state = state;
    $("generate").disabled = state === "running";
    $("cancel").hidden = state !== "running";
    $("placeholder").hidden = true;
    updateShareLink();
  }

  function showProgress(view) {
    $("progress").hidden = false;
    const percent = Math.max(0, Math.min(100, Number(view.progress_percentage) || 0));
    $("progress-bar").value = percent;
    $("percent").textContent = Math.round(percent) + "%";
    $("step").textContent = view.step || "Working";
    $("details").textContent = view.details || "";
  }

  function clearError() {
    clearInterval(countdownTimer);
    $("error").hidden = true;
    $("countdown").hidden = true;
  }

  function showMessage(state, sentence, retryLabel) {
    setState(state);
    $("progress").hidden = true;   // no "Sending 0%" or "Done 100%" beside a message
    $("error").dataset.kind = state;
    $("error-text").textContent = sentence;
    $("error").hidden = false;
    const retry = $("retry");
    retry.hidden = !retryLabel;
    retry.disabled = false;
    retry.textContent = retryLabel || "";
    clearInterval(countdownTimer);
    $("countdown").hidden = true;
  }

  function showError(status, body, retryAfter) {
    if (body && body.code === "cancelled") return showCancelled();
    const sentence = body && typeof body.error === "string" ? body.error
      : status ? `The server answered ${status} without an explanation.` : "The server could not be reached.";
    showMessage("failed", sentence + (body && body.code ? ` (${body.code})` : ""), current && current.body ? "Try again" : null);
    if (current && current.id) remember(current.id, {state: "failed"});
    const retry = $("retry");
    let left = Number(retryAfter) || 0;
    const countdown = $("countdown");
    if (left > 0) {
      retry.disabled = true;
      countdown.hidden = false;
      const tick = () => {
        if (left <= 0) {
          clearInterval(countdownTimer);
          countdown.textContent = "You can try again now.";
          retry.disabled = false;
          retry.textContent = "Try again";
          return;
        }
        countdown.textContent = `The server asks to wait: retry in ${left} s.`;
        retry.textContent = `Try again in ${left} s`;
        left -= 1;
      };
      tick();
      countdownTimer = setInterval(tick, 1000);
    }
    if (status === 401 && keyField) keyField.focus();
    else if (!retry.hidden && !retry.disabled) retry.focus({preventScroll: true});
  }

  function showCancelled() {
    showMessage("cancelled", "The generation was cancelled: nothing more will be made for it.", current && current.body ? "Make it again" : null);
    if (current && current.id) remember(current.id, {state: "cancelled"});
    $("generate").focus({preventScroll: true});
  }

  function showExpired(id) {
    const minutes = Math.round(JOB_TTL_S / 60);
    showMessage("expired", `This result has expired: the server keeps results for ${minutes} minutes. Make it again from its text.`, null);
    remember(id, {state: "expired"});
  }

  // On a phone the run sits below the form: scroll it up so that what changed is seen.
  function bringIntoView(node, whole) {
    const box = node.getBoundingClientRect();
    const below = whole ? box.bottom > window.innerHeight : box.top > window.innerHeight / 2;
    if (box.top < 0 || below) node.scrollIntoView({block: "start"});
  }

  // --- a generation ------------------------------------------------------------------------------
  async function start(again) {
    const v = values();
    if (!again || !current || !current.body) {
      if (!v.text) {
        showMessage("failed", "Write or paste a text first.", null);
        textBox.focus();
        return;
      }
      if (!updateCounter()) {
        showMessage("failed", `The text is too long for this: shorten it to ${limit().toLocaleString("en")} characters.`, null);
        textBox.focus();
        return;
      }
      current = {mode: v.mode, route: routeFor(v.mode), body: bodyFor(v), id: newRequestId(), text: v.text};
      remember(current.id, {mode: v.mode, title: firstWords(v.text), state: "running", at: Date.now()});
    } else if (!v.text) {
      textBox.value = current.text;   // a retry keeps its text in the box
      updateCounter();
    }
    result.replaceChildren();
    const mine = ++generation;
    clearError();
    setState("running");
    $("request-id").textContent = "Request " + current.id;
    showProgress({progress_percentage: 0, step: "Sending", details: ""});
    bringIntoView($("progress"), true);
    $("cancel").focus({preventScroll: true});
    let response;
    try {
      response = await fetch(current.route, {method: "POST", headers: headers(current.id, true),
                                             body: JSON.stringify(current.body)});
    } catch (err) {
      if (mine === generation) showError(0, null, 0);
      return;
    }
    if (mine !== generation) return;
    const body = await response.json().catch(() => null);
    if (response.status === 202) return follow(mine);
    if (response.ok) return finish(body);     // a replay of a finished request answers at once
    showError(response.status, body, response.headers.get("Retry-After") || (body && body.retry_after_s));
  }

  async function follow(mine) {
    let failures = 0;
    while (mine === generation) {
      let view = null, status = 0;
      try {
        const response = await fetch("/progress/" + encodeURIComponent(current.id), {headers: headers(current.id, false)});
        status = response.status;
        view = await response.json().catch(() => null);
      } catch (err) { /* counted below */ }
      if (mine !== generation) return;
      if (status === 200 && view) {
        failures = 0;
        if (view.status !== "running") return collect(mine);
        showProgress(view);
        if (view.partial && current.mode) R.renderPartial(result, current.mode, view.partial);
      } else if (status === 404) {
        return showExpired(current.id);
      } else if (status === 401 || status === 403 || ++failures >= POLL_FAILURES) {
        return showError(status, view, 0);
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  async function collect(mine) {
    let response, view;
    try {
      response = await fetch("/jobs/" + encodeURIComponent(current.id), {headers: headers(current.id, false)});
      view = await response.json();
    } catch (err) {
      if (mine === generation) showError(0, null, 0);
      return;
    }
    if (mine !== generation) return;
    if (response.status === 404) return showExpired(current.id);
    if (!response.ok) return showError(response.status, view, 0);
    if (view.status === "running") return follow(mine);
    if (!view.result) return showError(response.status, view, 0);
    if (view.result_status === 200) return finish(view.result);
    showError(view.result_status, view.result, view.result.retry_after_s);
  }

  function finish(body) {
    clearError();
    $("progress").hidden = true;
    const mode = R.render(result, body);
    current.mode = mode;
    remember(current.id, {mode, title: R.titleOf(body) || undefined, state: "done"});
    setState("done");
    const title = result.querySelector(".result-title");
    if (title) title.focus({preventScroll: true});
    bringIntoView(result);
  }

  async function cancel() {
    if (!current || run.dataset.state !== "running") return;
    const button = $("cancel");
    button.disabled = true;
    $("step").textContent = "Cancelling";
    try {
      const response = await fetch("/jobs/" + encodeURIComponent(current.id),
                                   {method: "DELETE", headers: headers(current.id, false)});
      if (!response.ok && response.status !== 409) {
        const body = await response.json().catch(() => null);
        $("details").textContent = body && body.error ? "Could not cancel: " + body.error : "Could not cancel.";
      }
    } catch (err) {
      $("details").textContent = "Could not cancel: the server could not be reached.";
    } finally {
      button.disabled = false;
    }
    // the progress polls see it end
  }

  // Open a result by id (history, a shared link, a reload mid-generation): follow it if it still
  // runs, show it if it is finished, say so if it expired.
  function openResult(id, mode) {
    const entry = loadHistory().find((e) => e.id === id) || {};
    current = {id, mode: mode || entry.mode || null, body: null};
    const mine = ++generation;
    clearError();
    result.replaceChildren();
    setState("running");
    $("request-id").textContent = "Request " + id;
    showProgress({progress_percentage: 0, step: "Opening", details: ""});
    collect(mine);
  }

  // --- the memory gauge ----------------------------------------------------------------------
  async function refreshHealth() {
    const gauge = $("memory");
    const text = $("memory-text");
    try {
      const response = await fetch("/health", {cache: "no-store"});
      const health = await response.json();
      const used = Math.round(health.memory_usage_mb);
      const state = health.memory_critical ? "critical" : health.memory_warning ? "warning" : "normal";
      gauge.dataset.state = state;
      const meter = $("memory-meter");
      if (meter) {
        meter.value = Math.min(used, Number(gauge.dataset.limit));
        text.textContent = `${used} MB`;
        gauge.title = `Working set ${used} MB. Warning at ${gauge.dataset.warning} MB, cleanup at ` +
                      `${gauge.dataset.cleanup} MB, requests wait or are refused at ${gauge.dataset.limit} MB.`;
      } else {
        text.textContent = `${used} MB, ${state}`;
      }
    } catch (err) {
      gauge.dataset.state = "unknown";
      text.textContent = "unreachable";
    }
  }

  // --- wiring -------------------------------------------------------------------------------
  form.addEventListener("submit", (event) => { event.preventDefault(); start(false); });
  form.addEventListener("input", () => { showFieldsForMode(); updateShareLink(); });
  form.addEventListener("change", () => { showFieldsForMode(); updateShareLink(); });
  $("retry").addEventListener("click", () => start(true));   // the same id: a replay or a fresh try, never paid twice
  $("cancel").addEventListener("click", cancel);
  if (keyField) {
    keyField.value = sessionStorage.getItem(KEY_STORE) || "";
    keyField.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, keyField.value.trim()));
  }
  showFieldsForMode();
  updateShareLink();
  renderHistory();
  refreshHealth();
  setInterval(refreshHealth, HEALTH_MS);

  const opened = form.dataset.result;
  const newest = loadHistory()[0];
  if (opened) {
    openResult(opened, form.dataset.mode);
  } else if (form.dataset.run === "1" && values().text) {
    if (keyField) {
      // A link never spends a key without a click.
      $("run-note").hidden = false;
      $("generate").focus();
    } else {
      start(false);
    }
  } else if (newest && newest.state === "running" && Date.now() - newest.at < DEADLINE_S * 1000) {
    openResult(newest.id, newest.mode);   // a reload mid-generation picks it up again
  }
})();
