// Keyboard-first review: 1-9 pick an alternative, Enter confirms, S skips, / searches categories, U undoes.
(function () {
  "use strict";
  var form = document.getElementById("review-form");
  var undoForm = document.getElementById("undo-form");
  var category = document.getElementById("category");
  var action = document.getElementById("action");
  var chosen = document.getElementById("chosen");
  var search = document.getElementById("search");
  var results = document.getElementById("search-results");
  var data = document.getElementById("categories");
  var categories = data ? JSON.parse(data.textContent) : [];

  function pick(code) {
    if (!category) return;
    category.value = code;
    chosen.textContent = code;
    document.querySelectorAll(".alt").forEach(function (li) {
      li.classList.toggle("picked", li.getAttribute("data-code") === code);
    });
  }

  function submit(kind) {
    if (!form) return;
    if (kind === "skip") {
      action.value = "skip";
    } else {
      if (!category.value) { chosen.textContent = "(pick a category first: 1-9 or /)"; return; }
      action.value = category.value === category.getAttribute("data-suggested") ? "confirm" : "correct";
    }
    form.submit();
  }

  function showMatches() {
    var q = search.value.trim().toLowerCase();
    results.innerHTML = "";
    if (!q) return;
    categories.filter(function (c) {
      return c.code.toLowerCase().indexOf(q) === 0 || c.name.toLowerCase().indexOf(q) >= 0;
    }).slice(0, 12).forEach(function (c) {
      var li = document.createElement("li");
      li.textContent = c.code + " · " + c.name;
      li.setAttribute("data-code", c.code);
      li.addEventListener("click", function () { pick(c.code); search.value = ""; results.innerHTML = ""; search.blur(); });
      results.appendChild(li);
    });
  }

  document.querySelectorAll(".alt").forEach(function (li) {
    li.addEventListener("click", function () { pick(li.getAttribute("data-code")); });
  });
  if (form) {
    form.addEventListener("submit", function (e) { e.preventDefault(); submit("confirm"); });
    document.getElementById("skip").addEventListener("click", function () { submit("skip"); });
  }
  if (search) {
    search.addEventListener("input", showMatches);
    search.addEventListener("keydown", function (e) {
      if (e.key === "Enter") {
        e.preventDefault();
        var first = results.querySelector("li");
        if (first) { pick(first.getAttribute("data-code")); }
        search.value = ""; results.innerHTML = ""; search.blur();
      } else if (e.key === "Escape") {
        search.value = ""; results.innerHTML = ""; search.blur();
      }
    });
  }

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA")) {
      if (e.key === "Escape") t.blur();
      return;
    }
    if (/^[1-9]$/.test(e.key)) {
      var alt = document.querySelectorAll(".alt")[parseInt(e.key, 10) - 1];
      if (alt) { pick(alt.getAttribute("data-code")); e.preventDefault(); }
    } else if (e.key === "Enter") {
      e.preventDefault(); submit("confirm");
    } else if (e.key === "s" || e.key === "S") {
      e.preventDefault(); submit("skip");
    } else if (e.key === "/") {
      if (search) { e.preventDefault(); search.focus(); }
    } else if (e.key === "u" || e.key === "U") {
      if (undoForm) { e.preventDefault(); undoForm.submit(); }
    }
  });
})();
