(function () {
  "use strict";
  // Progressive enhancement only: the report reads the same without JavaScript.
  var root = document.documentElement;
  root.classList.add("js");
  // Print everything: collapsed sections (tables, examples) open for printing, then close again.
  window.addEventListener("beforeprint", function () {
    document.querySelectorAll("details:not([open])").forEach(function (d) {
      d.setAttribute("data-print-opened", "");
      d.open = true;
    });
  });
  window.addEventListener("afterprint", function () {
    document.querySelectorAll("details[data-print-opened]").forEach(function (d) {
      d.open = false;
      d.removeAttribute("data-print-opened");
    });
  });
  // "Expand all" for the examples section.
  document.querySelectorAll("[data-toggle-all]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var scope = document.getElementById(button.getAttribute("data-toggle-all"));
      var items = scope.querySelectorAll("details");
      var open = Array.prototype.some.call(items, function (d) { return !d.open; });
      items.forEach(function (d) { d.open = open; });
      button.textContent = open ? "Collapse all" : "Expand all";
    });
  });
  root.setAttribute("data-ready", "1");
})();
