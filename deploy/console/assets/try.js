// The "try it" app: a to-do list on the browser client module.
import { open } from "./ebb-client.js";

const $ = (s) => document.querySelector(s);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
let db = null;

for (const k of ["tenant", "client"]) if (localStorage.getItem("try-" + k)) $("#" + k).value = localStorage.getItem("try-" + k);

async function connect() {
  if (db) db.close();
  const tenant = $("#tenant").value, client = $("#client").value, pw = $("#password").value;
  localStorage.setItem("try-tenant", tenant);
  localStorage.setItem("try-client", client);
  db = await open({ tenant, client, auth: pw ? client + ":" + pw : "" });
  window.ebbReplica = db; // for tests and the curious
  $("#device").textContent = db.device;
  db.addEventListener("change", render);
  db.addEventListener("status", (e) => {
    $("#status").textContent = e.detail.online ? "online" : "offline";
    $("#pending").textContent = String(e.detail.pending);
    $("#error").textContent = e.detail.error || "";
    render();
  });
  await render();
  db.start(500);
}

let rendering = Promise.resolve();
function render() {
  rendering = rendering.then(async () => {
    if (!db) return;
    const todos = await db.list("todos");
    $("#pending").textContent = String((await db.pending()).length);
    $("#todos").innerHTML = `<tr><th>done</th><th>title</th><th>version</th><th>state</th></tr>` + todos.map((t) => `
      <tr data-id="${esc(t.id)}" data-version="${t.version}" data-pending="${t.pending}">
        <td><input type="checkbox" class="done" ${t.fields.done ? "checked" : ""}></td>
        <td class="title">${esc(t.fields.title)}</td><td>${t.version}</td>
        <td>${t.pending ? `<span class="badge">pending</span>` : `<span class="badge applied">synced</span>`}${t.conflicts.length ? ` <span class="badge conflict">conflict</span>` : ""}</td></tr>`).join("");
    for (const box of document.querySelectorAll("input.done")) {
      box.onchange = () => db.patch("todos", box.closest("tr").dataset.id, { done: box.checked });
    }
  }).catch((err) => { $("#error").textContent = err.message; });
  return rendering;
}

$("#connect").onclick = () => connect();
$("#add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const title = $("#title").value.trim();
  if (!title || !db) return;
  const id = "t-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 6);
  await db.put("todos", id, { title, done: false });
  $("#title").value = "";
  $("#add").dataset.last = id;
});

connect().catch((err) => { $("#error").textContent = err.message; });

// Keep this page and the client module loadable offline (sw.js).
if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch((err) => { $("#error").textContent = "offline cache: " + err.message; });
