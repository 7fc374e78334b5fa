// devsup live reload, served by `devsup --livereload` at /devsup-livereload.js.
//
// Add it to a page with one tag (the address is in DEVSUP_LIVERELOAD):
//   <script src="http://127.0.0.1:35729/devsup-livereload.js"></script>
//
// It listens to devsup's event stream and
// - reloads the page when a new generation of the server is ready (never
//   on a mere file change: the old generation serves until the new one
//   says READY);
// - shows a failed build's output over the page, which the last good
//   generation still serves; the overlay can be dismissed (x or Escape) and
//   goes away with the next ready generation;
// - when devsup is gone, retries quietly until it is back.
//
// Optional: data-generation="N" on the tag names the generation that served
// the page, so a reload missed while the page loaded is caught up.
(function () {
  "use strict";
  if (window.__devsupLivereload) return;
  var script = document.currentScript;
  var origin = "http://127.0.0.1:35729";
  try {
    if (script && script.src) origin = new URL(script.src).origin;
  } catch (e) {}
  var seen = script && script.dataset && script.dataset.generation ? Number(script.dataset.generation) : null;
  var state = { generation: seen, instance: null, reloading: false, delay: 1000, source: null, failed: null };
  window.__devsupLivereload = state;

  function reload(generation, catchingUp) {
    if (state.reloading) return;
    if (catchingUp) {
      // At most twice for the same generation: a page that keeps naming
      // an old one (a cache, a wrong data-generation) must not loop.
      try {
        var key = "devsup-livereload-catch-up:" + state.instance + ":" + generation;
        var tries = Number(sessionStorage.getItem(key) || 0);
        if (tries >= 2) {
          state.generation = generation;
          return;
        }
        sessionStorage.setItem(key, String(tries + 1));
      } catch (e) {}
    }
    state.reloading = true;
    state.generation = generation;
    if (state.source) state.source.close();
    window.location.reload();
  }

  function connect() {
    var source = new EventSource(origin + "/events");
    state.source = source;
    source.addEventListener("hello", function (e) {
      state.delay = 1000;
      var words = e.data.split(" ");
      var generation = Number(words[0]);
      var instance = words[1] || "";
      if (state.instance && instance !== state.instance) {
        // Another devsup (restarted): its generation numbers start again,
        // so the page's own means nothing to it.
        state.instance = instance;
        if (generation > 0) {
          reload(generation, true);
        } else {
          state.generation = null; // the next ready event reloads
        }
        return;
      }
      state.instance = instance;
      if (state.generation === null) {
        if (generation > 0) state.generation = generation;
      } else if (generation > 0 && generation !== state.generation) {
        // A generation became ready while the stream was down, or after
        // the one that served this page (data-generation).
        reload(generation, true);
      }
      if (generation > 0) hideOverlay();
    });
    source.addEventListener("editor", function (e) {
      var newline = e.data.indexOf("\n");
      state.editor = { template: e.data.slice(0, newline), base: e.data.slice(newline + 1) };
    });
    source.addEventListener("building", function () {
      setBuilding(true);
    });
    source.addEventListener("failed", function (e) {
      showOverlay(e.data);
    });
    source.addEventListener("ready", function (e) {
      var generation = Number(e.data);
      if (generation !== state.generation) {
        reload(generation);
      } else {
        hideOverlay();
      }
    });
    source.onerror = function () {
      // EventSource reconnects by itself after a dropped stream; after a
      // refused connection or a bad answer it gives up (CLOSED): start
      // again, a little later each time, without a word.
      if (source.readyState === EventSource.CLOSED && !state.reloading) {
        source.close();
        setTimeout(connect, state.delay);
        state.delay = Math.min(state.delay * 2, 10000);
      }
    };
  }

  // ANSI escape sequences (SGR colours and styles) to HTML, escaping the
  // text. Other escape sequences (cursor moves, hyperlinks) are dropped.
  var PALETTE = [
    "#3b3b3b", "#e5534b", "#57ab5a", "#c69026", "#539bf5", "#b083f0", "#39c5cf", "#d1d7e0",
    "#636e7b", "#ff938a", "#6bc46d", "#daaa3f", "#6cb6ff", "#dcbdfb", "#56d4dd", "#f0f3f6",
  ];
  function color256(n) {
    if (n < 16) return PALETTE[n];
    if (n < 232) {
      n -= 16;
      var level = function (v) { return v === 0 ? 0 : 55 + v * 40; };
      return "rgb(" + level(Math.floor(n / 36)) + "," + level(Math.floor(n / 6) % 6) + "," + level(n % 6) + ")";
    }
    var g = 8 + (n - 232) * 10;
    return "rgb(" + g + "," + g + "," + g + ")";
  }
  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function ansiToHtml(text) {
    var style = {};
    var out = "";
    var open = false;
    // CSI sequences, OSC sequences (ended by BEL or ESC \), lone escapes.
    var re = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?/g;
    var last = 0;
    var match;
    function flush(chunk) {
      if (!chunk) return;
      out += escapeHtml(chunk);
    }
    function restyle() {
      if (open) out += "</span>";
      var css = "";
      var fg = style.fg, bg = style.bg;
      if (style.inverse) { var t = fg || "#d1d7e0"; fg = bg || "#1c2128"; bg = t; }
      if (fg) css += "color:" + fg + ";";
      if (bg) css += "background:" + bg + ";";
      if (style.bold) css += "font-weight:bold;";
      if (style.dim) css += "opacity:0.7;";
      if (style.italic) css += "font-style:italic;";
      if (style.underline) css += "text-decoration:underline;";
      open = css !== "";
      if (open) out += '<span style="' + css + '">';
    }
    while ((match = re.exec(text)) !== null) {
      flush(text.slice(last, match.index));
      last = re.lastIndex;
      if (match[2] !== "m") continue;
      var codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
      for (var i = 0; i < codes.length; i++) {
        var c = codes[i];
        if (c === 0) style = {};
        else if (c === 1) style.bold = true;
        else if (c === 2) style.dim = true;
        else if (c === 3) style.italic = true;
        else if (c === 4) style.underline = true;
        else if (c === 7) style.inverse = true;
        else if (c === 22) { style.bold = false; style.dim = false; }
        else if (c === 23) style.italic = false;
        else if (c === 24) style.underline = false;
        else if (c === 27) style.inverse = false;
        else if (c >= 30 && c <= 37) style.fg = PALETTE[c - 30];
        else if (c >= 90 && c <= 97) style.fg = PALETTE[c - 90 + 8];
        else if (c === 39) style.fg = null;
        else if (c >= 40 && c <= 47) style.bg = PALETTE[c - 40];
        else if (c >= 100 && c <= 107) style.bg = PALETTE[c - 100 + 8];
        else if (c === 49) style.bg = null;
        else if ((c === 38 || c === 48) && codes[i + 1] === 5 && i + 2 < codes.length) {
          style[c === 38 ? "fg" : "bg"] = color256(codes[i + 2] & 255);
          i += 2;
        } else if ((c === 38 || c === 48) && codes[i + 1] === 2 && i + 4 < codes.length) {
          style[c === 38 ? "fg" : "bg"] = "rgb(" + codes[i + 2] + "," + codes[i + 3] + "," + codes[i + 4] + ")";
          i += 4;
        }
      }
      restyle();
    }
    flush(text.slice(last));
    if (open) out += "</span>";
    return out;
  }
  state.ansiToHtml = ansiToHtml;

  // `--> FILE:LINE:COL` (rustc's, and many tools') as a link that opens the
  // editor, with devsup's --editor-url template; relative paths are under
  // the base devsup gives (the Cargo workspace's root).
  function linkLocations(html) {
    var editor = state.editor;
    if (!editor) return html;
    return html.replace(
      /(--&gt; (?:<\/span>)?)([^\s<>:]+):(\d+):(\d+)/g,
      function (all, arrow, file, line, column) {
        var path = file.replace(/&amp;/g, "&");
        if (path.charAt(0) !== "/") path = editor.base.replace(/\/$/, "") + "/" + path;
        var href = editor.template
          .replace("{file}", encodeURI(path))
          .replace("{line}", line)
          .replace("{column}", column);
        return arrow + '<a class="location" href="' + escapeHtml(href) + '">' + file + ":" + line + ":" + column + "</a>";
      }
    );
  }
  state.linkLocations = linkLocations;

  var host = null;
  function showOverlay(data) {
    var newline = data.indexOf("\n");
    var summary = newline < 0 ? data : data.slice(0, newline);
    var output = newline < 0 ? "" : data.slice(newline + 1);
    state.failed = data;
    hideOverlay();
    host = document.createElement("devsup-overlay");
    host.id = "devsup-livereload-overlay";
    // A shadow root: the page's styles do not reach the overlay, nor its
    // styles the page.
    var root = host.attachShadow({ mode: "open" });
    root.innerHTML =
      "<style>" +
      ":host{all:initial}" +
      ".backdrop{position:fixed;inset:0;z-index:2147483647;background:rgba(0,0,0,0.35);display:flex;align-items:flex-start;justify-content:center;padding:14vh 2vw 4vh;box-sizing:border-box}" +
      ".panel{background:#1c2128;color:#d1d7e0;max-width:min(1100px,96vw);width:100%;max-height:82vh;display:flex;flex-direction:column;border-radius:6px;border-top:4px solid #e5534b;box-shadow:0 10px 40px rgba(0,0,0,0.5);font:14px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace}" +
      ".head{display:flex;align-items:center;gap:12px;padding:12px 16px;border-bottom:1px solid #373e47}" +
      ".title{flex:1;font-weight:bold;color:#ff938a;white-space:pre-wrap;word-break:break-word}" +
      ".note{color:#909dab;font-weight:normal}" +
      "button{all:unset;cursor:pointer;color:#909dab;font-size:20px;line-height:1;padding:2px 8px;border-radius:4px}" +
      "button:hover{background:#373e47;color:#f0f3f6}" +
      "pre{margin:0;padding:14px 16px;overflow:auto;white-space:pre;tab-size:4;font:inherit}" +
      "a.location{color:inherit;text-decoration:underline dotted}" +
      "</style>" +
      '<div class="backdrop" part="backdrop"><div class="panel" role="alertdialog" aria-label="Build failed">' +
      '<div class="head"><div class="title"></div><button type="button" title="Dismiss (Esc)" aria-label="Dismiss">\u00d7</button></div>' +
      '<pre class="output"></pre></div></div>';
    root.querySelector(".title").innerHTML =
      escapeHtml(summary) + '<br><span class="note">The page is served by the last good generation; save a fix to rebuild.</span>';
    root.querySelector(".output").innerHTML = linkLocations(ansiToHtml(output));
    root.querySelector("button").addEventListener("click", hideOverlay);
    (document.body || document.documentElement).appendChild(host);
  }
  function hideOverlay() {
    if (host && host.parentNode) host.parentNode.removeChild(host);
    host = null;
  }
  function setBuilding(building) {
    if (host) {
      var note = host.shadowRoot.querySelector(".note");
      if (note && building) note.textContent = "Rebuilding\u2026";
    }
  }
  state.hideOverlay = hideOverlay;
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && host) hideOverlay();
  });

  connect();
})();
