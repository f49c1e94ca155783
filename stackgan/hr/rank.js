// The ranking page: rows are anonymous slots (the server knows which model each is).
"use strict";
let rater = null, current = null;
const $ = (id) => document.getElementById(id);

function show(next) {
  current = next;
  $("progress").textContent = `(${next.ranked} of ${next.total} ranked)`;
  if (next.done) {
    $("task").hidden = true;
    $("status").textContent = `Thank you: all ${next.total} descriptions are ranked.`;
    return;
  }
  $("task").hidden = false;
  $("status").textContent = "";
  $("caption").textContent = next.text;
  const list = $("ranking");
  list.replaceChildren();
  next.slots.forEach((images, slot) => {
    const li = document.createElement("li");
    li.className = "slot";
    li.tabIndex = 0;
    li.draggable = true;
    li.dataset.slot = slot;
    for (const src of images) {
      const img = document.createElement("img");
      img.src = src;
      img.alt = "";
      img.draggable = false;
      li.append(img);
    }
    list.append(li);
  });
  list.firstElementChild.focus();
}

async function fetchNext() {
  const r = await fetch(`/api/next?rater=${encodeURIComponent(rater)}`);
  const body = await r.json();
  if (!r.ok) { $("status").textContent = body.error; return; }
  show(body);
}

async function submit() {
  if (!current || current.done) return;
  const order = [...$("ranking").children].map((li) => Number(li.dataset.slot));
  const r = await fetch("/api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({rater, caption: current.caption, presentation: current.presentation, order})});
  const body = await r.json();
  if (!r.ok) { $("status").textContent = body.error; return; }
  show(body);
}

function move(li, up) {
  const other = up ? li.previousElementSibling : li.nextElementSibling;
  if (!other) return;
  if (up) other.before(li); else other.after(li);
  li.focus();
}

$("ranking").addEventListener("keydown", (e) => {
  const li = e.target.closest("li.slot");
  if (!li) return;
  if (e.key === "ArrowUp" || e.key === "ArrowDown") { e.preventDefault(); move(li, e.key === "ArrowUp"); }
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !$("task").hidden && !["INPUT", "BUTTON"].includes(e.target.tagName)) { e.preventDefault(); submit(); }
});

let dragged = null;
$("ranking").addEventListener("dragstart", (e) => {
  dragged = e.target.closest("li.slot");
  dragged.classList.add("dragging");
  e.dataTransfer.effectAllowed = "move";
});
$("ranking").addEventListener("dragover", (e) => {
  e.preventDefault();
  const over = e.target.closest("li.slot");
  if (!dragged || !over || over === dragged) return;
  const below = e.clientY > over.getBoundingClientRect().top + over.offsetHeight / 2;
  if (below) over.after(dragged); else over.before(dragged);
});
$("ranking").addEventListener("dragend", () => { if (dragged) dragged.classList.remove("dragging"); dragged = null; });

$("submit").addEventListener("click", submit);
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  rater = $("rater").value.trim();
  $("login").hidden = true;
  fetchNext();
});
const fromQuery = new URLSearchParams(location.search).get("rater");
if (fromQuery) { $("rater").value = fromQuery; $("login").requestSubmit(); }
