// The studio page: start a generation, follow its progress, lay out what is finished.
// Plain JavaScript, no build step, nothing from elsewhere. Every text from the server
// or the user goes into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const POLL_MS = 600;          // progress polls while a request runs (the app polls every 2 s)
  const HEALTH_MS = 5000;       // the memory gauge
  const POLL_FAILURES = 5;      // consecutive failed polls before giving up on a request
  const SHARE_MAX = 3500;       // longer links are refused by servers (414)
  const KEY_STORE = "liroo-api-key";

  const $ = (id) => document.getElementById(id);
  const form = $("studio-form");
  const run = $("run");
  const result = $("result");
  const keyField = $("api-key");

  let current = null;     // {mode, route, body, id}
  let generation = 0;     // bumps on every start: late answers of an older run are ignored
  let countdownTimer = null;

  // --- small helpers -------------------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.startsWith("data-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function newRequestId() {
    // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return "studio-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function paragraphs(text) {
    return String(text || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean).map((p) => el("p", {text: p}));
  }

  function picture(url, alt, className) {
    if (!url) return el("div", {className: "no-picture", text: "No picture: it could not be drawn."});
    return el("img", {src: url, alt: alt || "", className: className || "", loading: "eager", decoding: "async"});
  }

  function player(url, label) {
    return el("div", {className: "player"},
      el("span", {className: "player-label", text: label}),
      el("audio", {src: url, controls: true, preload: "metadata"}));
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

  // --- the form --------------------------------------------------------------------------
  function showFieldsForMode() {
    const mode = values().mode;
    for (const field of form.querySelectorAll("[data-modes]")) {
      field.hidden = !field.dataset.modes.split(" ").includes(mode);
    }
    // /generate_tts takes a whole story (LIROO_MAX_LONG_TEXT_CHARS); the rest LIROO_MAX_INPUT_CHARS.
    const text = $("text");
    text.maxLength = Number(mode === "speech" ? text.dataset.maxSpeech : text.dataset.max);
  }

  function updateShareLink() {
    const v = values();
    const query = new URLSearchParams({mode: v.mode, level: v.level, style: v.style});
    if (v.mode === "speech") query.set("voice", v.voice);
    if (v.mode === "story" && v.genre) query.set("genre", v.genre);
    query.set("text", v.text);
    query.set("run", "1");
    const link = $("share-link");
    const href = "/?" + query.toString();
    link.hidden = !v.text || href.length > SHARE_MAX;
    link.href = href;
  }

  // --- states ------------------------------------------------------------------------------
  function setState(state) {
    run.dataset.state = state;
    $("generate").disabled = state === "running";
    $("placeholder").hidden = true;
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

  function showError(status, body, retryAfter) {
    setState("failed");
    const sentence = body && typeof body.error === "string" ? body.error
      : status ? `The server answered ${status} without an explanation.` : "The server could not be reached.";
    $("error-text").textContent = sentence + (body && body.code ? ` (${body.code})` : "");
    $("error").hidden = false;
    const retry = $("retry");
    clearInterval(countdownTimer);
    if (status === 401 && keyField) keyField.focus();
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
    } else {
      countdown.hidden = true;
      retry.disabled = false;
      retry.textContent = "Try again";
    }
  }

  // --- a generation --------------------------------------------------------------------------
  async function start(again) {
    if (!again) {
      const v = values();
      if (!v.text) {
        showError(0, {error: "Write or paste a text first."});
        $("text").focus();
        return;
      }
      current = {mode: v.mode, route: routeFor(v.mode), body: bodyFor(v), id: newRequestId()};
      result.replaceChildren();
    }
    if (!current) return;
    const mine = ++generation;
    clearError();
    setState("running");
    $("request-id").textContent = "Request " + current.id;
    showProgress({progress_percentage: 0, step: "Sending", details: ""});
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
        showProgress(view);
        if (view.partial) renderPartial(current.mode, view.partial);
        if (view.status !== "running") return collect(mine);
      } else if (status === 401 || status === 403 || status === 404 || ++failures >= POLL_FAILURES) {
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
    if (!response.ok || !view.result) return showError(response.status, view, 0);
    if (view.result_status === 200) return finish(view.result);
    showError(view.result_status, view.result, view.result.retry_after_s);
  }

  function finish(body) {
    showProgress({progress_percentage: 100, step: "Done", details: ""});
    renderResult(current.mode, body);
    setState("done");
  }

  // --- laying out results ----------------------------------------------------------------------
  function heading(title, subtitle) {
    return el("header", {className: "result-head"}, el("h2", {text: title}), subtitle ? el("p", {text: subtitle}) : null);
  }

  function dialogueList(dialogue) {
    const entries = Object.entries(dialogue || {});
    if (!entries.length) return null;
    return el("ul", {className: "dialogue"},
      entries.map(([speaker, line]) => el("li", {}, el("b", {text: speaker}), el("span", {text: line}))));
  }

  function panelFigure(panel) {
    return el("figure", {className: "panel", "data-panel-id": String(panel.panel_id)},
      el("span", {className: "panel-number", text: String(panel.panel_id)}),
      picture(panel.image_url, panel.scene),
      el("figcaption", {}, dialogueList(panel.dialogue), panel.scene ? el("p", {className: "scene", text: panel.scene}) : null));
  }

  function insertOrdered(container, node, order, selector) {
    const later = Array.from(container.querySelectorAll(selector)).find((n) => Number(n.dataset.order) > order);
    node.dataset.order = String(order);
    container.insertBefore(node, later || null);
  }

  function partialSection(key, title) {
    let section = result.querySelector(`[data-partial="${key}"]`);
    if (!section) {
      if (!result.querySelector("[data-partial]")) result.replaceChildren();
      section = el("section", {className: "partial", "data-partial": key}, el("h3", {text: title}),
                   el("div", {className: key === "panels" ? "comic-grid" : "partial-items"}));
      result.append(section);
    }
    return section.lastChild;
  }

  function renderPartial(mode, partial) {
    if (mode === "comic" && partial.panels) {
      const grid = partialSection("panels", "Panels drawn so far");
      for (const panel of partial.panels) {
        if (grid.querySelector(`[data-panel-id="${panel.panel_id}"]`)) continue;
        insertOrdered(grid, panelFigure(panel), panel.panel_id, ".panel");
      }
    }
    if (mode === "story") {
      const items = partialSection("pictures", "Pictures drawn so far");
      for (const cover of partial.cover || []) {
        if (items.querySelector('[data-key="cover"]')) continue;
        insertOrdered(items, el("figure", {"data-key": "cover"}, picture(cover.imageUrl, "Cover"),
                                el("figcaption", {text: "Cover: " + cover.title})), 0, "figure");
      }
      for (const chapter of partial.chapters || []) {
        if (items.querySelector(`[data-key="chapter-${chapter.order}"]`)) continue;
        insertOrdered(items, el("figure", {"data-key": "chapter-" + chapter.order}, picture(chapter.imageUrl, chapter.title),
                                el("figcaption", {text: `Chapter ${chapter.order}: ${chapter.title}`})), chapter.order, "figure");
      }
    }
    if (mode === "lecture") {
      const items = partialSection("lecture", "Ready so far");
      for (const pic of partial.pictures || []) {
        const key = "picture-" + pic.section;
        if (items.querySelector(`[data-key="${key}"]`)) continue;
        insertOrdered(items, el("figure", {"data-key": key}, picture(pic.image_url, pic.title),
                                el("figcaption", {text: pic.title})), pic.section + 1, "[data-key]");
      }
      for (const clip of partial.audio_files || []) {
        const key = `audio-${clip.type}-${clip.section === undefined ? "" : clip.section}`;
        if (items.querySelector(`[data-key="${key}"]`)) continue;
        const node = player(clip.url, clip.text.length > 60 ? clip.text.slice(0, 57) + "..." : clip.text);
        node.dataset.key = key;
        insertOrdered(items, node, clip.section === undefined ? 0 : clip.section + 1.5, "[data-key]");
      }
    }
  }

  function renderComic(body) {
    const comic = body.comic;
    const grid = el("div", {className: "comic-grid"}, comic.panel_layout.map(panelFigure));
    const cast = Object.entries(comic.character_style_guide || {});
    result.replaceChildren(...[
      heading(comic.comic_title, comic.theme), grid,
      cast.length ? el("details", {className: "cast"}, el("summary", {text: "Characters"}),
                       el("dl", {}, cast.map(([name, look]) => [el("dt", {text: name}), el("dd", {text: look})]))) : null].filter(Boolean));
  }

  function renderStory(body) {
    const story = body.story;
    const chapters = (story.chapters || []).slice().sort((a, b) => a.order - b.order).map((chapter) =>
      el("section", {className: "chapter"},
        el("h3", {text: `Chapter ${chapter.order}: ${chapter.title}`}),
        chapter.imageUrl ? picture(chapter.imageUrl, chapter.title, "chapter-picture") : null,
        paragraphs(chapter.content)));
    result.replaceChildren(...[
      heading(story.title, [story.genre, story.imageStyle, story.level].filter(Boolean).join(" · ")),
      story.coverImageUrl ? picture(story.coverImageUrl, "Cover of " + story.title, "cover") : null,
      el("p", {className: "overview", text: story.content}), ...chapters].filter(Boolean));
  }

  function renderLecture(body) {
    const lecture = body.lecture;
    const audio = body.audio_files || [];
    const clip = (type, text) => audio.find((a) => a.type === type && a.text === text);
    const title = audio.find((a) => a.type === "title");
    const sections = lecture.sections.map((section, index) => {
      const heard = clip("section_title", section.title);
      const script = clip("section_script", section.script);
      return el("section", {className: "lecture-section"},
        el("h3", {text: `${index + 1}. ${section.title}`}),
        section.image_url ? picture(section.image_url, section.title, "section-picture") : null,
        el("div", {className: "players"},
          heard ? player(heard.url, "Section title") : null,
          script ? player(script.url, "Narration") : el("p", {className: "note", text: "No narration for this section."})),
        paragraphs(section.script));
    });
    result.replaceChildren(...[heading(lecture.title), title ? player(title.url, "Title") : null, ...sections].filter(Boolean));
  }

  function question(block) {
    const name = "q-" + block.id;
    const feedback = el("p", {className: "feedback", hidden: true});
    const options = block.options.map((option) =>
      el("label", {className: "option"}, el("input", {type: "radio", name: name, value: option.id}), el("span", {text: option.text})));
    const check = el("button", {type: "submit", text: "Check"});
    const quiz = el("form", {className: "question"}, el("p", {className: "question-text", text: block.content}), options, check, feedback);
    quiz.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = quiz.querySelector(`input[name="${name}"]:checked`);
      if (!chosen) {
        feedback.hidden = false;
        feedback.className = "feedback";
        feedback.textContent = "Pick an answer first.";
        return;
      }
      const right = chosen.value === block.correctAnswerID;
      const answer = block.options.find((o) => o.id === block.correctAnswerID);
      feedback.hidden = false;
      feedback.className = "feedback " + (right ? "right" : "wrong");
      feedback.replaceChildren(
        el("strong", {text: right ? "Right! " : `Not quite: the answer is "${answer ? answer.text : "?"}". `}),
        el("span", {className: "explanation", text: block.explanation || ""}));
      for (const input of quiz.querySelectorAll("input")) input.disabled = true;
      check.disabled = true;
    });
    return quiz;
  }

  function renderStudy(body) {
    const blocks = body.blocks || [];
    const nodes = blocks.map((block) => {
      switch (block.type) {
        case "heading": return el("h3", {text: block.content});
        case "paragraph": return el("p", {text: block.content});
        case "image": return el("figure", {}, picture(block.url, block.alt, "study-picture"), block.content ? el("figcaption", {text: block.content}) : null);
        case "quizHeading": return el("h3", {className: "quiz-heading", text: block.content});
        case "multipleChoiceQuestion": return question(block);
        default: return el("p", {className: "note", text: block.content});
      }
    });
    result.replaceChildren(el("div", {className: "study"}, nodes));
  }

  function renderSpeech(body) {
    result.replaceChildren(heading("Speech", `${body.voice} voice · ${Number(body.duration_s || 0).toFixed(1)} s · ${body.text_length} characters`),
                           player(body.audio_url, "Listen"));
  }

  function renderResult(mode, body) {
    ({comic: renderComic, story: renderStory, lecture: renderLecture, study: renderStudy, speech: renderSpeech})[mode](body);
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
  if (keyField) {
    keyField.value = sessionStorage.getItem(KEY_STORE) || "";
    keyField.addEventListener("input", () => sessionStorage.setItem(KEY_STORE, keyField.value.trim()));
  }
  showFieldsForMode();
  updateShareLink();
  refreshHealth();
  setInterval(refreshHealth, HEALTH_MS);
  if (form.dataset.run === "1" && values().text) start(false);
})();
