// choreo flows: niceties on top of pages that work without them.
"use strict";
(function () {
  // Copy buttons: shown only when the script runs.
  document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
    var target = document.getElementById(b.dataset.copy);
    if (!target || !navigator.clipboard) return;
    b.hidden = false;
    b.setAttribute("aria-label", "Copy " + target.textContent.trim());
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(target.textContent.trim()).then(function () {
        b.textContent = "Copied";
        b.classList.add("done");
        setTimeout(function () { b.textContent = "Copy"; b.classList.remove("done"); }, 1500);
      });
    });
  });

  // Times in the reader's own time zone; the UTC text stays as the title.
  document.querySelectorAll("time[data-local]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (isNaN(d) || d.getUTCFullYear() < 1970) return;
    t.title = t.textContent;
    t.textContent = d.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric",
      hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3
    });
  });

  // Filters: empty fields stay out of the address. (They apply on Show,
  // not on change: a keyboard user moving through a select would leave
  // the page at every step.)
  document.querySelectorAll("form[data-compact]").forEach(function (f) {
    f.addEventListener("submit", function () {
      f.querySelectorAll("input, select").forEach(function (el) {
        if (el.name && el.value === "") el.disabled = true;
      });
    });
    // Coming back to the page (the back button), the fields work again.
    window.addEventListener("pageshow", function () {
      f.querySelectorAll("[disabled]").forEach(function (el) { el.disabled = false; });
    });
  });

  // The diagram and its table: pointing at a row lights up its twin.
  var rows = document.querySelectorAll("[data-row]");
  rows.forEach(function (el) {
    var n = el.getAttribute("data-row");
    function light(on) {
      document.querySelectorAll('[data-row="' + n + '"]').forEach(function (o) {
        o.classList.toggle("hl", on);
      });
    }
    el.addEventListener("mouseenter", function () { light(true); });
    el.addEventListener("mouseleave", function () { light(false); });
  });
})();
