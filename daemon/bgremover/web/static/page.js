// The page's live part: poll the batches, swap in only what changed, send uploads and button presses.
// Plain script, no build step; every form also works without it (a POST and back to the page).
"use strict";

const POLL_MS = 1000;
const body = document.body;
const csrf = body.dataset.csrf;
const fileLimit = Number(body.dataset.fileLimit);
const requestLimit = Number(body.dataset.requestLimit);
const filesLimit = Number(body.dataset.filesLimit);
const extensions = new Set(body.dataset.extensions.split(","));
const liveUrl = body.dataset.liveUrl || "/sessions"; // the batches, or on the review page one batch's photos
const seen = new Map(); // id -> the server's last HTML for that element, to tell what changed

function say(text, where = "message") {
  document.getElementById(where).textContent = text;
}

function megabytes(bytes) {
  return (bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0) + " MB";
}

// -- live updates -----------------------------------------------------------------

function remember(root) {
  for (const element of root.querySelectorAll("[id]")) seen.set(element.id, element.outerHTML);
}

// Bring `old` to look like `fresh` (both the same element, by id): children that did not change keep
// their node, so focus, an opened <details> and a chosen file survive the update. A batch the server
// marks `data-same` is unchanged since the tag this page sent: the page keeps its own.
function sync(old, fresh) {
  for (const attribute of fresh.attributes) {
    if (old.getAttribute(attribute.name) !== attribute.value) old.setAttribute(attribute.name, attribute.value);
  }
  const wanted = [];
  for (const child of fresh.children) {
    const current = child.id ? old.querySelector(":scope > #" + CSS.escape(child.id)) : null;
    if (child.hasAttribute("data-same")) {
      if (current) wanted.push(current);
      else stale = true; // the server thinks this page has a batch it lost: ask for everything next time
      continue;
    }
    if (current && child.hasAttribute("data-container")) {
      sync(current, child);
      wanted.push(current);
    } else if (current && seen.get(child.id) === child.outerHTML) {
      wanted.push(current);
    } else if (current && current.querySelector("details.reject[open] form.act")) {
      // The user is filling in a decision here: the card is redrawn once it is sent or closed, never
      // under the user's hand (a file or a model chosen a moment before the click would be lost).
      wanted.push(current);
      continue; // `seen` keeps the HTML this card was drawn from, so a later refresh redraws it
    } else {
      if (current) keepChoices(current, child);
      wanted.push(child);
    }
    if (child.id) seen.set(child.id, child.outerHTML);
  }
  const focused = document.activeElement && document.activeElement.id;
  old.replaceChildren(...wanted);
  if (focused && document.activeElement !== document.getElementById(focused)) {
    const again = document.getElementById(focused);
    if (again) again.focus();
  }
}

// A part the server redrew (its batch's ZIP rebuilt, a state changed) keeps what the user chose in it and
// has not sent yet: the model picked for a rerun, the edges, a mask file. Hidden fields are the server's.
function keepChoices(current, fresh) {
  for (const control of current.querySelectorAll("select[id], input[id]")) {
    const twin = fresh.querySelector("#" + CSS.escape(control.id));
    if (!twin || twin.tagName !== control.tagName || control.type === "hidden" || twin.type !== control.type) continue;
    if (control.type === "file") {
      if (control.files.length) twin.files = control.files;
    } else if (control.type === "checkbox" || control.type === "radio") {
      twin.checked = control.checked;
    } else if (control.tagName !== "SELECT" || Array.from(twin.options).some((o) => o.value === control.value)) {
      twin.value = control.value;
    }
  }
}

function keepDetailsOpen(old, fresh) {
  // A <details> the user opened or closed stays so; only new batches take the server's choice.
  for (const details of fresh.querySelectorAll("details[id]")) {
    const current = document.getElementById(details.id);
    if (current) details.open = current.open;
  }
}

// Times are written in UTC by the server and shown in the viewer's own time zone.
const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
function localTimes(root) {
  for (const time of root.querySelectorAll("time[data-local]")) {
    const text = timeFormat.format(new Date(time.getAttribute("datetime")));
    if (time.textContent !== text) time.textContent = text;
  }
}

// What this page has, for the server to send only what changed: the batches open, those shown whole,
// and the tag of each batch it holds.
const shownWhole = new Set();
let stale = false;
function pollQuery() {
  const query = new URLSearchParams(location.search);
  query.set("live", "1");
  for (const details of document.querySelectorAll("article.session > details[open]")) {
    query.append("open", details.parentElement.dataset.name);
  }
  for (const name of shownWhole) query.append("all", name);
  if (!stale) {
    for (const article of document.querySelectorAll("article.session[data-tag]")) query.append("have", article.dataset.tag);
  }
  stale = false;
  return "?" + query.toString();
}

let lastBytes = 0;
async function refresh() {
  try {
    const before = new Set(Array.from(document.querySelectorAll("article.session"), (a) => a.id));
    const response = await fetch(liveUrl + pollQuery(), { headers: { Accept: "text/html" }, cache: "no-store" });
    if (response.status === 401) { location.href = "/login"; return; }
    if (!response.ok) throw new Error(response.statusText);
    const text = await response.text();
    lastBytes = text.length;
    const fresh = document.createElement("div");
    fresh.id = "live";
    fresh.innerHTML = text;
    const live = document.getElementById("live");
    keepDetailsOpen(live, fresh);
    sync(live, fresh);
    localTimes(live);
    body.dataset.pollBytes = lastBytes;
    // A batch that just appeared at the top (an upload, a folder dropped) opens by itself.
    const first = live.querySelector("article.session");
    if (first && !before.has(first.id)) first.querySelector("details").open = true;
    body.classList.remove("offline");
  } catch (error) {
    body.classList.add("offline");
    say("The page cannot reach the server; it keeps trying.");
  }
}

// Opening a batch fetches its photos at once; closing one stops asking for them.
let soon = null;
function refreshSoon() {
  clearTimeout(soon);
  soon = setTimeout(refresh, 50);
}
document.addEventListener("toggle", (event) => {
  if (event.target.matches("article.session > details")) refreshSoon();
}, true);
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.show-all");
  if (!button) return;
  shownWhole.add(button.dataset.session);
  refreshSoon();
});

async function poll() {
  await refresh();
  setTimeout(poll, POLL_MS);
}

// -- buttons: retry, cancel --------------------------------------------------------

async function send(form) {
  const response = await fetch(form.action, {
    method: "POST",
    body: form.enctype === "multipart/form-data" ? new FormData(form) : new URLSearchParams(new FormData(form)),
    headers: { Accept: "application/json", "X-CSRF-Token": csrf },
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  say(answer.message || answer.error);
  const panel = form.closest("details.reject");
  if (response.ok && panel) panel.open = false; // sent: its card may now show what became of it
  await refresh();
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.classList.contains("act")) return;
  event.preventDefault();
  if (form.dataset.confirm && !confirm(form.dataset.confirm)) return;
  send(form);
});

// A picture that cannot be had (its file was swept) shows as no picture, never as a broken image.
document.addEventListener("error", (event) => {
  if (event.target.tagName !== "IMG") return;
  const none = document.createElement("span");
  none.className = "nopic";
  none.textContent = "no picture";
  event.target.replaceWith(none);
}, true);

// -- uploads ------------------------------------------------------------------------

function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot).toLowerCase();
}

// Each file with the name it is sent under: its path inside a dropped or chosen folder, or its own name.
function upload(entries) {
  const taken = [], skipped = [];
  for (const [file, name] of entries) {
    (extensions.has(extensionOf(name)) && !name.split("/").pop().startsWith(".") ? taken : skipped).push([file, name]);
  }
  const tooLarge = taken.filter(([file]) => file.size > fileLimit);
  const total = taken.reduce((sum, [file]) => sum + file.size, 0);
  if (!taken.length) return say("Nothing to upload: no photos among " + (skipped.map(([, n]) => n).join(", ") || "them") + ".", "upload-status");
  if (tooLarge.length) return say(tooLarge[0][1] + " is " + megabytes(tooLarge[0][0].size) + ", over the limit of " + megabytes(fileLimit) + " per file; nothing was uploaded.", "upload-status");
  if (taken.length > filesLimit) return say(taken.length + " photos are over the limit of " + filesLimit + " at once; send fewer at a time.", "upload-status");
  if (total > requestLimit) return say("These photos add up to " + megabytes(total) + ", over the limit of " + megabytes(requestLimit) + " at once; send fewer at a time.", "upload-status");
  const form = new FormData();
  for (const [file, name] of taken) form.append("file", file, name);
  const request = new XMLHttpRequest();
  const bar = document.getElementById("upload-progress");
  request.open("POST", "/upload");
  request.setRequestHeader("Accept", "application/json");
  request.setRequestHeader("X-CSRF-Token", csrf);
  request.upload.onprogress = (event) => { bar.max = event.total; bar.value = event.loaded; };
  request.onload = () => {
    bar.hidden = true;
    let answer = {};
    try { answer = JSON.parse(request.responseText); } catch (error) { answer = { error: request.statusText }; }
    const note = skipped.length ? " Left out, not photos: " + skipped.map(([, n]) => n).join(", ") + "." : "";
    say((answer.message || answer.error) + note, "upload-status");
    refresh();
  };
  request.onerror = () => { bar.hidden = true; say("The upload failed: the server could not be reached.", "upload-status"); };
  bar.hidden = false;
  say("Uploading " + taken.length + " photo" + (taken.length === 1 ? "" : "s") + " (" + megabytes(total) + ")…", "upload-status");
  request.send(form);
}

function chosen(input) {
  upload(Array.from(input.files, (file) => [file, file.webkitRelativePath || file.name]));
  input.value = "";
}

// A dropped folder is walked for its files, each named by its path inside it, as in the inbox.
async function walk(entry, path, found) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push([file, path + entry.name]);
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await walk(child, path + entry.name + "/", found);
    }
  }
}

async function dropped(event) {
  event.preventDefault();
  drop.classList.remove("over");
  const entries = Array.from(event.dataTransfer.items, (item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  const found = [];
  if (entries.length) {
    for (const entry of entries) await walk(entry, "", found);
  } else {
    for (const file of event.dataTransfer.files) found.push([file, file.name]);
  }
  upload(found);
}

// Photos dropped anywhere on the page are uploaded: a browser would otherwise open the photo in place
// of the page. The box lights up while something is dragged over the page.
const drop = document.getElementById("drop");
if (drop) {
  document.addEventListener("dragover", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    drop.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => { if (!event.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    dropped(event);
  });
  document.getElementById("choose-files").addEventListener("change", (event) => chosen(event.target));
  document.getElementById("choose-folder").addEventListener("change", (event) => chosen(event.target));
}

// -- the review page: the backdrop behind the cutouts, and zooming a picture to its full size ----------

document.addEventListener("change", (event) => {
  if (event.target.name !== "backdrop") return;
  body.classList.remove("backdrop-checker", "backdrop-white", "backdrop-black");
  body.classList.add("backdrop-" + event.target.value);
});
document.addEventListener("click", (event) => {
  const zoom = event.target.closest("button.zoom");
  if (!zoom) return;
  const figure = zoom.closest("figure");
  const zoomed = figure.classList.toggle("zoomed");
  zoom.setAttribute("aria-pressed", String(zoomed));
});

remember(document.getElementById("live"));
localTimes(document.getElementById("live"));
setTimeout(poll, POLL_MS);
