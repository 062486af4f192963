// The bin's settings panel: open and close it, presets, steps and rules added, removed and
// reordered, the secret revealed on request. The server renders every part (new rules and
// steps are copies of its <template>s) and checks everything on save; this script only moves
// form fields around. No inline script, no innerHTML: whatever a bin holds stays text.
(function () {
  "use strict";

  var PRESETS = {
    "always-200": { status: "200", body: '{"ok": true}', delay: "0", steps: [] },
    "fail-3": {
      status: "200", body: '{"ok": true}', delay: "0", per: "event",
      steps: [{ status: "500", times: "3" }, { status: "200" }]
    },
    "always-500": { status: "500", body: '{"ok": false}', delay: "0", steps: [] },
    // The status a provider would get if it waited 30 s: most give up sooner (GitHub after 10 s).
    "timeout": { status: "200", body: '{"ok": true}', delay: "30000", steps: [] },
    "gone": { status: "410", body: '{"error": "gone"}', delay: "0", steps: [] }
  };

  var opener = null;
  var counter = 0;

  // A key for a new rule or step: unique in the form, [a-z0-9]{1,12} as the server wants.
  function newKey() {
    counter += 1;
    return "n" + Date.now().toString(36).slice(-6) + counter;
  }

  function form() { return document.getElementById("settings-form"); }

  function changed() {
    var f = form();
    if (f) { f.dispatchEvent(new Event("settings-changed", { bubbles: true })); }
  }

  function announce(text) {
    var f = form();
    var live = f && f.querySelector("[data-announce]");
    if (live) { live.textContent = text; }
  }

  // --- the panel ------------------------------------------------------------------------------

  function openSettings(section) {
    var dialog = document.getElementById("settings");
    opener = document.activeElement;
    // Fetched on every opening: the form shows what is stored now (the API may have changed it).
    // The last one goes first, so nobody types into a form about to be replaced.
    var loading = document.createElement("p");
    loading.className = "hint";
    loading.textContent = "Loading…";
    document.getElementById("settings-body").replaceChildren(loading);
    if (!dialog.open) { dialog.showModal(); }
    htmx.ajax("GET", dialog.getAttribute("data-url"), { target: "#settings-body", swap: "innerHTML" })
      .then(function () {
        var target = section && document.getElementById("settings-" + section);
        if (target) {
          target.scrollIntoView({ block: "start" });
          var field = target.querySelector("select, input");
          if (field) { field.focus(); }
        } else {
          var name = document.getElementById("f-name");
          if (name) { name.focus(); }
        }
      });
  }

  document.addEventListener("close", function (event) {
    if (event.target.id === "settings" && opener && document.contains(opener)) { opener.focus(); }
  }, true);

  // --- parts: rules and steps -----------------------------------------------------------------

  // A copy of a server-rendered <template>, its placeholders replaced in every attribute.
  function instantiate(templateId, replacements) {
    var fragment = document.getElementById(templateId).content.cloneNode(true);
    fragment.querySelectorAll("*").forEach(function (el) {
      Array.prototype.forEach.call(el.attributes, function (attr) {
        var value = attr.value;
        Object.keys(replacements).forEach(function (from) {
          value = value.split(from).join(replacements[from]);
        });
        if (value !== attr.value) { attr.value = value; }
      });
    });
    return fragment.firstElementChild;
  }

  function partTitle(li) {
    var title = li.querySelector(":scope > fieldset > legend, :scope > .part-head .part-title");
    return title ? title.textContent.trim() : "";
  }

  function renumber() {
    var f = form();
    if (!f) { return; }
    f.querySelectorAll("#settings-rules > li.rule").forEach(function (li, i) {
      li.querySelector(":scope > fieldset > legend .part-pos").textContent = String(i + 1);
      var name = li.querySelector("[data-rule-name]");
      if (name) { name.placeholder = "rule " + (i + 1); }
    });
    f.querySelectorAll(".steps-list").forEach(function (list) {
      Array.prototype.forEach.call(list.children, function (li, i) {
        li.querySelector(":scope > .part-head .part-pos").textContent = String(i + 1);
      });
    });
  }

  function addStep(editor, values) {
    var li = instantiate("settings-step-template", {
      "__prefix__": editor.getAttribute("data-prefix"),
      "__step__": newKey()
    });
    editor.querySelector(".steps-list").appendChild(li);
    Object.keys(values || {}).forEach(function (name) {
      li.querySelector("[name$='-" + name + "']").value = values[name];
    });
    return li;
  }

  function setSteps(editor, steps, per) {
    editor.querySelector(".steps-list").replaceChildren();
    steps.forEach(function (step) { addStep(editor, step); });
    if (per) { editor.querySelector("select[name$='-per']").value = per; }
  }

  function field(editor, name) {
    return editor.querySelector("[name='" + editor.getAttribute("data-prefix") + "-" + name + "']");
  }

  function applyPreset(f, name) {
    var preset = PRESETS[name];
    var editor = f.querySelector(".response-editor[data-prefix='response']");
    field(editor, "status").value = preset.status;
    field(editor, "content_type").value = "application/json";
    field(editor, "headers").value = "";
    field(editor, "body").value = preset.body;
    field(editor, "delay_ms").value = preset.delay;
    setSteps(editor, preset.steps, preset.per);
    renumber();
    changed();
    announce("Preset filled in: " + name.replace(/-/g, " ") + ". Save to apply it.");
  }

  function failThenSucceed(editor) {
    var times = editor.querySelector("[data-fail-times]").value || "3";
    var status = editor.querySelector("[data-fail-status]").value || "500";
    var success = field(editor, "status").value.trim() || "200";
    setSteps(editor, [{ status: status, times: times }, { status: success }], "event");
    renumber();
    changed();
    announce("Steps set: " + status + " " + times + " times for each event, then " + success + ".");
  }

  function move(li, up) {
    var other = up ? li.previousElementSibling : li.nextElementSibling;
    if (!other) { return false; }
    li.parentNode.insertBefore(up ? li : other, up ? other : li);
    return true;
  }

  document.addEventListener("click", function (event) {
    var open = event.target.closest("[data-settings-open]");
    if (open && document.getElementById("settings")) {
      event.preventDefault();
      openSettings(open.getAttribute("data-settings-open"));
      return;
    }
    var close = event.target.closest("[data-settings-close]");
    if (close && close.closest("dialog")) {
      event.preventDefault();
      close.closest("dialog").close();
      return;
    }
    var button = event.target.closest("#settings-form button[type=button]");
    if (!button) { return; }
    var f = form();
    var editor = button.closest(".response-editor");
    var li = button.closest("li.part");
    if (button.hasAttribute("data-preset")) {
      applyPreset(f, button.getAttribute("data-preset"));
    } else if (button.hasAttribute("data-fail-then")) {
      failThenSucceed(editor);
    } else if (button.hasAttribute("data-add-step")) {
      var step = addStep(editor);
      renumber();
      changed();
      step.querySelector("input[name$='-status']").focus();
    } else if (button.hasAttribute("data-add-rule")) {
      var rule = instantiate("settings-rule-template", { "__rule__": newKey() });
      f.querySelector("#settings-rules").appendChild(rule);
      renumber();
      changed();
      rule.querySelector("[data-rule-name]").focus();
    } else if (button.hasAttribute("data-move")) {
      var up = button.getAttribute("data-move") === "up";
      if (move(li, up)) {
        renumber();
        changed();
        button.focus(); // moving the part took the focus away from its button
        announce(partTitle(li) + ", moved " + (up ? "up" : "down") + ".");
      }
    } else if (button.hasAttribute("data-remove")) {
      var title = partTitle(li);
      var next = li.nextElementSibling || li.previousElementSibling;
      var list = li.parentNode;
      li.remove();
      renumber();
      changed();
      var focus = next ? next.querySelector("button[data-remove]") : null;
      (focus || list.parentNode.querySelector("[data-add-rule], [data-add-step]")).focus();
      announce(title + " removed. Save to apply.");
    } else if (button.hasAttribute("data-reveal")) {
      var secret = document.getElementById(button.getAttribute("data-reveal"));
      var shown = secret.type === "password";
      secret.type = shown ? "text" : "password";
      button.textContent = shown ? "Hide" : "Reveal";
      button.setAttribute("aria-pressed", shown ? "true" : "false");
    }
  });

  document.addEventListener("input", function (event) {
    var name = event.target.closest("#settings-form [data-rule-name]");
    if (name) {
      var legend = name.closest("fieldset").querySelector(":scope > legend .rule-name");
      legend.textContent = name.value.trim() ? ": " + name.value.trim() : "";
    }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id !== "f-signature-scheme") { return; }
    var f = form();
    var scheme = event.target.value;
    f.querySelector("[data-signature-fields]").hidden = !scheme;
    f.querySelector("[data-hmac-fields]").hidden = scheme !== "hmac";
  });

  // After a save: point at the field an error names, or say it is saved.
  document.addEventListener("htmx:afterSwap", function (event) {
    var f = event.target;
    if (f.id !== "settings-form") { return; } // the form answered by a save (not a list update)
    var error = f.querySelector("#settings-error");
    if (error) {
      var path = error.getAttribute("data-error-field");
      var bad = path && f.querySelector("[data-field='" + CSS.escape(path) + "']");
      if (bad) {
        bad.setAttribute("aria-invalid", "true");
        bad.setAttribute("aria-describedby", "settings-error");
        if (!bad.closest("[hidden]")) { bad.focus(); }
      } else {
        error.tabIndex = -1;
        error.focus();
      }
      return;
    }
    var saved = f.querySelector(".saved");
    if (saved) { saved.tabIndex = -1; saved.focus(); }
  });
})();
