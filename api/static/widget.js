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
      origin: "问答服务未允许本网站调用，请联系网站管理员。",
      key: "问答服务拒绝了本网站的访问密钥，请联系网站管理员。",
      limited: "提问太频繁了，请稍等片刻再试。",
      retry: "重试",
      waiting: "回答中…",
      wait: "请等当前回答完成后再发送，您的问题已保留在输入框中。",
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
      origin: "The answering service does not allow this site. Please tell the site's administrator.",
      key: "The answering service rejected this site's widget key. Please tell the site's administrator.",
      limited: "Too many questions at once. Please wait a moment.",
      retry: "Retry",
      waiting: "Answering…",
      wait: "Please wait for the current answer; your question is kept in the box.",
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
    ".short { display: block; font-weight: 700; margin-bottom: 4px; }",
    ".short[hidden] { display: none; }",
    ".badge { display: inline-block; min-width: 18px; margin: 0 2px; padding: 0 5px; border: 0; border-radius: 9px; background: #fde8e8; color: #b4232a; font-size: 11px; line-height: 18px; vertical-align: super; text-align: center; }",
    "button.badge:hover { background: #b4232a; color: #fff; }",
    ".actions, .again { display: flex; gap: 6px; margin-top: 8px; align-items: center; }",
    ".actions button, .again button { border: 1px solid #d0d7de; background: #fff; border-radius: 8px; padding: 2px 8px; font-size: 12px; }",
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
    // 16px: iOS Safari zooms the page into any input whose text is smaller.
    ".form textarea { flex: 1; resize: none; height: 44px; padding: 8px 10px; border: 1px solid #d0d7de; border-radius: 10px; font: inherit; font-size: 16px; line-height: 1.5; color: inherit; }",
    ".form button { border: 0; border-radius: 10px; padding: 0 16px; background: #b4232a; color: #fff; }",
    ".form button:disabled { opacity: .5; cursor: default; }",
    ".status { margin: 0; padding: 6px 12px 0; font-size: 12px; color: #6b4e00; background: #fff; }",
    ".status:empty { display: none; }",
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
  // Says why a question was not sent yet (empty when there is nothing to say).
  var status = el("p", "status");
  status.setAttribute("aria-live", "polite");

  panel.appendChild(head);
  panel.appendChild(log);
  panel.appendChild(status);
  panel.appendChild(form);
  root.appendChild(launcher);
  root.appendChild(panel);
  shadow.appendChild(style);
  shadow.appendChild(root);

  var busy = false;

  /* One answer at a time: while it streams the send button is disabled and says so, and a
     question typed meanwhile stays in the input (it is sent with Enter once the answer is done). */
  function setBusy(value) {
    busy = value;
    send.disabled = value;
    send.textContent = value ? L.waiting : L.send;
    if (!value) status.textContent = "";
  }

  // ------------------------------------------------------------ rendering

  function setOpen(open, quiet) {
    // Where focus was decides where it goes: closing from inside the panel (Esc, ×) hands it
    // to the launcher, not to the page's <body>.
    var focusInside = Boolean(shadow.activeElement);
    state.open = open;
    panel.hidden = !open;
    launcher.hidden = open;
    persist();
    if (open && !quiet) input.focus(); // restoring an open panel on page load must not steal focus
    if (!open && focusInside) launcher.focus();
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
    var lines = message.shortAnswer ? [message.shortAnswer, message.text] : [message.text];
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
    var node = buildBot(message);
    log.appendChild(node);
    return node;
  }

  /* An answer's bubble: [rewritten hint] [short answer, bold] [cited answer] [quote] [actions]. */
  function buildBot(message) {
    var node = el("div", "msg bot");
    node.dataset.state = message.state || "done";
    if (message.rewritten) node.appendChild(el("div", "hint rewritten", L.rewritten + message.rewritten));
    var short = el("strong", "short");
    short.hidden = true;
    var body = el("div", "body");
    node.appendChild(short);
    node.appendChild(body);
    message.node = node;
    message.short = short;
    message.body = body;
    message.quote = makeQuote();
    node.appendChild(message.quote.box);
    paintBot(message);
    return node;
  }

  function paintBot(message) {
    var node = message.node;
    node.classList.toggle("refused", Boolean(message.refused));
    node.classList.toggle("error", message.state === "error");
    node.dataset.state = message.state || "done";
    if (message.errorKind) node.dataset.error = message.errorKind;
    // The short answer ("44名") comes only with `done`; the cited answer below stays the proof.
    var short = message.state === "done" && !message.refused ? message.shortAnswer || "" : "";
    message.short.textContent = short;
    message.short.hidden = !short;
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
    if ((message.state === "error" || message.state === "interrupted") && !node.querySelector(".again")) renderRetry(node, message);
  }

  /* An answer that failed or was cut off can be asked again, in the same bubble. */
  function renderRetry(node, message) {
    var again = el("div", "again");
    again.appendChild(
      button("retry", "↻ " + L.retry, L.retry, function () {
        retry(message);
      }),
    );
    node.appendChild(again);
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
      if (key !== "node" && key !== "body" && key !== "quote" && key !== "short") copy[key] = message[key];
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

  // ------------------------------------------------------------ what went wrong

  /* An answer that could not be had: a short line for the visitor in the bubble, and for the
     page's developer a console error that names the setting to change. */
  function fail(message, kind, userText, developerText) {
    message.state = "error";
    message.errorKind = kind;
    message.text = userText;
    if (developerText) console.error("rag-widget: " + developerText);
  }

  /* A 4xx/5xx JSON error ({error, message, fields}) that this page could read. */
  function failHttp(message, status, body) {
    var text = body && typeof body.message === "string" ? body.message : "HTTP " + status;
    var field = body && Array.isArray(body.fields) && body.fields[0] ? body.fields[0].field : null;
    var said = " (HTTP " + status + ": " + text + ")";
    if (status === 429) return fail(message, "limited", L.limited);
    if (status === 403 && field === "origin") {
      return fail(message, "origin", L.origin, apiBase + " refused the public widget key from " + location.origin + said +
        ". On the server add " + location.origin + " to RAG_PUBLIC_ORIGINS (or to RAG_CORS_ORIGINS when RAG_PUBLIC_ORIGINS is not set) and restart it.");
    }
    if (status === 401 || (status === 403 && field === "authorization")) {
      return fail(message, "key", L.key, apiBase + " rejected the widget's key" + said + ". " +
        (apiKey ? "Set data-key" : "This server requires a key: add data-key") + " on the <script> tag to the server's RAG_PUBLIC_KEY.");
    }
    fail(message, "server", L.error + text);
  }

  /* fetch() rejects alike when CORS blocks the answer and when the server is down. Two probes of
     /health tell them apart: a CORS-mode GET works only if this page's origin is allowed, and a
     no-cors GET resolves (with an opaque response) whenever the server answers at all. */
  async function diagnose() {
    try {
      await fetch(apiBase + "/health", { cache: "no-store" });
      return "network";
    } catch (err) {
      /* blocked by CORS, or nobody there: the next probe decides */
    }
    try {
      await fetch(apiBase + "/health", { mode: "no-cors", cache: "no-store" });
      return "origin";
    } catch (err) {
      return "down";
    }
  }

  async function failUnreachable(message) {
    var kind = await diagnose();
    if (kind === "origin") {
      return fail(message, "origin", L.origin, apiBase + " answers, but does not allow requests from this page's origin " + location.origin +
        " (CORS). On the server set RAG_CORS_ORIGINS=" + location.origin + " (comma-separated, with any origins already allowed) and restart it; " +
        "if RAG_PUBLIC_ORIGINS is set, add the origin there too.");
    }
    if (kind === "down") {
      var mixed = location.protocol === "https:" && apiBase.indexOf("http:") === 0 ? " An https page cannot call an http server: serve the API over https." : "";
      return fail(message, "down", L.network, "cannot reach " + apiBase + " (data-api of the <script> tag). Check that the server is running and that data-api points at it." + mixed);
    }
    fail(message, "network", L.network, "the request to " + apiBase + "/ask/stream failed although " + apiBase + "/health answers: the connection dropped, or a proxy blocks the POST.");
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
      if (data.conversation_reset && state.conversationId) {
        // Restarted or expired: the recent turns went with the question, so nothing is lost.
        console.info("rag-widget: the server no longer knew conversation " + state.conversationId + "; continuing as " + data.conversation_id + " with the recent turns sent along.");
      }
      if (data.conversation_id) state.conversationId = data.conversation_id;
      if (data.rewritten_question) {
        message.rewritten = data.rewritten_question;
        message.node.insertBefore(el("div", "hint rewritten", L.rewritten + data.rewritten_question), message.short);
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
      message.shortAnswer = data.short_answer || null;
      message.question = data.question;
      message.state = "done";
    } else if (frame.event === "error") {
      failHttp(message, 500, data);
    }
    paintBot(message);
    scrollToEnd();
  }

  var HISTORY_TURNS = 6; // the server keeps 8 turns and takes 20 messages; a follow-up needs the last one or two
  var HISTORY_CHARS = 1000;

  /* The answered turns before state.messages[upTo], oldest first, sent with every question: a
     follow-up then still resolves when the server has forgotten the conversation (a restart, an
     expired or evicted conversation, another replica). The user side is the standalone question
     the server answered, so no turn depends on one that was cut off. */
  function recentHistory(upTo) {
    var turns = [];
    state.messages.slice(0, upTo).forEach(function (m) {
      if (m.role !== "assistant" || m.state !== "done" || !m.asked) return;
      var turn = [{ role: "user", content: (m.rewritten || m.asked).slice(0, HISTORY_CHARS) }];
      if (!m.refused && m.text) turn.push({ role: "assistant", content: m.text.slice(0, HISTORY_CHARS) });
      turns.push(turn);
    });
    return [].concat.apply([], turns.slice(-HISTORY_TURNS));
  }

  function askBody(question, history) {
    var body = { question: question };
    if (state.conversationId) body.conversation_id = state.conversationId;
    if (history.length) body.history = history;
    return body;
  }

  async function streamAnswer(question, message, history) {
    var response;
    try {
      response = await fetch(apiBase + "/ask/stream", { method: "POST", headers: headers(), body: JSON.stringify(askBody(question, history)) });
    } catch (err) {
      await failUnreachable(message);
      return;
    }
    if (!response.ok || !response.body) {
      var body = null;
      try {
        body = await response.json();
      } catch (err) {
        /* not JSON */
      }
      failHttp(message, response.status, body);
      return;
    }
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    try {
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
    } catch (err) {
      // The connection broke mid-answer (the server died, the network dropped): read() rejects.
    }
    // No `done`: what arrived is a fragment, and must not look like the whole answer.
    if (message.state === "streaming") message.state = "interrupted";
  }

  /* Stream the answer to an assistant entry of state.messages (a new question, or a retry). */
  async function answer(message) {
    setBusy(true);
    hideQuotes();
    var history = recentHistory(state.messages.indexOf(message));
    persist();
    try {
      await streamAnswer(message.asked, message, history);
    } catch (err) {
      if (message.state === "streaming") message.state = "interrupted"; // never leave it spinning
      throw err;
    } finally {
      paintBot(message);
      scrollToEnd();
      persist();
      setBusy(false);
    }
  }

  async function ask(question) {
    question = String(question || "").trim();
    if (!question || busy) return;
    var user = { role: "user", text: question };
    var message = { role: "assistant", text: "", citations: [], state: "streaming", asked: question };
    state.messages.push(user, message);
    renderMessage(user);
    renderMessage(message);
    scrollToEnd();
    await answer(message);
  }

  /* Ask an interrupted or failed answer's question again, in the same bubble. */
  function retry(message) {
    if (busy) {
      status.textContent = L.wait;
      return;
    }
    ["context", "refused", "rewritten", "shortAnswer", "errorKind", "deltas", "question", "feedback"].forEach(function (key) {
      delete message[key];
    });
    message.text = "";
    message.citations = [];
    message.state = "streaming";
    message.node.replaceWith(buildBot(message));
    input.focus(); // the focused retry button went with the old bubble
    answer(message);
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
    if (busy) {
      status.textContent = L.wait; // the question stays in the input, to send when the answer is done
      return;
    }
    var question = input.value;
    if (!question.trim()) return;
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
      if (busy) {
        input.value = String(question || ""); // kept, like a typed one, until the answer is done
        status.textContent = L.wait;
        return Promise.resolve();
      }
      return ask(question);
    },
    reset: resetConversation,
  };

  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
