// The studio's results: how each kind of answer is laid out, while it runs (partial) and
// once finished. Loaded before studio.js, which drives the page; both plain JavaScript.
// Every text from the server goes into the page as text (textContent), never as HTML.
"use strict";

window.LirooResults = (function () {
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else if (name.startsWith("data-") || name.startsWith("aria-") || name === "download") node.setAttribute(name, value);
      else node[name] = value;
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function paragraphs(text) {
    return String(text || "").split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean).map((p) => el("p", {text: p}));
  }

  function fileName(url, fallback) {
    try {
      const last = new URL(url, location.href).pathname.split("/").pop();
      return last || fallback;
    } catch (err) {
      return fallback;
    }
  }

  // A download link (same-origin media download; GCS media opens in a new tab to be saved).
  function download(url, label) {
    return el("a", {className: "download", href: url, download: fileName(url, "liroo-media"), text: label,
                    target: "_blank", rel: "noopener"});
  }

  function picture(url, alt, className) {
    if (!url) return el("div", {className: "no-picture", text: "No picture: it could not be drawn."});
    return el("img", {src: url, alt: alt || "", className: className || "", loading: "eager", decoding: "async"});
  }

  function player(url, label) {
    return el("div", {className: "player"},
      el("span", {className: "player-label", text: label}),
      el("audio", {src: url, controls: true, preload: "metadata"}),
      download(url, "Download"));
  }

  function heading(title, subtitle) {
    return el("header", {className: "result-head"},
      el("h2", {text: title, tabIndex: -1, className: "result-title"}), subtitle ? el("p", {text: subtitle}) : null);
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
      el("figcaption", {}, dialogueList(panel.dialogue), panel.scene ? el("p", {className: "scene", text: panel.scene}) : null,
         panel.image_url ? download(panel.image_url, "Download picture") : null));
  }

  function insertOrdered(container, node, order, selector) {
    const later = Array.from(container.querySelectorAll(selector)).find((n) => Number(n.dataset.order) > order);
    node.dataset.order = String(order);
    container.insertBefore(node, later || null);
  }

  function partialSection(result, key, title) {
    let section = result.querySelector(`[data-partial="${key}"]`);
    if (!section) {
      if (!result.querySelector("[data-partial]")) result.replaceChildren();
      section = el("section", {className: "partial", "data-partial": key}, el("h3", {text: title}),
                   el("div", {className: key === "panels" ? "comic-grid" : "partial-items"}));
      result.append(section);
    }
    return section.lastChild;
  }

  function renderPartial(result, mode, partial) {
    if (mode === "comic" && partial.panels) {
      const grid = partialSection(result, "panels", "Panels drawn so far");
      for (const panel of partial.panels) {
        if (grid.querySelector(`[data-panel-id="${panel.panel_id}"]`)) continue;
        insertOrdered(grid, panelFigure(panel), panel.panel_id, ".panel");
      }
    }
    if (mode === "story") {
      const items = partialSection(result, "pictures", "Pictures drawn so far");
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
      // Pictures and clips both number sections from 1; the title clip (no section) comes first,
      // then each section's picture before its clips.
      const items = partialSection(result, "lecture", "Ready so far");
      for (const pic of partial.pictures || []) {
        const key = "picture-" + pic.section;
        if (items.querySelector(`[data-key="${key}"]`)) continue;
        insertOrdered(items, el("figure", {"data-key": key}, picture(pic.image_url, pic.title),
                                el("figcaption", {text: `${pic.section}. ${pic.title}`})), pic.section, "[data-key]");
      }
      for (const clip of partial.audio_files || []) {
        const key = `audio-${clip.type}-${clip.section === undefined ? "" : clip.section}`;
        if (items.querySelector(`[data-key="${key}"]`)) continue;
        const node = player(clip.url, clip.text.length > 60 ? clip.text.slice(0, 57) + "..." : clip.text);
        node.dataset.key = key;
        const order = clip.section === undefined ? 0 : clip.section + (clip.type === "section_title" ? 0.1 : 0.2);
        insertOrdered(items, node, order, "[data-key]");
      }
    }
  }

  function renderComic(body) {
    const comic = body.comic;
    const grid = el("div", {className: "comic-grid"}, comic.panel_layout.map(panelFigure));
    const cast = Object.entries(comic.character_style_guide || {});
    return [
      heading(comic.comic_title, comic.theme), grid,
      cast.length ? el("details", {className: "cast"}, el("summary", {text: "Characters"}),
                       el("dl", {}, cast.map(([name, look]) => [el("dt", {text: name}), el("dd", {text: look})]))) : null];
  }

  function renderStory(body) {
    const story = body.story;
    const chapters = (story.chapters || []).slice().sort((a, b) => a.order - b.order).map((chapter) =>
      el("section", {className: "chapter"},
        el("h3", {text: `Chapter ${chapter.order}: ${chapter.title}`}),
        chapter.imageUrl ? picture(chapter.imageUrl, chapter.title, "chapter-picture") : null,
        chapter.imageUrl ? download(chapter.imageUrl, "Download picture") : null,
        paragraphs(chapter.content)));
    return [
      heading(story.title, [story.genre, story.imageStyle, story.level].filter(Boolean).join(" · ")),
      story.coverImageUrl ? picture(story.coverImageUrl, "Cover of " + story.title, "cover") : null,
      el("p", {className: "overview", text: story.content}), ...chapters];
  }

  // "Play all": each clip in page order, the next starting when one ends.
  function playAll(container) {
    const button = el("button", {type: "button", className: "play-all", text: "Play all"});
    let playing = null;
    const stop = () => {
      if (playing) playing.pause();
      playing = null;
      button.textContent = "Play all";
    };
    const play = (index) => {
      const clips = Array.from(container.querySelectorAll("audio"));
      if (index >= clips.length) return stop();
      playing = clips[index];
      playing.currentTime = 0;
      playing.onended = () => { if (playing === clips[index]) play(index + 1); };
      playing.play().catch(stop);
      button.textContent = "Stop";
    };
    button.addEventListener("click", () => (playing ? stop() : play(0)));
    return button;
  }

  function renderLecture(body, container) {
    const lecture = body.lecture;
    const audio = body.audio_files || [];
    const clip = (type, section) => audio.find((a) => a.type === type && a.section === section);
    const title = audio.find((a) => a.type === "title");
    const sections = lecture.sections.map((section, index) => {
      const heard = clip("section_title", index + 1);
      const script = clip("section_script", index + 1);
      return el("section", {className: "lecture-section"},
        el("h3", {text: `${index + 1}. ${section.title}`}),
        section.image_url ? picture(section.image_url, section.title, "section-picture") : null,
        el("div", {className: "players"},
          heard ? player(heard.url, "Section title") : null,
          script ? player(script.url, "Narration") : el("p", {className: "note", text: "No narration for this section."})),
        paragraphs(section.script));
    });
    return [heading(lecture.title), audio.length ? playAll(container) : null,
            title ? player(title.url, "Title") : null, ...sections];
  }

  function question(block, answered) {
    const name = "q-" + block.id;
    const feedback = el("p", {className: "feedback", hidden: true, "aria-live": "polite"});
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
      answered(right);
    });
    return quiz;
  }

  // The score once every question is answered, and a button to take the quiz again.
  function quizScore(blocks, redraw) {
    const total = blocks.filter((b) => b.type === "multipleChoiceQuestion").length;
    let done = 0, right = 0;
    const score = el("div", {className: "quiz-score", hidden: true, "aria-live": "polite"});
    const answered = (correct) => {
      done += 1;
      right += correct ? 1 : 0;
      if (done < total) return;
      const again = el("button", {type: "button", className: "quiz-again", text: "Try the quiz again"});
      again.addEventListener("click", redraw);
      score.replaceChildren(el("strong", {text: `Score: ${right} of ${total}`}), again);
      score.hidden = false;
    };
    return {score, answered, total};
  }

  function renderStudy(body, container) {
    const blocks = body.blocks || [];
    const redraw = () => {
      container.replaceChildren(...renderStudy(body, container));
      const first = container.querySelector(".question input");
      if (first) first.focus();
    };
    const quiz = quizScore(blocks, redraw);
    const nodes = blocks.map((block, index) => {
      switch (block.type) {
        case "heading": return index === 0 ? heading(block.content) : el("h3", {text: block.content});
        case "paragraph": return el("p", {text: block.content});
        case "image": return el("figure", {}, picture(block.url, block.alt, "study-picture"),
                                block.content ? el("figcaption", {text: block.content}) : null,
                                block.url ? download(block.url, "Download picture") : null);
        case "quizHeading": return el("h3", {className: "quiz-heading", text: block.content});
        case "multipleChoiceQuestion": return question(block, quiz.answered);
        default: return el("p", {className: "note", text: block.content});
      }
    });
    return [el("div", {className: "study"}, nodes, quiz.total ? quiz.score : null)];
  }

  function renderSpeech(body) {
    return [heading("Speech", `${body.voice} voice · ${Number(body.duration_s || 0).toFixed(1)} s · ${body.text_length} characters`),
            player(body.audio_url, "Listen")];
  }

  // Which kind an answer is, from its own fields (a result opened by id has no form to ask).
  function modeOf(body) {
    if (!body) return null;
    if (body.comic) return "comic";
    if (body.story) return "story";
    if (body.lecture) return "lecture";
    if (body.blocks) return "study";
    if (body.audio_url) return "speech";
    return null;
  }

  function titleOf(body) {
    const mode = modeOf(body);
    if (mode === "comic") return body.comic.comic_title;
    if (mode === "story") return body.story.title;
    if (mode === "lecture") return body.lecture.title;
    if (mode === "study") {
      const first = (body.blocks || []).find((b) => b.type === "heading");
      return first ? first.content : null;
    }
    return null;
  }

  function render(result, body) {
    const mode = modeOf(body);
    const make = {comic: renderComic, story: renderStory, lecture: renderLecture, study: renderStudy, speech: renderSpeech}[mode];
    result.replaceChildren(...make(body, result).filter(Boolean));
    result.dataset.mode = mode;
    return mode;
  }

  return {el, render, renderPartial, modeOf, titleOf};
})();
