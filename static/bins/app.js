// The inspector page's own behaviour (templates/bins/inspect.html): the live connection and
// its state, the list (selection, trimming, deletions, search and filters, keyboard), local
// times, the Bins menu and the Clear confirmation. No inline script anywhere (the CSP forbids
// it), and never innerHTML: captured text only ever reaches the page as text.
//
// Work per live message stays proportional to what the message brings (a bin of 500 rows may
// receive 100 captures a second): no walks over the whole list, except when the whole list is
// replaced anyway.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  var $ = function (id) { return document.getElementById(id); };
  var PHONE = window.matchMedia("(max-width: 760px)");

  // --- copy the capture URL -------------------------------------------------------------------

  function copy(button) {
    var field = document.querySelector(button.getAttribute("data-copy"));
    var label = button.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () {});
    } else {
      field.select();
      document.execCommand("copy");
      done();
    }
  }

  // --- the open capture, marked in the list ---------------------------------------------------

  var selectedId = null;

  function rowOf(id) { return id ? $("capture-" + id) : null; }

  function mark(id) {
    var old = document.querySelector("#capture-list li.selected");
    if (old && old.getAttribute("data-id") !== id) {
      old.classList.remove("selected");
      old.firstElementChild.removeAttribute("aria-current");
    }
    var row = rowOf(id);
    if (row) {
      row.classList.add("selected");
      row.firstElementChild.setAttribute("aria-current", "true");
    }
  }

  var lastOpened = null; // stays when the capture is closed: where "Back to the list" returns

  function select(id) {
    selectedId = id || null;
    if (selectedId) { lastOpened = selectedId; }
    mark(selectedId);
  }

  function selectFromDetail() {
    var detail = document.querySelector("#detail .capture-detail");
    select(detail && detail.getAttribute("data-id"));
  }

  // --- live: connection state and reconnects --------------------------------------------------

  // htmx's ws extension backs off up to 64 s, and reconnects only after some close codes. The
  // page schedules reconnects itself: at once when the server asks for it (code 4000: this
  // client may have missed captures, and catches up on connect), else after a short backoff
  // capped at RETRY_MAX; "Retry now" cuts the wait. So the extension's own timer never fires.
  var RETRY_MAX = 5000;
  var STABLE = 2000; // a connection that lasted this long was not a failed attempt
  var live = { retries: 0, timer: null, wrapper: null, elt: null, openedAt: 0, connecting: false };

  if (window.htmx) {
    htmx.config.wsReconnectDelay = function () { return 2147483647; };
    // The extension reports a failed attempt to the console as "[object Event]" from the
    // socket's onerror; the close that follows every failure is what the page acts on.
    htmx.createWebSocket = function (url) {
      var socket = new WebSocket(url, []);
      socket.binaryType = htmx.config.wsBinaryType;
      Object.defineProperty(socket, "onerror", {
        configurable: true, get: function () { return null; }, set: function () {}
      });
      return socket;
    };
  }

  function backoff(n) {
    var ceiling = Math.min(RETRY_MAX, 500 * Math.pow(2, n));
    return ceiling / 2 + Math.random() * ceiling / 2;
  }

  function setLive(state, text) {
    var el = $("live-status");
    if (el && el.getAttribute("data-state") !== state) {
      el.setAttribute("data-state", state);
      el.textContent = text;
    }
    var retry = $("live-retry");
    if (retry) { retry.hidden = state !== "closed"; }
  }

  function reconnect() {
    clearTimeout(live.timer);
    live.timer = null;
    if (!live.wrapper || !document.body.contains(live.elt)) { return; }
    live.connecting = true;
    live.wrapper.reconnect();
  }

  document.addEventListener("htmx:wsConnecting", function () { live.connecting = true; });
  document.addEventListener("htmx:wsOpen", function (event) {
    live.connecting = false;
    live.openedAt = Date.now();
    live.elt = event.detail.elt;
    setLive("open", "live");
  });
  document.addEventListener("htmx:wsClose", function (event) {
    var elt = event.detail.elt;
    if (!document.body.contains(elt)) { return; } // a stream the page replaced (new filters)
    live.connecting = false;
    live.wrapper = event.detail.socketWrapper;
    live.elt = elt;
    var stable = live.openedAt && Date.now() - live.openedAt > STABLE;
    live.openedAt = 0;
    if (stable) { live.retries = 0; }
    setLive("closed", "reconnecting…");
    var code = event.detail.event && event.detail.event.code;
    var delay = code === 4000 && stable ? 0 : backoff(live.retries++);
    clearTimeout(live.timer);
    live.timer = setTimeout(reconnect, delay);
  });

  // --- live: what a message brought -----------------------------------------------------------

  // The server keeps the newest CAPTURES_PER_BIN; so does the open page. The list holds one
  // placeholder (li.empty), first or, once live rows went in above it, last.
  function trimList() {
    var list = $("capture-list");
    var limit = list && parseInt(list.getAttribute("data-limit"), 10);
    if (!limit) { return; }
    var extra = list.childElementCount - 1 - limit;
    for (var node = list.lastElementChild; extra > 0 && node;) {
      var before = node.previousElementSibling;
      if (node.classList.contains("capture")) {
        node.remove();
        extra--;
      }
      node = before;
    }
  }

  function afterMessage() {
    trimList();
    var removed = $("removed");
    var ids = removed && removed.getAttribute("data-ids");
    if (ids) {
      removed.removeAttribute("data-ids");
      ids.split(" ").forEach(function (id) {
        var row = rowOf(id);
        if (row) { row.remove(); }
      });
    }
    var changed = $("changed");
    if (changed && changed.hasAttribute("data-why")) {
      // Stored captures changed (signatures checked again): show the open one anew.
      changed.removeAttribute("data-why");
      if (document.querySelector("#detail .capture-detail") && window.htmx) {
        htmx.ajax("GET", location.pathname, { target: "#detail", swap: "innerHTML" });
      }
    }
    var row = rowOf(selectedId);
    if (row && !row.classList.contains("selected")) { mark(selectedId); }
    var list = $("capture-list");
    if (list && list.getAttribute("aria-busy")) { list.removeAttribute("aria-busy"); }
  }
  document.addEventListener("htmx:wsAfterMessage", afterMessage);

  // The whole list comes again (a reconnect, new filters, a Clear): htmx would walk every old
  // row to clean it up, an event per element (about 60 ms for 500 rows). The old rows carry
  // nothing to clean up beyond their own listeners, so they go at once, in this same task.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail.target;
    var fragment = event.detail.fragment;
    var incoming = fragment && fragment.firstElementChild;
    // Only a whole new list (outerHTML); rows added on top arrive in a wrapper without the id.
    if (target && target.id === "capture-list" && incoming && incoming.id === "capture-list") {
      target.textContent = "";
    }
  });

  // --- times in the viewer's zone -------------------------------------------------------------

  // Every <time datetime> the page gets (rendered, swapped in, pushed live) is shown in the
  // viewer's own zone, named: "14:03:07.123 GMT+1" today, "24 Nov, 14:03:07.123 GMT+1" before;
  // the full date in its title. The server's text (UTC, named) is what a page without script
  // shows.
  var clockOnly, dated, full;
  try {
    var parts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      fractionalSecondDigits: 3, timeZoneName: "short" };
    clockOnly = new Intl.DateTimeFormat(undefined, parts);
    dated = new Intl.DateTimeFormat(undefined, Object.assign({ day: "numeric", month: "short" }, parts));
    full = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long",
      day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      fractionalSecondDigits: 3, timeZoneName: "long" });
  } catch (e) {
    clockOnly = null;
  }

  function localize(root) {
    if (!clockOnly) { return; }
    var times = root.matches && root.matches("time[datetime]") ? [root]
      : root.querySelectorAll ? root.querySelectorAll("time[datetime]") : [];
    if (!times.length) { return; }
    var midnight = new Date();
    midnight.setHours(0, 0, 0, 0);
    for (var i = 0; i < times.length; i++) {
      var el = times[i];
      var iso = el.getAttribute("datetime");
      if (el.getAttribute("data-local") === iso) { continue; }
      var at = new Date(iso);
      if (isNaN(at)) { continue; }
      el.setAttribute("data-local", iso);
      el.textContent = (at >= midnight && at - midnight < 86400000 ? clockOnly : dated).format(at);
      el.title = full.format(at) + " (" + iso + ")";
    }
  }

  new MutationObserver(function (records) {
    for (var i = 0; i < records.length; i++) {
      var added = records[i].addedNodes;
      for (var j = 0; j < added.length; j++) {
        if (added[j].nodeType === 1) { localize(added[j]); }
      }
    }
  }).observe(document.documentElement, { childList: true, subtree: true });

  // --- search and filters ---------------------------------------------------------------------

  // The filters live in the page's URL and in its live stream's URL: a change opens a new
  // stream, whose first message is the filtered list (bins/page_filters.py: the server decides
  // what matches, for the list and for every capture that arrives later).
  var FILTERS = ["q", "method", "provider", "valid"];
  var filterTimer = null;

  function filterQuery(form) {
    var params = new URLSearchParams();
    FILTERS.forEach(function (name) {
      var field = form.elements[name];
      var value = field ? field.value : "";
      if (name !== "q") { value = value.trim(); }
      if (value) { params.set(name, value); }
    });
    var text = params.toString();
    return text ? "?" + text : "";
  }

  function currentQuery() {
    var stream = $("live-stream");
    var url = stream ? stream.getAttribute("ws-connect") : "";
    var at = url.indexOf("?");
    return at < 0 ? "" : url.slice(at);
  }

  function applyFilters() {
    clearTimeout(filterTimer);
    var form = $("filters");
    var old = $("live-stream");
    if (!form || !old || !window.htmx) { return; }
    var query = filterQuery(form);
    if (query === currentQuery()) { return; }
    history.replaceState(history.state, "", location.pathname + query);
    var url = old.getAttribute("ws-connect");
    var fresh = document.createElement("div");
    fresh.id = "live-stream";
    fresh.hidden = true;
    fresh.setAttribute("hx-ext", "ws");
    fresh.setAttribute("ws-connect", url.split("?")[0] + query);
    old.removeAttribute("id");
    old.parentNode.insertBefore(fresh, old);
    htmx.remove(old); // closes its socket
    clearTimeout(live.timer);
    live.retries = 0;
    setLive("connecting", "connecting…");
    var list = $("capture-list");
    if (list) { list.setAttribute("aria-busy", "true"); }
    htmx.process(fresh);
    var clear = form.querySelector(".clear-filters");
    if (clear) { clear.hidden = !query; }
    var back = document.querySelector("a.back");
    if (back) {
      var base = back.getAttribute("href").split("?")[0] + query;
      back.setAttribute("href", base);
      back.setAttribute("hx-get", base);
    }
  }

  function clearFilters() {
    var form = $("filters");
    if (!form) { return; }
    FILTERS.forEach(function (name) { if (form.elements[name]) { form.elements[name].value = ""; } });
    applyFilters();
  }

  document.addEventListener("input", function (event) {
    if (event.target.id === "filter-q") {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(applyFilters, 250);
    }
  });
  document.addEventListener("change", function (event) {
    if (event.target.closest && event.target.closest("#filters")) { applyFilters(); }
  });
  document.addEventListener("submit", function (event) {
    if (event.target.id === "filters") {
      event.preventDefault();
      applyFilters();
    }
  });
  // A capture opened from elsewhere (a timeline link) keeps the filters in the address.
  document.addEventListener("htmx:pushedIntoHistory", function () {
    var query = currentQuery();
    if (query && location.search !== query) {
      history.replaceState(history.state, "", location.pathname + query);
    }
  });

  // --- keyboard -------------------------------------------------------------------------------

  function rowsStart() {
    var list = $("capture-list");
    return list && list.querySelector("li.capture");
  }

  function move(step, from) {
    var current = from || rowOf(selectedId);
    var next;
    if (!current || !document.body.contains(current)) {
      next = rowsStart();
    } else {
      next = step > 0 ? current.nextElementSibling : current.previousElementSibling;
      if (next && !next.classList.contains("capture")) { next = null; }
    }
    if (!next) { return; }
    var link = next.firstElementChild;
    link.focus({ preventScroll: true });
    next.scrollIntoView({ block: "nearest" });
    link.click();
  }

  function closeMenus() {
    var closed = false;
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      menu.open = false;
      menu.querySelector("summary").focus();
      closed = true;
    });
    return closed;
  }

  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    var field = target.closest && target.closest("input, textarea, select, [contenteditable]");
    if (event.key === "Escape") {
      if (target.id === "filter-q") {
        // Leave the search (the browser would clear it: the filter stays).
        event.preventDefault();
        var row = rowOf(selectedId) || rowsStart();
        if (row) { row.firstElementChild.focus(); } else { target.blur(); }
        return;
      }
      if (!document.querySelector("dialog[open]") && closeMenus()) { event.preventDefault(); }
      return;
    }
    if (field || document.querySelector("dialog[open]")) { return; }
    if (event.key === "/") {
      var search = $("filter-q");
      if (search) {
        event.preventDefault();
        search.focus();
        search.select();
      }
    } else if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      move(event.key === "j" ? 1 : -1);
    } else if ((event.key === "ArrowDown" || event.key === "ArrowUp") && target.closest("#capture-list")) {
      event.preventDefault();
      move(event.key === "ArrowDown" ? 1 : -1, target.closest("li.capture"));
    }
  });

  // --- the Bins menu: this browser's bins (localStorage only), rename, new, export ------------

  var STORE = "inspector.bins";
  var KEEP_BINS = 30;

  function storedBins() {
    try {
      var bins = JSON.parse(localStorage.getItem(STORE) || "[]");
      return Array.isArray(bins) ? bins.filter(function (b) { return b && typeof b.token === "string"; }) : [];
    } catch (e) {
      return [];
    }
  }

  function rememberBin() {
    var title = $("bin-title");
    if (!title) { return; }
    var token = title.getAttribute("data-token");
    var bins = storedBins().filter(function (b) { return b.token !== token; });
    bins.unshift({ token: token, name: title.getAttribute("data-name") || "", seen: Date.now() });
    bins = bins.slice(0, KEEP_BINS);
    try { localStorage.setItem(STORE, JSON.stringify(bins)); } catch (e) { /* private mode */ }
    showBins(bins, token);
  }

  function showBins(bins, current) {
    var list = $("bin-history");
    if (!list) { return; }
    var items = bins.map(function (b) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "/bins/" + encodeURIComponent(b.token) + "/";
      var name = document.createElement("span");
      name.className = "bin-name";
      name.textContent = b.name || "Unnamed bin";
      var code = document.createElement("code");
      code.textContent = b.token.slice(0, 8);
      a.append(name, " ", code);
      li.append(a);
      if (b.token === current) {
        li.setAttribute("aria-current", "page");
        var note = document.createElement("span");
        note.className = "current-mark";
        note.textContent = "(this bin)";
        li.append(" ", note);
      }
      return li;
    });
    list.replaceChildren.apply(list, items);
  }

  function renamed(name) {
    var title = $("bin-title");
    if (!title) { return; }
    var token = title.getAttribute("data-token");
    var shown = name || "Bin " + token.slice(0, 8);
    if (title.getAttribute("data-name") !== name) {
      title.setAttribute("data-name", name);
      title.textContent = shown;
    }
    document.title = shown + " · Webhook Inspector";
    var field = $("bin-name");
    if (field && document.activeElement !== field) { field.value = name; }
    rememberBin();
  }

  var lastSaved = null;

  function savedSettings() {
    var saved = document.querySelector("#settings .saved");
    if (!saved || saved === lastSaved) { return false; }
    lastSaved = saved;
    return true;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "bin-title") {
      // outerHTML: the swapped-in title is a new element.
      var title = $("bin-title");
      renamed(title ? title.getAttribute("data-name") || "" : "");
      var error = $("rename-error");
      if (!error || error.hidden) { $("bin-name").value = title.getAttribute("data-name") || ""; }
    } else if (savedSettings()) {
      // Saved in the settings panel, the name among the rest.
      var field = $("f-name");
      if (field) { renamed(field.value.trim()); }
    } else if (target && target.id === "detail") {
      selectFromDetail();
      onDetailShown(event);
    }
  });

  // --- the phone: the list, or the open capture and "Back to the list" ------------------------

  function onDetailShown(event) {
    if (!PHONE.matches) { return; }
    var open = document.querySelector("#detail .capture-detail");
    var detail = $("detail");
    if (open) {
      // The list is hidden now; the capture is read from its top.
      detail.scrollTop = 0;
      window.scrollTo(0, 0);
      var back = document.querySelector("a.back");
      if (back && document.activeElement && !document.activeElement.offsetParent) { back.focus(); }
    } else {
      var row = rowOf(lastOpened) || rowsStart();
      if (row) {
        row.scrollIntoView({ block: "center" });
        row.firstElementChild.focus({ preventScroll: true });
      }
    }
  }

  // --- Clear, confirmed -----------------------------------------------------------------------

  function askClear() {
    var dialog = $("clear-dialog");
    if (!dialog || !dialog.showModal) { return false; }
    var counts = $("capture-counts");
    var count = dialog.querySelector("[data-clear-count]");
    if (counts && count) { count.textContent = counts.getAttribute("data-kept"); }
    dialog.showModal();
    return true;
  }

  document.addEventListener("htmx:afterRequest", function (event) {
    var form = event.detail.elt;
    if (form && form.closest && form.closest("#clear-dialog")) {
      $("clear-dialog").close();
      // The live stream empties the list; without one, the page is read again.
      if (event.detail.successful && $("live-status").getAttribute("data-state") !== "open") {
        location.reload();
      }
    }
  });

  // --- clicks ---------------------------------------------------------------------------------

  document.addEventListener("click", function (event) {
    var target = event.target;
    // A click outside an open menu closes it.
    document.querySelectorAll("details.menu[open]").forEach(function (menu) {
      if (!menu.contains(target)) { menu.open = false; }
    });
    var button = target.closest("[data-copy]");
    if (button) {
      copy(button);
      return;
    }
    if (target.closest("[data-clear]")) {
      if (askClear()) { event.preventDefault(); }
      return;
    }
    var close = target.closest("[data-dialog-close]");
    if (close && close.closest("dialog")) {
      close.closest("dialog").close();
      return;
    }
    if (target.closest("[data-clear-filters]")) {
      event.preventDefault();
      clearFilters();
      var search = $("filter-q");
      if (search) { search.focus(); }
      return;
    }
    if (target.id === "live-retry") {
      if (!live.connecting) { reconnect(); }
      return;
    }
    var row = target.closest("li.capture");
    if (row) { select(row.getAttribute("data-id")); }
  });

  function pageShown() {
    selectFromDetail();
    localize(document);
    rememberBin();
  }
  document.addEventListener("DOMContentLoaded", pageShown);
  // Back and forward: htmx puts the page the server sent in place of this one.
  document.addEventListener("htmx:historyRestore", pageShown);
})();
