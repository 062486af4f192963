// The open capture (templates/bins/_detail.html): copy as cURL / HTTPie / Python / fetch, the
// resend form's "edited" mark, failures shown where they happened, and the pane after Delete.
// No inline script, no innerHTML: whatever a capture holds stays text.
(function () {
  "use strict";

  // --- copy as ----------------------------------------------------------------------------

  var copyTimer = null;

  function say(status, text, failed) {
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("failed", Boolean(failed));
    clearTimeout(copyTimer);
    if (!failed) {
      copyTimer = setTimeout(function () { status.textContent = ""; }, 4000);
    }
  }

  function snippetText(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/plain" } })
      .then(function (response) {
        return response.text().then(function (text) {
          if (!response.ok) {
            var why = response.status === 404
              ? "this request was deleted (or the server has no snippet endpoint)"
              : "the server answered " + response.status;
            var error = new Error(why);
            error.fromServer = true;
            throw error;
          }
          return text;
        });
      }, function () {
        var error = new Error("could not reach the server");
        error.fromServer = true;
        throw error;
      });
  }

  // Where the clipboard cannot be written (a plain-http address other than localhost), the
  // command is shown in a field, selected, to copy by hand.
  function showByHand(group, name, text) {
    var field = group.parentNode.querySelector("textarea.snippet-by-hand");
    if (!field) {
      field = document.createElement("textarea");
      field.className = "snippet-by-hand";
      field.readOnly = true;
      field.rows = 6;
      field.spellcheck = false;
      group.parentNode.insertBefore(field, group.nextSibling);
    }
    field.setAttribute("aria-label", name + " command");
    field.value = text;
    field.focus();
    field.select();
  }

  function copySnippet(button) {
    var group = button.closest(".copy-as");
    var status = group.querySelector(".copy-status");
    var name = button.getAttribute("data-snippet-name");
    var text = snippetText(button.getAttribute("data-snippet-url"));
    var clip = navigator.clipboard;
    var written;
    if (clip && window.isSecureContext && window.ClipboardItem && clip.write) {
      // The clipboard item is made in the click itself (Safari wants that); its text follows.
      var blob = text.then(function (t) { return new Blob([t], { type: "text/plain" }); });
      written = clip.write([new ClipboardItem({ "text/plain": blob })]).catch(function (error) {
        // A browser without promised clipboard items: write the text once it is here.
        return text.then(function (t) { return clip.writeText(t); }, function () { throw error; });
      });
    } else if (clip && window.isSecureContext) {
      written = text.then(function (t) { return clip.writeText(t); });
    } else {
      written = text.then(function (t) {
        showByHand(group, name, t);
        return "by hand";
      });
    }
    say(status, "Copying the " + name + " command…");
    written.then(function (how) {
      say(status, how === "by hand"
        ? "The " + name + " command is selected below: copy it with Ctrl+C or ⌘C."
        : "Copied the " + name + " command.");
    }, function () {
      text.then(function (t) {
        showByHand(group, name, t);
        say(status, "Could not write to the clipboard: the " + name +
          " command is selected below to copy by hand.", true);
      }, function (error) {
        say(status, "Could not copy as " + name + ": " + error.message + ".", true);
      });
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".capture-detail [data-snippet-url]");
    if (button) { copySnippet(button); }
  });

  // --- failures that htmx does not swap in --------------------------------------------------
  // The page's htmx config swaps 4xx answers (the views answer a partial that says what went
  // wrong); a 5xx, a network failure or a whole page (Django's CSRF failure page, a proxy's
  // error page) would show nothing or the wrong thing, so they are said here, by the control.

  function errorBox(elt) {
    var scope = elt && elt.closest && elt.closest("[data-request-errors]");
    return scope ? scope.querySelector(".request-error") : null;
  }

  function inPane(event) {
    var elt = event.detail && event.detail.elt;
    return elt && elt.closest && elt.closest(".capture-detail") ? elt : null;
  }

  function sayFailure(elt, text) {
    var box = errorBox(elt);
    if (box) { box.textContent = text; }
  }

  function statusWords(xhr) {
    return xhr.status + (xhr.statusText ? " " + xhr.statusText : "");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = inPane(event);
    var box = elt && errorBox(elt);
    if (box) { box.textContent = ""; }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = inPane(event);
    var xhr = event.detail.xhr;
    if (!elt || !xhr || xhr.status < 400 || xhr.status >= 500) { return; }
    if (/^\s*<!doctype/i.test(xhr.responseText || "")) {
      event.detail.shouldSwap = false;
      sayFailure(elt, "The server refused this (" + statusWords(xhr) + "): nothing was done. " +
        "Reload the page and try again.");
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    var elt = inPane(event);
    var xhr = event.detail.xhr;
    if (elt && xhr && xhr.status >= 500) {
      sayFailure(elt, "The server failed (" + statusWords(xhr) + "). Try again; if it keeps " +
        "failing, the server's log says why.");
    }
  });

  function unreachable(event) {
    var elt = inPane(event);
    if (elt) {
      sayFailure(elt, "Could not reach the server (network error or timeout): the server may " +
        "not have got this. Check the connection, then try again.");
    }
  }
  document.addEventListener("htmx:sendError", unreachable);
  document.addEventListener("htmx:timeout", unreachable);

  // --- the resend form says when it sends edits ----------------------------------------------

  var EDIT_FIELDS = { method: "method", headers: "headers", body: "body" };

  function lines(text) { return text.replace(/\r\n?/g, "\n"); }

  function markEdits(form) {
    var state = form.querySelector("[data-edit-state]");
    if (!state) { return; }
    var changed = [];
    Object.keys(EDIT_FIELDS).forEach(function (name) {
      var field = form.elements[name];
      if (field && lines(field.value).trim() !== lines(field.defaultValue).trim()) {
        changed.push(EDIT_FIELDS[name]);
      }
    });
    state.textContent = changed.length ? "(edited: " + changed.join(", ") + ")" : "";
    form.classList.toggle("edited", changed.length > 0);
  }

  document.addEventListener("input", function (event) {
    var form = event.target.closest && event.target.closest(".resend-form");
    if (form) { markEdits(form); }
  });
  document.addEventListener("reset", function (event) {
    var form = event.target;
    if (form.classList && form.classList.contains("resend-form")) {
      setTimeout(function () { markEdits(form); }, 0);  // the fields are reset after the event
    }
  });

  // --- another capture opens at its top ----------------------------------------------------
  // The pane is one scrolling element whose content is replaced: without this, the next
  // capture would open as far down as the last one was read. The same capture shown anew (its
  // signature checked again) keeps its place.

  var shownId = null;
  function openedAtTop() {
    var pane = document.getElementById("detail");
    var article = pane && pane.querySelector(".capture-detail");
    var id = article ? article.getAttribute("data-id") : null;
    if (pane && id !== shownId) { pane.scrollTop = 0; }
    shownId = id;
  }
  document.addEventListener("DOMContentLoaded", function () {
    var article = document.querySelector("#detail .capture-detail");
    shownId = article ? article.getAttribute("data-id") : null;
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "detail") { openedAtTop(); }
  });

  // --- after Delete ------------------------------------------------------------------------
  // The server announces the delete (every open page gets the list again); this page drops
  // the row at once and puts the focus on what replaced the Delete button.

  document.addEventListener("htmx:afterSwap", function () {
    var note = document.querySelector("#detail .placeholder .deleted:not([data-done])");
    if (!note) { return; }
    note.setAttribute("data-done", "");
    var id = note.getAttribute("data-deleted");
    var row = id && document.getElementById("capture-" + id);
    if (row) { row.remove(); }
    note.focus();
  });
})();
