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

  // The category bar scrolls sideways on a phone: bring the current category into it, not left off screen. Only the
  // bar moves (scrollLeft): scrollIntoView would scroll the page as well.
  var navList = document.querySelector(".category-nav-list");
  var current = navList && navList.querySelector("[aria-current]");
  if (current && navList.scrollWidth > navList.clientWidth) {
    var item = current.parentElement;
    navList.scrollLeft = item.offsetLeft - navList.offsetLeft - (navList.clientWidth - item.offsetWidth) / 2;
  }

  // Sort select: apply on change (a noscript button covers the no-JS case). Delegated, so forms that a script
  // puts in later are covered too; requestSubmit lets such a script take the submission over. A choice made with
  // the keyboard, where each arrow key is a change, applies on Enter or when the focus leaves the select, not at
  // the first arrow (WCAG 3.2.2).
  var keyed = null;

  function autosubmits(element) {
    return element.matches && element.matches("form[data-autosubmit] select");
  }

  function apply(select) {
    keyed = null;
    select.dataset.applied = select.value;
    if (select.form.requestSubmit) select.form.requestSubmit();
    else select.form.submit();
  }

  document.addEventListener("focusin", function (event) {
    if (autosubmits(event.target)) event.target.dataset.applied = event.target.value;
  });
  document.addEventListener("keydown", function (event) {
    var select = event.target;
    if (!autosubmits(select)) return;
    if (event.key === "Enter") {
      if (select.value !== select.dataset.applied) {
        event.preventDefault();
        apply(select);
      }
    } else if (event.key !== "Tab" && event.key !== "Escape") {
      keyed = select;  // arrows, Home, End, typing a letter
    }
  });
  document.addEventListener("change", function (event) {
    if (autosubmits(event.target) && keyed !== event.target) apply(event.target);
  });
  // Back to a page whose order the shopper then changed: the browser shows the changed choice again (from its page
  // cache, or by restoring the form) beside the list the page was served with, and choosing it again did nothing. The
  // page's own choice, as it was served, is the one that holds.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
      for (var i = 0; i < select.options.length; i++) {
        if (select.options[i].defaultSelected) {
          select.selectedIndex = i;
          return;
        }
      }
      select.selectedIndex = 0;
    });
  });
  document.addEventListener("focusout", function (event) {
    var select = event.target;
    if (keyed === select) {
      keyed = null;
      if (select.value !== select.dataset.applied) apply(select);
    }
  });
})();
