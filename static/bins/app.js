// The inspector page's own behaviour: copy the capture URL, mark the open capture, show the
// state of the live connection. No inline script anywhere (the CSP forbids it).
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) {
      var field = document.querySelector(button.getAttribute("data-copy"));
      var done = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done);
      } else {
        field.select();
        document.execCommand("copy");
        done();
      }
      return;
    }
    var row = event.target.closest("li.capture");
    if (row) { select(row.getAttribute("data-id")); }
  });

  function select(id) {
    document.querySelectorAll("li.capture.selected").forEach(function (el) {
      el.classList.remove("selected");
    });
    var row = id && document.getElementById("capture-" + id);
    if (row) { row.classList.add("selected"); }
  }

  function selectFromDetail() {
    var detail = document.querySelector(".capture-detail");
    select(detail && detail.getAttribute("data-id"));
  }

  // The server keeps the newest CAPTURES_PER_BIN; so does the open page.
  function trimList() {
    var list = document.getElementById("capture-list");
    var limit = list && parseInt(list.getAttribute("data-limit"), 10);
    if (!limit) { return; }
    var rows = list.querySelectorAll("li.capture");
    for (var i = limit; i < rows.length; i++) { rows[i].remove(); }
  }
  document.addEventListener("htmx:wsAfterMessage", trimList);

  function setLive(state, text) {
    var el = document.getElementById("live-status");
    if (el) { el.setAttribute("data-state", state); el.textContent = text; }
  }

  document.addEventListener("htmx:wsOpen", function () { setLive("open", "live"); });
  document.addEventListener("htmx:wsClose", function () { setLive("closed", "reconnecting…"); });
  document.addEventListener("htmx:wsError", function () { setLive("closed", "reconnecting…"); });
  // Stored captures changed (signatures checked again): show the open one anew.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "changed") {
      var detail = document.querySelector(".capture-detail");
      if (detail && window.htmx) {
        htmx.ajax("GET", location.pathname, { target: "#detail", swap: "innerHTML" });
      }
    }
  });
  // The list is swapped whole on (re)connect: keep the open capture marked.
  document.addEventListener("htmx:oobAfterSwap", selectFromDetail);
  document.addEventListener("htmx:wsAfterMessage", selectFromDetail);
  document.addEventListener("htmx:afterSwap", selectFromDetail);
  document.addEventListener("DOMContentLoaded", selectFromDetail);
})();
