// Search by photo, enhanced: drag-and-drop and paste, upload progress, region boxes, and refining (category
// chips, price, sort, "show more") in place. The page works without this script (plain form POST, GET links).
//
// The photo is kept only in this page's memory (`photo`), never on the server: a new box sends it again. Refining
// needs no photo: its links carry the token of the query's kept vector (search.services.query_vector_keep).
(function () {
  "use strict";

  var root = document.querySelector("[data-photo-search]");
  if (!root) return;

  // Element.closest, also on a form with a field named "closest" (the refine form's), whose own property that
  // field is: the submit handlers threw on it, and the browser reloaded the page without the photo.
  function closestTo(node, selector) {
    return node && node.nodeType === 1 ? Element.prototype.closest.call(node, selector) : null;
  }
  var body = root.querySelector("[data-photo-search-body]");
  var progress = root.querySelector("[data-progress]");
  var progressText = root.querySelector("[data-progress-text]");
  var progressBar = root.querySelector("[data-progress-bar]");
  var requestError = root.querySelector("[data-request-error]");
  var announcer = root.querySelector("[data-announce]");
  var maxBytes = parseInt(root.dataset.maxBytes, 10) || Infinity;
  var maxMb = root.dataset.maxMb;
  var minSide = parseInt(root.dataset.minSide, 10) || 1;

  // The photo the current results were found with (a File or Blob) and the size its box coordinates
  // refer to: the upright original's, as the server measured it.
  var photo = null;
  var photoSize = null;
  // The token of the kept query of that photo's search: the refinements of it carry the same one.
  var photoQuery = null;
  // Each search of that photo (the whole photo, a box, another category) by its token, with the box it searched
  // ("" for the whole photo): Back and Forward between them keep the photo on screen.
  var photoBoxes = Object.create(null);
  // A photo chosen in the form but not searched yet; whether the last one chosen was refused (too big, not an
  // image): then "Find lookalikes" must not search the previous photo again in its place.
  var chosen = null;
  var refused = false;
  // The region drawn on the query photo, as fractions of its width and height.
  var region = null;
  var busy = false;
  // How to stop the request in flight (the Cancel button), or null.
  var cancel = null;
  // A search or refinement not answered in this time once sent is given up, and the page is usable again; an
  // upload, however long it takes on a slow link, only once it has made no progress for UPLOAD_STALL_MS.
  var REQUEST_TIMEOUT_MS = 120000;
  var UPLOAD_STALL_MS = 30000;
  // A photo is sent at most this large: the search looks at far fewer pixels (the model's 260, the 800 of the
  // preview, a box's crop of it), and a phone's 12-megapixel photo took minutes to upload on a slow link.
  var SEND_MAX_SIDE = 2048;
  var TOO_SLOW = "The search took too long. Check your connection and try again.";
  var WAIT_TO_CHOOSE = "A search is running. Choose the next photo once it has answered.";
  // The refinements a new search of the same photo carries: from the refine form, or from a link's address.
  var REFINEMENTS = ["min_price", "max_price", "sort", "colour", "currency"];

  // ---------- Choosing a photo ----------

  var TOO_BIG = "The file is larger than " + maxMb + " MB. Please choose a smaller photo.";

  function clientProblem(file) {
    if (!file) return "Choose a photo to search with.";
    if (file.size === 0) return "The file is empty.";
    // A photo this browser can make smaller is checked once it has (searchChosen): a 108-megapixel camera's is sent
    // at a few hundred KB.
    if (file.size > maxBytes && !shrinkable(file)) return TOO_BIG;
    // The server decides by decoding; this only catches the obvious (some phones leave the type empty).
    if (file.type && file.type.indexOf("image/") !== 0) return "That file is not an image.";
    return "";
  }

  function showChosen(file) {
    var form = body.querySelector("[data-photo-form]");
    if (!form) return;
    var problem = clientProblem(file);
    var message = form.querySelector("[data-client-error]");
    var zone = form.querySelector("[data-drop-zone]");
    // The photo's own errors only: a category's ("does not exist any more") still holds for the new photo.
    form.querySelectorAll("[data-photo-error]").forEach(function (el) { el.remove(); });
    // What was said of a photo before ("not a readable image") is not said of this one.
    if (file) requestError.hidden = true;
    message.textContent = problem;
    message.hidden = !problem;
    zone.classList.toggle("is-invalid", Boolean(problem));
    form.querySelectorAll("[data-photo-input]").forEach(function (input) {
      if (problem) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    });
    chosen = problem ? null : file;
    refused = Boolean(file && problem);
    var prompt = zone.querySelector("[data-drop-prompt]");
    var panel = zone.querySelector("[data-drop-chosen]");
    var thumb = zone.querySelector("[data-drop-thumb]");
    if (chosen) {
      // Freed once shown: the page swaps this form out after a search, and the photo may be a large screenshot.
      var url = URL.createObjectURL(chosen);
      var name = zone.querySelector("[data-drop-name]");
      name.textContent = (chosen.name || "Pasted image") + " · " + formatSize(chosen.size);
      thumb.hidden = false;
      thumb.onload = function () { URL.revokeObjectURL(url); };
      // A format this browser cannot show (HEIC outside Safari) is searched all the same: the server reads it.
      thumb.onerror = function () {
        URL.revokeObjectURL(url);
        thumb.hidden = true;
        name.textContent += " · no preview in this browser";
      };
      thumb.src = url;
    } else {
      thumb.removeAttribute("src");
      form.querySelectorAll("[data-photo-input]").forEach(function (input) { input.value = ""; });
    }
    prompt.hidden = Boolean(chosen);
    panel.hidden = !chosen;
  }

  function formatSize(bytes) {
    return bytes < 1024 * 1024 ? Math.max(1, Math.round(bytes / 1024)) + " KB" : (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  root.addEventListener("change", function (event) {
    if (event.target.matches("[data-category]")) refused = false;  // the photo on screen, in another category
    if (!event.target.matches("[data-photo-input]") || !event.target.files.length) return;
    if (busy) {  // the answer replaces this form: the choice would be lost without a word
      event.target.value = "";
      return announce(WAIT_TO_CHOOSE);
    }
    showChosen(event.target.files[0]);
  });
  // A photo chosen before this script ran (on a slow connection, or restored by the browser on Back) is shown too.
  root.querySelectorAll("[data-photo-input]").forEach(function (input) {
    if (input.files && input.files.length) showChosen(input.files[0]);
  });

  function dropZone(event) {
    return closestTo(event.target, "[data-drop-zone]");
  }
  ["dragenter", "dragover"].forEach(function (type) {
    root.addEventListener(type, function (event) {
      var zone = dropZone(event);
      if (!zone) return;
      event.preventDefault();
      zone.classList.add("is-dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    root.addEventListener(type, function (event) {
      var zone = dropZone(event);
      if (zone) zone.classList.remove("is-dragging");
    });
  });
  root.addEventListener("drop", function (event) {
    if (!dropZone(event)) return;
    event.preventDefault();
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    if (busy) return announce(WAIT_TO_CHOOSE);
    showChosen(files[0]);
  });
  // A photo dropped anywhere else on the page (its query photo, the results) is chosen too, rather than opened by
  // the browser in place of the page, which lost the results; during a search it is refused with a word.
  function carriesFiles(event) {
    return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types || [], "Files") !== -1;
  }
  document.addEventListener("dragover", function (event) {
    if (carriesFiles(event)) event.preventDefault();
  });
  document.addEventListener("drop", function (event) {
    if (!carriesFiles(event) || dropZone(event)) return;
    event.preventDefault();
    if (!event.dataTransfer.files.length) return;
    if (busy) return announce(WAIT_TO_CHOOSE);
    showChosen(event.dataTransfer.files[0]);
    var zone = body.querySelector("[data-drop-zone]");
    if (zone) zone.scrollIntoView({ block: "nearest", behavior: scrolling() });
  });

  // Paste anywhere on the page, unless the shopper is pasting text into a text field.
  document.addEventListener("paste", function (event) {
    var target = event.target;
    var types = (event.clipboardData && event.clipboardData.types) || [];
    if (closestTo(target, "input:not([type=file]), textarea, [contenteditable]") &&
        Array.prototype.indexOf.call(types, "text/plain") !== -1) return;  // a name or a price, with a picture of it
    var items = (event.clipboardData && event.clipboardData.items) || [];
    for (var i = 0; i < items.length; i++) {
      if (items[i].kind === "file" && items[i].type.indexOf("image/") === 0) {
        event.preventDefault();
        if (busy) return announce(WAIT_TO_CHOOSE);
        showChosen(items[i].getAsFile());
        var zone = body.querySelector("[data-drop-zone]");
        if (zone) zone.scrollIntoView({ block: "nearest", behavior: scrolling() });
        return;
      }
    }
  });

  // Smooth, unless the shopper asked for less motion (an explicit "smooth" overrides the page's own CSS for that).
  function scrolling() {
    return window.matchMedia("(prefers-reduced-motion: reduce)").matches ? "auto" : "smooth";
  }

  // ---------- Searching ----------

  root.addEventListener("submit", function (event) {
    var form = closestTo(event.target, "[data-photo-form]");
    if (!form) return;
    event.preventDefault();
    if (busy) return;  // a second tap while the first search runs
    var category = form.querySelector("[data-category]");
    category = category ? category.value : "";
    if (chosen) return searchChosen(chosen, category);
    if (refused) return form.querySelector("[data-photo-input]").focus();  // its message says why, and what to do
    if (body.querySelector("[data-region]")) {
      // Under the results without a new photo: the same photo (and box) in the category now selected.
      return resend({ category: category, box: "current", limit: "" });
    }
    if (form.elements.query && form.elements.query.value) {
      // Results opened by their address show no photo to send: the kept search in that category, as without a script.
      var address = new URL(form.getAttribute("action"), location.href);
      address.searchParams.set("query", form.elements.query.value);
      if (category) address.searchParams.set("category", category);
      return refine(address.pathname + address.search);
    }
    showChosen(null);
    var message = form.querySelector("[data-client-error]");
    message.textContent = clientProblem(null);
    message.hidden = false;
  });

  root.addEventListener("click", function (event) {
    var action = closestTo(event.target, "[data-action]");
    if (!action || busy) return;
    // "current" keeps the box of the current results, "region" takes the one just drawn.
    var current = { category: body.dataset.category, box: "current", limit: "" };
    switch (action.dataset.action) {
      case "search-region":
        if (!region) return;
        current.box = "region";
        break;
      case "whole-photo":
        current.box = "";
        break;
      default:
        return;
    }
    event.preventDefault();
    resend(current);
  });

  // A search with the photo of the current results: the kept File, or, if this page was reached without
  // this script's help (a reload), the preview the server sent back, which is small but good enough.
  function resend(params) {
    var stopped = false;
    setBusy(true);  // already while the preview is fetched: a second tap would send the photo twice
    cancel = function () {
      stopped = true;
      cancelled();
    };
    var source = photo ? Promise.resolve({ file: photo, size: photoSize }) : previewPhoto();
    source.then(function (current) {
      if (stopped) return;
      var box = { region: region, current: initialRegion() }[params.box];
      box = box ? regionInPixels(box, current.size) : "";
      search({ file: current.file, size: current.size, category: params.category, box: box, limit: params.limit,
               refine: refinements() });
    }).catch(function () {
      if (stopped) return;
      setBusy(false);
      fail("Your photo is no longer available here. Please choose it again.");
    });
  }

  // The price range, order and colour in force go with a new search of the same photo (a box, the whole photo
  // again, "show more"), as they go with a chip: the new results are refined the same way.
  function refinements() {
    var form = body.querySelector("[data-refine-form]");
    var pairs = [];
    if (form) {
      REFINEMENTS.forEach(function (name) {
        var field = form.elements[name];
        if (field && field.value !== "") pairs.push([name, field.value]);
      });
      // The closest products, whatever their match, stay the closest in a box or the whole photo again.
      if (form.elements.closest && form.elements.closest.value === "1") pairs.push(["closest", "1"]);
    }
    return pairs;
  }

  function previewPhoto() {
    var img = body.querySelector("[data-query-img]");
    if (!img) return Promise.reject(new Error("no photo"));
    return fetch(img.src).then(function (response) { return response.blob(); }).then(function (blob) {
      // The preview is upright already, so boxes are measured in its own pixels.
      return { file: blob, size: { width: img.naturalWidth, height: img.naturalHeight }, preview: true };
    });
  }

  function regionInPixels(box, size) {
    return [box.x0 * size.width, box.y0 * size.height, box.x1 * size.width, box.y1 * size.height]
      .map(function (value) { return Math.round(value); })
      .join(",");
  }

  // A new photo, made smaller first where it is larger than the search needs.
  function searchChosen(file, category) {
    var stopped = false;
    setBusy(true);
    cancel = function () {
      stopped = true;
      cancelled();
    };
    setProgress("Preparing your photo…", 0);
    downscaled(file).then(function (sent) {
      if (stopped) return;
      if (sent.size <= maxBytes) return search({ file: sent, size: null, category: category, chosen: file });
      setBusy(false);
      refuse(TOO_BIG);
    });
  }

  // The formats every browser with createImageBitmap decodes (HEIC only Safari).
  function shrinkable(file) {
    return Boolean(window.createImageBitmap) && /^image\/(jpeg|png|webp)$/.test(file.type);
  }

  // The chosen photo cannot be searched: said at the photo field, which takes the focus; the results shown stay.
  function refuse(message) {
    showChosen(null);
    body.querySelector("[data-photo-form] [data-client-error]").textContent = message;
    refused = true;
    var input = body.querySelector("[data-photo-form] [data-photo-input]");
    if (input) input.focus();
  }

  // The photo drawn upright at most SEND_MAX_SIDE on its longer side, as a JPEG; the file itself where it is no
  // larger than that, where its shorter side would fall under the server's least (a 6000 x 20 strip: 2048 x 7 was
  // refused, "each side needs at least 8", for a photo the server takes), where the browser cannot decode it (HEIC
  // outside Safari: the server can), or where the JPEG would not be smaller. Transparent parts become white, as the
  // server makes them.
  function downscaled(file) {
    if (!window.createImageBitmap || !HTMLCanvasElement.prototype.toBlob) return Promise.resolve(file);
    return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bitmap) {
      var scale = SEND_MAX_SIDE / Math.max(bitmap.width, bitmap.height);
      if (scale >= 1 || Math.round(Math.min(bitmap.width, bitmap.height) * scale) < minSide) {
        bitmap.close();
        return file;
      }
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      var context = canvas.getContext("2d");
      context.fillStyle = "#fff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      bitmap.close();
      return new Promise(function (resolve) {
        canvas.toBlob(function (blob) {
          var name = (file.name || "photo").replace(/\.[^.]*$/, "") + ".jpg";
          resolve(blob && blob.size < file.size ? new File([blob], name, { type: "image/jpeg" }) : file);
        }, "image/jpeg", 0.9);
      });
    }).catch(function () { return file; });
  }

  function csrfToken() {
    var input = root.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function search(params) {
    var form = new FormData();
    form.append("csrfmiddlewaretoken", csrfToken());
    form.append("photo", params.file, params.file.name || "photo.jpg");
    form.append("category", params.category || "");
    if (params.box) form.append("box", params.box);
    if (params.limit) form.append("limit", params.limit);
    (params.refine || []).forEach(function (pair) { form.append(pair[0], pair[1]); });

    // XMLHttpRequest rather than fetch: only it reports upload progress, which matters on a phone.
    var request = new XMLHttpRequest();
    request.open("POST", root.querySelector("[data-photo-form]").action);
    request.responseType = "document";
    request.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    announce("Uploading your photo…");
    // Given up when the upload makes no progress for UPLOAD_STALL_MS (a phone losing signal) or the answer takes
    // longer than REQUEST_TIMEOUT_MS once the photo is sent; the Cancel button stops it at any time.
    var timer = null, timedOut = false;
    function giveUpAfter(ms) {
      clearTimeout(timer);
      timer = setTimeout(function () {
        timedOut = true;
        request.abort();
      }, ms);
    }
    request.upload.addEventListener("progress", function (event) {
      giveUpAfter(UPLOAD_STALL_MS);
      if (event.lengthComputable) setProgress("Uploading… " + Math.round((100 * event.loaded) / event.total) + "%", event.loaded / event.total);
    });
    request.upload.addEventListener("load", function () {
      giveUpAfter(REQUEST_TIMEOUT_MS);
      setProgress("Searching…", 1);
      announce("Searching…");
    });
    request.addEventListener("loadend", function () { clearTimeout(timer); });
    request.addEventListener("load", function () {
      setBusy(false);
      var fresh = request.response && request.response.querySelector("[data-photo-search-body]");
      if (!fresh) return fail("Something went wrong (error " + request.status + "). Please try again.");
      if (request.status === 200) {
        if (photo !== params.file) photoBoxes = Object.create(null);
        photo = params.file;
        var photoEl = fresh.querySelector("[data-region]");
        photoSize = params.size || { width: +photoEl.dataset.width, height: +photoEl.dataset.height };
        chosen = null;
        var shown = body.querySelectorAll(".results .product-card").length;
        replaceBody(fresh);
        photoQuery = queryOf(body.dataset.url);
        photoBoxes[photoQuery] = body.dataset.box || "";
        announceResults();
        if (params.limit) {
          // "Show more": stay where the shopper is; focus moves to the first new product.
          var first = body.querySelectorAll(".results .product-card-link")[shown];
          if (first) first.focus({ preventScroll: true });
        } else {
          var heading = body.querySelector("#results-heading");
          heading.focus({ preventScroll: true });
          // Side by side on a wide screen, the photo above the results on a phone: there, to the results, once the
          // photo is drawn (a smooth scroll begun before stopped short of the results by the photo's height).
          var target = window.matchMedia("(max-width: 959px)").matches ? heading : root;
          var img = body.querySelector("[data-query-img]");
          (img && img.decode ? img.decode().catch(function () {}) : Promise.resolve()).then(function () {
            target.scrollIntoView({ block: "start" });
          });
        }
      } else if (body.querySelector("[data-region]")) {
        // On the results page: keep the results and say what was wrong; a photo refused is no longer the one chosen.
        var why = messagesOf(fresh) || "That search could not be run. Please try again.";
        fail(why);
        if (params.chosen && request.status === 400 && fresh.querySelector(".drop-zone.is-invalid")) refuse(why);
      } else {
        // The photo stays chosen (and shown) for another try, unless it was the photo that was refused.
        var photoRejected = request.status === 400 && fresh.querySelector(".drop-zone.is-invalid");
        announce(messagesOf(fresh) || "That search could not be run. Please try again.");  // not "Searching…"
        replaceBody(fresh);
        if (photoRejected) chosen = null;
        else showChosen(params.chosen || params.file);
        // The button that had the focus is gone with the old form: the field in error takes it, and a screen
        // reader reads its message (aria-describedby), where it said nothing.
        // With no field in error (the limit reached, search unavailable), the message takes it.
        var invalid = body.querySelector("[aria-invalid=true]");
        var alert = body.querySelector(".form-alert");
        if (invalid) invalid.focus();
        else if (alert) {
          alert.setAttribute("tabindex", "-1");
          alert.focus();
        }
      }
    });
    request.addEventListener("error", function () {
      setBusy(false);
      fail("The connection failed. Check that you are online and try again.");
    });
    request.addEventListener("abort", function () {
      if (!timedOut) return cancelled();
      setBusy(false);
      fail(TOO_SLOW);
    });
    setBusy(true);
    cancel = function () { request.abort(); };
    setProgress("Uploading…", 0);
    giveUpAfter(UPLOAD_STALL_MS);
    request.send(form);
  }

  function replaceBody(fresh) {
    // Results after results (a box, the whole photo again, another "Look in"): a step Back returns from, as from a
    // chip. The first results take the place of the empty form.
    var after = body.querySelector(".results") && fresh.dataset.url && fresh.dataset.url !== body.dataset.url;
    body.innerHTML = fresh.innerHTML;
    refused = false;  // a new form: the photo refused in the old one is gone with it
    ["category", "limit", "box", "url"].forEach(function (key) { body.dataset[key] = fresh.dataset[key] || ""; });
    // The results' own address (the kept query's token, no photo): shareable, and a reload shows them again.
    if (body.dataset.url) {
      if (after) history.pushState(null, "", body.dataset.url);
      else history.replaceState(null, "", body.dataset.url);
      shownAddress = addressOf(location.href);
    }
    document.title = (body.querySelector("#results-heading") ? "Lookalikes of your photo" : "Search by photo") + " · Lookalike";
    enhance();
  }

  function setBusy(on) {
    busy = on;
    cancel = null;
    requestError.hidden = true;
    progress.hidden = !on;
    if (on) root.setAttribute("data-busy", "");
    else root.removeAttribute("data-busy");
    var focused = document.activeElement;
    root.querySelectorAll("[data-submit], [data-action]").forEach(function (el) {
      if (el.tagName === "BUTTON") el.disabled = on || (el.dataset.action === "search-region" && !region);
    });
    // The button that started it is disabled under the keyboard's focus, which fell to the page's start: Cancel
    // takes it, the one thing to do meanwhile.
    if (on && focused && (focused.disabled || focused === document.body)) {
      progress.querySelector("[data-cancel]").focus({ preventScroll: true });
    }
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && busy && cancel) cancel();
  });

  function setProgress(text, fraction) {
    progressText.textContent = text;
    progressBar.style.width = Math.round(100 * fraction) + "%";
    progressBar.parentNode.setAttribute("aria-valuenow", Math.round(100 * fraction));
  }

  progress.querySelector("[data-cancel]").addEventListener("click", function () {
    if (cancel) cancel();
  });

  // The Cancel button that had the focus is hidden with the progress: the focus goes to the results still shown,
  // or to the search button of the start page.
  function cancelled() {
    setBusy(false);
    announce("Search cancelled.");
    var back = body.querySelector("#results-heading") || body.querySelector("[data-submit]");
    if (back) back.focus({ preventScroll: true });
  }

  // Said once per step (not each percent of an upload, which would flood the screen reader), and emptied first so
  // that the same words ("Searching…" again for a refinement) are heard again.
  function announce(text) {
    announcer.textContent = "";
    setTimeout(function () { announcer.textContent = text; }, 50);
  }

  // The live region said "Searching…" beside the results for as long as they were shown: it says what came of it,
  // the results' count or the empty state's heading.
  function announceResults() {
    var said = body.querySelector(".results .results-head .muted") || body.querySelector(".results .empty-state h2");
    announce(said ? said.textContent.replace(/\s+/g, " ").trim() : "");
  }

  function fail(message) {
    announce(message);  // where it still said "Searching…"
    requestError.textContent = message;
    requestError.hidden = false;
    // The button that had the focus was disabled while searching: the focus goes to the message, not the page's top.
    requestError.focus({ preventScroll: true });
    requestError.scrollIntoView({ block: "nearest" });
  }

  // ---------- Refining: chips, price, sort, "show more" ----------

  // Plain GET links and a GET form carrying the query token: here they replace only the results, so the photo
  // (and any box drawn on it) stays, and the address bar shows the refined search's shareable URL.
  root.addEventListener("click", function (event) {
    var link = closestTo(event.target, "a[data-refine]");
    if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    if (!busy) refine(link.href, link.dataset.refine === "more");
  });

  root.addEventListener("submit", function (event) {
    var form = closestTo(event.target, "[data-refine-form]");
    if (!form) return;
    event.preventDefault();
    var query = new URLSearchParams();
    new FormData(form).forEach(function (value, key) { if (value !== "") query.append(key, value); });
    if (!busy) refine(form.action.split("?")[0] + "?" + query.toString(), false);
  });

  // What an answer's page says was wrong: its form's errors and alerts.
  function messagesOf(fresh) {
    return Array.prototype.map.call(fresh.querySelectorAll("[data-form-errors] p, [data-field-error], .form-alert p"),
      function (el) { return el.textContent.trim(); }).join(" ");
  }

  function refine(url, more, fromHistory) {
    var shown = body.querySelectorAll(".results .product-card").length;
    setBusy(true);
    setProgress("Searching…", 1);
    announce("Searching…");
    var controller = new AbortController(), stopped = false;
    var timer = setTimeout(function () { controller.abort(); }, REQUEST_TIMEOUT_MS);
    cancel = function () {
      stopped = true;
      controller.abort();
    };
    fetch(url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin", signal: controller.signal })
      .then(function (response) {
        return response.text().then(function (html) { return { status: response.status, html: html }; });
      })
      .then(function (answer) {
        clearTimeout(timer);
        setBusy(false);
        var page = new DOMParser().parseFromString(answer.html, "text/html");
        var fresh = page.querySelector("[data-photo-search-body]");
        var results = fresh && fresh.querySelector(".results");
        var current = body.querySelector(".results");
        if (answer.status === 410) return searchAgain(url);
        if (answer.status !== 200 || !results || !current) {
          // The page's own words where it has some ("Please wait 40 seconds" at the limit): trying again at once
          // would only fail again.
          return fail((fresh && messagesOf(fresh)) || "That search could not be run. Please try again.");
        }
        var before = body.dataset.url;
        current.replaceWith(document.importNode(results, true));
        ["category", "limit", "url"].forEach(function (key) { body.dataset[key] = fresh.dataset[key] || ""; });
        // "Look in" under the results says where they are, as the server draws it: another photo is searched there.
        var lookIn = body.querySelector(".query-new [data-category]");
        if (lookIn) lookIn.value = body.dataset.category;
        // The same search again (Apply with nothing changed) is no step for Back to go through: the server's address
        // of the results says so, whatever order or defaults the form's fields came in ("show more" keeps it).
        if (!fromHistory && (more || body.dataset.url !== before)) history.pushState(null, "", url);
        shownAddress = addressOf(location.href);
        announceResults();
        if (more) {
          var first = body.querySelectorAll(".results .product-card-link")[shown];
          if (first) first.focus({ preventScroll: true });
        } else {
          // A price refused ("the highest below the lowest"): to that field, which names its error.
          var invalid = body.querySelector(".results [aria-invalid=true]");
          (invalid || body.querySelector("#results-heading")).focus({ preventScroll: true });
        }
      })
      .catch(function (error) {
        clearTimeout(timer);
        setBusy(false);
        if (stopped) return cancelled();
        fail(error && error.name === "AbortError" ? TOO_SLOW
          : "The connection failed. Check that you are online and try again.");
      });
  }

  // The kept query expired (SEARCH_QUERY_KEEP_SECONDS): the photo this page still holds is searched again, with
  // what the link asked for, in place of asking the shopper to choose it again.
  function searchAgain(url) {
    if (!photo) return fail("This search has expired. Please choose your photo again.");
    var asked = new URL(url, location.href).searchParams;
    var pairs = [];
    REFINEMENTS.forEach(function (name) {
      if (asked.get(name)) pairs.push([name, asked.get(name)]);
    });
    if (asked.get("closest") === "1") pairs.push(["closest", "1"]);  // still the closest, whatever their match
    var box = initialRegion();
    search({ file: photo, size: photoSize, category: asked.get("category") || "",
             box: box ? regionInPixels(box, photoSize) : "", limit: asked.get("limit") || "", refine: pairs });
  }

  // Back and forward between refined searches: the address is the state, so load it, when it names other results
  // than those shown. A jump within the page (the skip link's #main, and back from it) keeps the page as it is,
  // with the photo the shopper chose.
  var shownAddress = addressOf(location.href);

  function addressOf(href) {
    return href.split("#")[0];
  }

  function queryOf(href) {
    return href ? new URL(href, location.href).searchParams.get("query") : null;
  }

  window.addEventListener("popstate", function () {
    if (addressOf(location.href) === shownAddress) return;
    // Another refinement of the search on screen: its results in place, the photo and its box kept (a reload lost
    // them). Anything else (the start page, another photo's search) is loaded.
    var query = queryOf(location.href);
    if (photo && query && query in photoBoxes && body.querySelector(".results") && !busy) {
      if (query !== photoQuery) {  // another search of the same photo: its box, or the whole photo, on the photo
        photoQuery = query;
        showBox(photoBoxes[query]);
      }
      refine(location.href, false, true);
    } else {
      location.reload();
    }
  });

  // ---------- Drawing a region ----------

  var drag = null;

  function pointIn(frame, event) {
    var rect = frame.getBoundingClientRect();
    return {
      x: Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)),
      y: Math.min(1, Math.max(0, (event.clientY - rect.top) / rect.height)),
    };
  }

  function drawRegion(frame, box) {
    var el = frame.querySelector("[data-region-box]");
    el.hidden = !box;
    if (!box) return;
    el.style.left = 100 * box.x0 + "%";
    el.style.top = 100 * box.y0 + "%";
    el.style.width = 100 * (box.x1 - box.x0) + "%";
    el.style.height = 100 * (box.y1 - box.y0) + "%";
  }

  root.addEventListener("pointerdown", function (event) {
    var area = closestTo(event.target, "[data-region-area]");
    var frame = area && area.querySelector("[data-region]");
    if (!frame || busy || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    area.setPointerCapture(event.pointerId);
    drag = { frame: frame, start: pointIn(frame, event), id: event.pointerId };
  });

  root.addEventListener("pointermove", function (event) {
    if (!drag || event.pointerId !== drag.id) return;
    var point = pointIn(drag.frame, event);
    region = {
      x0: Math.min(drag.start.x, point.x), y0: Math.min(drag.start.y, point.y),
      x1: Math.max(drag.start.x, point.x), y1: Math.max(drag.start.y, point.y),
    };
    drawRegion(drag.frame, region);
  });

  function endDrag(event) {
    if (!drag || event.pointerId !== drag.id) return;
    var rect = drag.frame.getBoundingClientRect();
    // A tap (or a sliver) places a box half the photo's size around that point, which another tap moves: boxing
    // a part of the photo needs no dragging (WCAG 2.5.7), only a finger that can tap.
    if (!region || (region.x1 - region.x0) * rect.width < 12 || (region.y1 - region.y0) * rect.height < 12) {
      region = boxAround(drag.start);
      drawRegion(drag.frame, region);
    }
    var button = body.querySelector("[data-action=search-region]");
    if (button) button.disabled = !region;
    drag = null;
  }
  root.addEventListener("pointerup", endDrag);
  root.addEventListener("pointercancel", endDrag);

  // The keyboard's way to box a part of the photo: with the photo focused, the arrow keys move a box (the one
  // drawn, or one in the middle), Shift with them resizes it, Enter searches it and Escape drops it.
  var KEY_STEP = 0.05;
  var MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  root.addEventListener("keydown", function (event) {
    var frame = closestTo(event.target, "[data-region]");
    if (!frame || busy || event.altKey || event.ctrlKey || event.metaKey) return;
    var button = body.querySelector("[data-action=search-region]");
    if (event.key === "Enter") {
      if (button && !button.disabled) button.click();
      return;
    }
    if (event.key === "Escape") {
      region = null;
    } else if (MOVES[event.key]) {
      var box = region || initialRegion() || { x0: 0.25, y0: 0.25, x1: 0.75, y1: 0.75 };
      var dx = MOVES[event.key][0] * KEY_STEP, dy = MOVES[event.key][1] * KEY_STEP;
      region = event.shiftKey ? resized(box, dx, dy) : moved(box, dx, dy);
    } else {
      return;
    }
    event.preventDefault();  // the arrows would scroll the page
    drawRegion(frame, region || initialRegion());
    if (button) button.disabled = !region;
    announce(region ? describeBox(region) : "No box: the whole photo.");
  });

  function describeBox(box) {
    function percent(value) { return Math.round(100 * value) + "%"; }
    return "Box from " + percent(box.x0) + " to " + percent(box.x1) + " across, " + percent(box.y0) + " to " +
      percent(box.y1) + " down. Enter searches it.";
  }

  function boxAround(point) {
    var x0 = Math.min(Math.max(point.x - 0.25, 0), 0.5), y0 = Math.min(Math.max(point.y - 0.25, 0), 0.5);
    return { x0: x0, y0: y0, x1: x0 + 0.5, y1: y0 + 0.5 };
  }

  function moved(box, dx, dy) {
    dx = Math.min(Math.max(dx, -box.x0), 1 - box.x1);
    dy = Math.min(Math.max(dy, -box.y0), 1 - box.y1);
    return { x0: box.x0 + dx, y0: box.y0 + dy, x1: box.x1 + dx, y1: box.y1 + dy };
  }

  function resized(box, dx, dy) {
    var x1 = Math.min(1, Math.max(box.x0 + 2 * KEY_STEP, box.x1 + dx));
    var y1 = Math.min(1, Math.max(box.y0 + 2 * KEY_STEP, box.y1 + dy));
    return { x0: box.x0, y0: box.y0, x1: x1, y1: y1 };
  }

  // The photo panel as the server draws it for a search of ``boxText`` ("x0,y0,x1,y1" in pixels, "" the whole photo).
  function showBox(boxText) {
    body.dataset.box = boxText;
    region = null;
    var frame = body.querySelector("[data-region]");
    if (frame) drawRegion(frame, initialRegion());
    var title = body.querySelector(".query-card-title");
    if (title) title.textContent = boxText ? "Searched the boxed area" : "Your photo";
    var whole = body.querySelector("[data-action=whole-photo]");
    if (whole) whole.hidden = !boxText;
    var searchRegion = body.querySelector("[data-action=search-region]");
    if (searchRegion) searchRegion.disabled = true;  // nothing drawn since
  }

  // The box the server drew for a region search, as fractions (or null).
  function initialRegion() {
    var frame = body.querySelector("[data-region]");
    var parts = (body.dataset.box || "").split(",").map(Number);
    if (!frame || parts.length !== 4) return null;
    var width = +frame.dataset.width, height = +frame.dataset.height;
    return { x0: parts[0] / width, y0: parts[1] / height, x1: parts[2] / width, y1: parts[3] / height };
  }

  // ---------- After each render ----------

  function enhance() {
    region = null;
    body.querySelectorAll("[data-js-only]").forEach(function (el) { el.hidden = false; });
    var frame = body.querySelector("[data-region]");
    if (frame) frame.tabIndex = 0;  // the keyboard's way to draw a box
  }

  enhance();
})();
