// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Gallery: a thumbnail swaps the main photo instead of opening the file.
  document.querySelectorAll("[data-gallery]").forEach(function (gallery) {
    var main = gallery.querySelector("[data-gallery-main]");
    if (!main) return;
    gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (thumb) {
      thumb.addEventListener("click", function (event) {
        if (event.metaKey || event.ctrlKey || event.shiftKey) return; // let "open in new tab" work
        event.preventDefault();
        main.src = thumb.href;
        main.width = thumb.dataset.width;
        main.height = thumb.dataset.height;
        gallery.querySelectorAll("[data-gallery-thumb]").forEach(function (other) {
          other.removeAttribute("aria-current");
        });
        thumb.setAttribute("aria-current", "true");
      });
    });
  });

  // Sort select: apply on change (a noscript button covers the no-JS case). Delegated, so forms that a script
  // puts in later are covered too; requestSubmit lets such a script take the submission over.
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.matches || !select.matches("form[data-autosubmit] select")) return;
    if (select.form.requestSubmit) select.form.requestSubmit();
    else select.form.submit();
  });
})();
