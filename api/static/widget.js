/*
 * rag-zh chat widget. One tag on any page:
 *
 *   <script src="https://HOST/widget.js" data-api="https://HOST" defer></script>
 *
 * Optional attributes: data-key (the public widget key), data-lang ("zh" | "en"; default:
 * the page's lang, then the browser's), data-title.
 *
 * Everything lives in a Shadow DOM, so page CSS and widget CSS do not meet. Text that comes
 * from the server (answers, quotes, titles, errors) is only ever set with textContent:
 * an article containing markup shows the markup as text.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || (window.RagWidget && window.RagWidget.loaded)) return;

  var LABELS = {
    zh: {
      title: "资料问答",
      launcher: "提问",
      welcome: "您好！请输入与资料有关的问题，回答会标出出处，点击编号可查看原文。",
      placeholder: "输入问题，按 Enter 发送",
      send: "发送",
      close: "关闭",
      reset: "新对话",
      copy: "复制",
      copied: "已复制",
      up: "有帮助",
      down: "没帮助",
      thanks: "感谢反馈！",
      refusal: "抱歉，资料中没有找到与这个问题相关的信息。您可以换个问法，或问问资料里的其他内容。",
      rewritten: "理解为：",
      thinking: "正在查找…",
      interrupted: "（回答被中断）",
      error: "出错了：",
      network: "无法连接到问答服务，请稍后再试。",
      limited: "提问太频繁了，请稍等片刻再试。",
      source: "来源",
      closeQuote: "关闭引文",
    },
    en: {
      title: "Ask the documents",
      launcher: "Ask",
      welcome: "Hello! Ask a question about the documents. Answers cite their sources: click a number to read the passage.",
      placeholder: "Type a question, press Enter to send",
      send: "Send",
      close: "Close",
      reset: "New chat",
      copy: "Copy",
      copied: "Copied",
      up: "Helpful",
      down: "Not helpful",
      thanks: "Thanks for the feedback!",
      refusal: "Sorry, the documents don't seem to cover this. Try rephrasing, or ask about something else in them.",
      rewritten: "Understood as: ",
      thinking: "Searching…",
      interrupted: "(answer interrupted)",
      error: "Error: ",
      network: "Cannot reach the answering service. Please try again later.",
      limited: "Too many questions at once. Please wait a moment.",
      source: "Source",
      closeQuote: "Close quote",
    },
  };

  var dataset = script.dataset || {};
  var apiBase = (dataset.api || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  var apiKey = dataset.key || "";
  var langCode = (dataset.lang || document.documentElement.lang || navigator.language || "zh").toLowerCase();
  var L = langCode.indexOf("zh") === 0 ? LABELS.zh : LABELS.en;
  var storageKey = "rag-widget:" + apiBase;

  var CSS = [
    ":host { all: initial; }",
    ".root { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; font: 14px/1.6 -apple-system, 'PingFang SC', 'Noto Sans CJK SC', 'Microsoft YaHei', 'WenQuanYi Micro Hei', sans-serif; color: #1f2328; }",
    "button { font: inherit; cursor: pointer; }",
    ".launcher { display: flex; align-items: center; gap: 6px; border: 0; border-radius: 999px; padding: 12px 18px; background: #b4232a; color: #fff; box-shadow: 0 6px 20px rgba(0,0,0,.25); font-size: 15px; }",
    ".launcher:focus-visible, .panel button:focus-visible { outline: 3px solid #f2b705; outline-offset: 2px; }",
    ".panel { position: absolute; right: 0; bottom: 0; width: 380px; height: min(640px, calc(100vh - 40px)); display: flex; flex-direction: column; background: #fff; border-radius: 14px; box-shadow: 0 12px 40px rgba(0,0,0,.28); overflow: hidden; }",
    ".panel[hidden], .launcher[hidden], .quote[hidden] { display: none; }",
    ".head { display: flex; align-items: center; gap: 8px; padding: 12px 14px; background: #b4232a; color: #fff; }",
    ".head h2 { flex: 1; margin: 0; font-size: 16px; font-weight: 600; }",
    ".head button { border: 0; background: rgba(255,255,255,.16); color: #fff; border-radius: 8px; padding: 4px 10px; }",
    ".log { flex: 1; overflow-y: auto; padding: 14px; background: #f7f7f8; display: flex; flex-direction: column; gap: 10px; }",
    ".msg { max-width: 88%; padding: 9px 12px; border-radius: 12px; white-space: pre-wrap; word-break: break-word; }",
    ".user { align-self: flex-end; background: #b4232a; color: #fff; border-bottom-right-radius: 4px; }",
    ".bot { align-self: flex-start; background: #fff; border: 1px solid #e3e3e6; border-bottom-left-radius: 4px; }",
    ".bot.refused .body { color: #6b4e00; }",
    ".bot.error .body { color: #a40e26; }",
    ".hint { font-size: 12px; color: #6e7781; margin-bottom: 4px; }",
    ".badge { display: inline-block; min-width: 18px; margin: 0 2px; padding: 0 5px; border: 0; border-radius: 9px; background: #fde8e8; color: #b4232a; font-size: 11px; line-height: 18px; vertical-align: super; text-align: center; }",
    "button.badge:hover { background: #b4232a; color: #fff; }",
    ".actions { display: flex; gap: 6px; margin-top: 8px; align-items: center; }",
    ".actions button { border: 1px solid #d0d7de; background: #fff; border-radius: 8px; padding: 2px 8px; font-size: 12px; }",
    ".actions button[aria-pressed=true] { background: #fde8e8; border-color: #b4232a; }",
    ".actions button:disabled { cursor: default; opacity: .7; }",
    ".actions .note { font-size: 12px; color: #6e7781; }",
    ".quote { margin-top: 8px; background: #fffdf5; border: 1px solid #e8d9a8; border-radius: 10px; padding: 8px 10px; font-size: 13px; }",
    ".quote .qhead { display: flex; gap: 8px; align-items: flex-start; }",
    ".quote .qtitle { flex: 1; font-weight: 600; }",
    ".quote .qclose { border: 0; background: transparent; font-size: 18px; line-height: 1; padding: 0 4px; }",
    ".quote blockquote { margin: 6px 0 0; padding-left: 10px; border-left: 3px solid #b4232a; white-space: pre-wrap; color: #57606a; }",
    ".quote mark { background: #fff1b8; color: #1f2328; padding: 0 1px; }",
    ".form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #e3e3e6; background: #fff; }",
    ".form textarea { flex: 1; resize: none; height: 44px; padding: 8px 10px; border: 1px solid #d0d7de; border-radius: 10px; font: inherit; color: inherit; }",
    ".form button { border: 0; border-radius: 10px; padding: 0 16px; background: #b4232a; color: #fff; }",
    ".form button:disabled { opacity: .5; cursor: default; }",
    "@media (max-width: 480px) { .root { right: 8px; bottom: 8px; } .panel { width: calc(100vw - 16px); height: calc(100vh - 16px); } }",
  ].join("\n");

  // ------------------------------------------------------------ state (sessionStorage)

  function loadState() {
    try {
      var saved = JSON.parse(sessionStorage.getItem(storageKey) || "null");
      if (saved && Array.isArray(saved.messages)) return saved;
    } catch (err) {
      /* storage unavailable or corrupt: start fresh */
    }
    return { conversationId: null, messages: [], open: false };
  }

  function saveState() {
    try {
      sessionStorage.setItem(storageKey, JSON.stringify(state));
    } catch (err) {
      /* private mode or quota: the conversation just won't survive navigation */
    }
  }

  var state = loadState();

  // ------------------------------------------------------------ DOM helpers (no HTML parsing anywhere)

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function button(className, text, label, onClick) {
    var node = el("button", className, text);
    node.type = "button";
    if (label) node.setAttribute("aria-label", label);
    node.addEventListener("click", onClick);
    return node;
  }

  var host = el("div");
  host.id = "rag-widget";
  var shadow = host.attachShadow({ mode: "open" });
  var style = el("style", null, CSS);
  var root = el("div", "root");
  root.lang = L === LABELS.zh ? "zh-CN" : "en";

  var launcher = button("launcher", null, L.launcher, function () {
    setOpen(true);
  });
  launcher.appendChild(el("span", null, "💬"));
  launcher.appendChild(el("span", null, L.launcher));

  var panel = el("div", "panel");
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", dataset.title || L.title);
  var head = el("div", "head");
  head.appendChild(el("h2", null, dataset.title || L.title));
  head.appendChild(button("reset", "↺", L.reset, resetConversation));
  head.appendChild(button("close", "×", L.close, function () {
    setOpen(false);
  }));
  var log = el("div", "log");
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");

  var form = el("form", "form");
  var input = el("textarea");
  input.placeholder = L.placeholder;
  input.setAttribute("aria-label", L.placeholder);
  input.maxLength = 500;
  var send = el("button", "send", L.send);
  send.type = "submit";
  form.appendChild(input);
  form.appendChild(send);

  panel.appendChild(head);
  panel.appendChild(log);
  panel.appendChild(form);
  root.appendChild(launcher);
  root.appendChild(panel);
  shadow.appendChild(style);
  shadow.appendChild(root);

  var busy = false;

  // ------------------------------------------------------------ rendering

  function setOpen(open, quiet) {
    state.open = open;
    panel.hidden = !open;
    launcher.hidden = open;
    persist();
    if (open && !quiet) input.focus(); // restoring an open panel on page load must not steal focus
  }

  function scrollToEnd() {
    log.scrollTop = log.scrollHeight;
  }

  /* The passage a badge points to, shown under the answer with its article title. */
  function makeQuote() {
    var box = el("div", "quote");
    box.hidden = true;
    box.setAttribute("role", "note");
    var head = el("div", "qhead");
    var title = el("div", "qtitle");
    var close = button("qclose", "×", L.closeQuote, function () {
      box.hidden = true;
    });
    var text = el("blockquote");
    head.appendChild(title);
    head.appendChild(close);
    box.appendChild(head);
    box.appendChild(text);
    return { box: box, title: title, text: text, close: close, n: null };
  }

  function showQuote(message, citation) {
    var quote = message.quote;
    if (!quote.box.hidden && quote.n === citation.n) {
      quote.box.hidden = true; // a second click on the same badge closes it
      return;
    }
    quote.n = citation.n;
    quote.title.textContent = "[" + citation.n + "] " + L.source + "：" + citation.title;
    fillQuote(quote.text, citation, (message.context || {})[citation.chunk_id]);
    quote.box.hidden = false;
    quote.box.scrollIntoView({ block: "nearest" });
  }

  var CONTEXT_CHARS = 80;

  /* Keep, for each cited chunk, just the text around its quotes (sessionStorage stays small). */
  function citedPassages(response) {
    var context = {};
    (response.citations || []).forEach(function (c) {
      var passage = (response.passages || []).filter(function (p) {
        return p.chunk_id === c.chunk_id;
      })[0];
      if (passage && c.start >= passage.start && c.end <= passage.end) context[c.chunk_id] = { start: passage.start, text: passage.text };
    });
    return context;
  }

  /* The quote highlighted in its surrounding passage: text nodes and a <mark>, never markup. */
  function fillQuote(target, citation, passage) {
    target.replaceChildren();
    if (!passage) {
      target.appendChild(el("mark", null, citation.quote));
      return;
    }
    var from = citation.start - passage.start;
    var to = citation.end - passage.start;
    var before = passage.text.slice(Math.max(0, from - CONTEXT_CHARS), from);
    var after = passage.text.slice(to, to + CONTEXT_CHARS);
    if (from > CONTEXT_CHARS) before = "…" + before;
    if (to + CONTEXT_CHARS < passage.text.length) after += "…";
    target.appendChild(document.createTextNode(before));
    target.appendChild(el("mark", null, passage.text.slice(from, to)));
    target.appendChild(document.createTextNode(after));
  }

  function hideQuotes() {
    shadow.querySelectorAll(".quote").forEach(function (box) {
      box.hidden = true;
    });
  }

  /* Answer text with its [n] markers turned into badges; text nodes only. */
  function renderAnswer(message) {
    var body = message.body;
    var byNumber = {};
    (message.citations || []).forEach(function (c) {
      byNumber[c.n] = c;
    });
    body.replaceChildren();
    message.text.split(/(\[\d+\])/).forEach(function (part) {
      var marker = /^\[(\d+)\]$/.exec(part);
      if (!marker) {
        if (part) body.appendChild(document.createTextNode(part));
        return;
      }
      var citation = byNumber[Number(marker[1])];
      if (!citation) {
        body.appendChild(el("span", "badge pending", marker[1]));
        return;
      }
      var badge = button("badge", marker[1], L.source + " " + citation.n + "：" + citation.title, function () {
        showQuote(message, citation);
      });
      badge.dataset.n = marker[1];
      body.appendChild(badge);
    });
  }

  function copyText(message) {
    var lines = [message.text];
    (message.citations || []).forEach(function (c) {
      lines.push("[" + c.n + "] " + c.title + "：" + c.quote);
    });
    return lines.join("\n");
  }

  function copyToClipboard(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var area = el("textarea");
    area.value = text;
    shadow.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      area.remove();
    }
    return Promise.resolve();
  }

  function renderActions(node, message) {
    var actions = el("div", "actions");
    if (!message.refused) {
      var copy = button("copy", "📋 " + L.copy, L.copy, function () {
        copyToClipboard(copyText(message)).then(
          function () {
            copy.textContent = "✓ " + L.copied;
          },
          function () {
            copy.textContent = L.copy;
          },
        );
      });
      actions.appendChild(copy);
    }
    var note = el("span", "note", message.feedback ? L.thanks : "");
    [["up", "👍", L.up], ["down", "👎", L.down]].forEach(function (spec) {
      var rate = button("rate " + spec[0], spec[1], spec[2], function () {
        sendFeedback(message, spec[0], actions, note);
      });
      rate.setAttribute("aria-pressed", String(message.feedback === spec[0]));
      rate.disabled = Boolean(message.feedback);
      actions.appendChild(rate);
    });
    actions.appendChild(note);
    node.appendChild(actions);
  }

  function renderMessage(message) {
    if (message.role === "user") {
      var bubble = el("div", "msg user", message.text);
      log.appendChild(bubble);
      return bubble;
    }
    var node = el("div", "msg bot");
    node.dataset.state = message.state || "done";
    if (message.rewritten) node.appendChild(el("div", "hint rewritten", L.rewritten + message.rewritten));
    var body = el("div", "body");
    node.appendChild(body);
    message.node = node;
    message.body = body;
    message.quote = makeQuote();
    node.appendChild(message.quote.box);
    paintBot(message);
    log.appendChild(node);
    return node;
  }

  function paintBot(message) {
    var node = message.node;
    node.classList.toggle("refused", Boolean(message.refused));
    node.classList.toggle("error", message.state === "error");
    node.dataset.state = message.state || "done";
    if (message.state === "error") {
      message.body.textContent = message.text;
    } else if (message.refused) {
      message.body.textContent = L.refusal;
    } else if (!message.text && message.state === "streaming") {
      message.body.textContent = L.thinking;
    } else {
      renderAnswer(message);
      if (message.state === "interrupted") message.body.appendChild(el("span", "hint", " " + L.interrupted));
    }
    if (message.state === "done" && !node.querySelector(".actions")) renderActions(node, message);
  }

  function renderAll() {
    log.replaceChildren();
    log.appendChild(el("div", "msg bot welcome", L.welcome));
    state.messages.forEach(function (message) {
      if (message.state === "streaming") message.state = "interrupted";
      renderMessage(message);
    });
    scrollToEnd();
  }

  function plain(message) {
    /* What sessionStorage keeps of a message (no DOM nodes). */
    var copy = {};
    Object.keys(message).forEach(function (key) {
      if (key !== "node" && key !== "body" && key !== "quote") copy[key] = message[key];
    });
    return copy;
  }

  function persist() {
    var live = state.messages;
    state.messages = live.map(plain);
    saveState();
    state.messages = live;
  }

  // ------------------------------------------------------------ network

  function headers() {
    var h = { "Content-Type": "application/json", Accept: "text/event-stream, application/json" };
    if (apiKey) h.Authorization = "Bearer " + apiKey;
    return h;
  }

  function errorText(status, body) {
    if (status === 429) return L.limited;
    var message = body && typeof body.message === "string" ? body.message : "HTTP " + status;
    return L.error + message;
  }

  function parseFrame(frame) {
    var event = "message";
    var data = [];
    frame.split(/\r?\n/).forEach(function (line) {
      if (line.indexOf("event:") === 0) event = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    if (!data.length) return null;
    try {
      return { event: event, data: JSON.parse(data.join("\n")) };
    } catch (err) {
      return null;
    }
  }

  function handleEvent(message, frame) {
    var data = frame.data;
    if (frame.event === "meta") {
      if (data.conversation_id) state.conversationId = data.conversation_id;
      if (data.rewritten_question) {
        message.rewritten = data.rewritten_question;
        message.node.insertBefore(el("div", "hint rewritten", L.rewritten + data.rewritten_question), message.body);
      }
    } else if (frame.event === "delta") {
      message.text += data.text;
      message.deltas = (message.deltas || 0) + 1;
      message.node.dataset.deltas = String(message.deltas);
    } else if (frame.event === "reset") {
      message.text = "";
      message.citations = [];
    } else if (frame.event === "citation") {
      message.citations = (message.citations || []).filter(function (c) {
        return c.n !== data.n;
      });
      message.citations.push(data);
    } else if (frame.event === "done") {
      message.text = data.answer;
      message.citations = data.citations;
      message.context = citedPassages(data);
      message.refused = Boolean(data.refused);
      message.question = data.question;
      message.state = "done";
    } else if (frame.event === "error") {
      message.state = "error";
      message.text = errorText(500, data);
    }
    paintBot(message);
    scrollToEnd();
  }

  async function streamAnswer(question, message) {
    var response;
    try {
      response = await fetch(apiBase + "/ask/stream", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(state.conversationId ? { question: question, conversation_id: state.conversationId } : { question: question }),
      });
    } catch (err) {
      message.state = "error";
      message.text = L.network;
      return;
    }
    if (!response.ok || !response.body) {
      var body = null;
      try {
        body = await response.json();
      } catch (err) {
        /* not JSON */
      }
      message.state = "error";
      message.text = errorText(response.status, body);
      return;
    }
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, { stream: true });
      var cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        var frame = parseFrame(buffer.slice(0, cut));
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        if (frame) handleEvent(message, frame);
      }
    }
    if (message.state === "streaming") message.state = "interrupted";
  }

  async function ask(question) {
    question = String(question || "").trim();
    if (!question || busy) return;
    busy = true;
    send.disabled = true;
    hideQuotes();
    var user = { role: "user", text: question };
    var message = { role: "assistant", text: "", citations: [], state: "streaming", asked: question };
    state.messages.push(user, message);
    renderMessage(user);
    renderMessage(message);
    scrollToEnd();
    persist();
    try {
      await streamAnswer(question, message);
    } finally {
      paintBot(message);
      scrollToEnd();
      persist();
      busy = false;
      send.disabled = false;
    }
  }

  async function sendFeedback(message, rating, actions, note) {
    actions.querySelectorAll(".rate").forEach(function (b) {
      b.disabled = true;
    });
    var payload = { rating: rating, question: message.question || message.asked, answer: message.text };
    if (state.conversationId) payload.conversation_id = state.conversationId;
    payload.citations = (message.citations || []).map(function (c) {
      return c.n;
    });
    try {
      var response = await fetch(apiBase + "/feedback", { method: "POST", headers: headers(), body: JSON.stringify(payload) });
      if (!response.ok) throw new Error("HTTP " + response.status);
      message.feedback = rating;
      actions.querySelector(".rate." + rating).setAttribute("aria-pressed", "true");
      note.textContent = L.thanks;
      persist();
    } catch (err) {
      note.textContent = L.error + err.message;
      actions.querySelectorAll(".rate").forEach(function (b) {
        b.disabled = false;
      });
    }
  }

  function resetConversation() {
    state.messages = [];
    state.conversationId = null;
    persist();
    renderAll();
  }

  // ------------------------------------------------------------ wiring

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var question = input.value;
    input.value = "";
    ask(question);
  });
  input.addEventListener("keydown", function (event) {
    // Enter sends; Shift+Enter is a newline; Enter that confirms an IME candidate does neither.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  shadow.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      if (shadow.querySelector(".quote:not([hidden])")) hideQuotes();
      else setOpen(false);
    }
  });

  function mount() {
    document.body.appendChild(host);
    renderAll();
    setOpen(Boolean(state.open), true);
  }

  window.RagWidget = {
    loaded: true,
    open: function () {
      setOpen(true);
    },
    close: function () {
      setOpen(false);
    },
    ask: function (question) {
      setOpen(true);
      return ask(question);
    },
    reset: resetConversation,
  };

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
