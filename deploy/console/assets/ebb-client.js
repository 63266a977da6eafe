// ebb-client.js: an offline-first ebb replica for the browser, as a plain
// ES module (no build step). Served by `ebb serve` at /ui/ebb-client.js.
//
//   import { open } from "/ui/ebb-client.js";
//   const db = await open({ tenant: "acme", client: "alice", auth: "alice:pw" });
//   db.addEventListener("change", (e) => render(e.detail));
//   await db.put("todos", "t1", { title: "milk" });   // durable in IndexedDB
//   db.start();                                       // push/pull while online
//
// Contract (events/PROTOCOL.md):
// - A write resolves only once its event is committed (durability "strict")
//   in this browser's IndexedDB, with its id, HLC and sequence: it survives a
//   reload, a crash of the tab and going offline, and is pushed (POST
//   /v1/{tenant}/events, idempotent by id) until the server stores it.
// - Each store is its own device: it mints a ULID device id when it is
//   created and numbers its events 1, 2, 3... Event ids are monotonic ULIDs;
//   the HLC is max(physical ms, last wall), logical+1 within one ms, raised
//   past every change received.
// - base_version is the version last received from the server; an event
//   written on top of an unsettled one of the same document names it in
//   `after`.
// - The view is the server's last change of each document (GET
//   /v1/{tenant}/changes), with this device's pending writes applied on top
//   for get()/list(). A pending write is settled when a change names it as
//   its cause or holds it as an open conflict, or when a receipt for it
//   arrives (GET /v1/{tenant}/receipts/{client}). Today that route serves
//   only a client's legacy receipt subject, not its devices' ones, so a
//   write the server refuses (rejected, invalid) stays pending here until
//   the gateway serves device receipts too.
// - "change" events (detail {collection, id, doc}) fire for every local
//   write and every change received; "status" (detail {online, pending,
//   error}) after every sync attempt.

const DB_VERSION = 1;
const B32 = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

// ---- ULID (monotonic) ----

function encodeULID(ms, rand /* Uint8Array(10) */) {
  let out = "";
  let t = BigInt(ms);
  for (let i = 0; i < 10; i++) { out = B32[Number(t % 32n)] + out; t /= 32n; }
  let r = 0n;
  for (const b of rand) r = (r << 8n) | BigInt(b);
  let tail = "";
  for (let i = 0; i < 16; i++) { tail = B32[Number(r % 32n)] + tail; r /= 32n; }
  return out + tail;
}

function randomBytes(n) { const b = new Uint8Array(n); crypto.getRandomValues(b); return b; }

// nextULID returns an id greater than last (a previous id string or "").
function nextULID(last) {
  const now = Date.now();
  if (last) {
    const lastMs = decodeTime(last);
    if (now <= lastMs) {
      // same (or earlier) millisecond: increment the random part of last
      const r = last.slice(10);
      let v = 0n;
      for (const ch of r) v = v * 32n + BigInt(B32.indexOf(ch));
      v += 1n;
      if (v >= (1n << 80n)) throw new Error("ebb: ULID random part overflow");
      const bytes = new Uint8Array(10);
      for (let i = 9; i >= 0; i--) { bytes[i] = Number(v & 0xffn); v >>= 8n; }
      return encodeULID(lastMs, bytes);
    }
  }
  return encodeULID(now, randomBytes(10));
}

function decodeTime(id) {
  let t = 0;
  for (const ch of id.slice(0, 10)) t = t * 32 + B32.indexOf(ch);
  return t;
}

// ---- HLC ----

function hlcNext(last) {
  const now = Date.now();
  if (!last || now > last.wall) return { wall: now, logical: 0 };
  return { wall: last.wall, logical: last.logical + 1 };
}

function hlcMax(a, b) {
  if (!a) return b;
  if (!b) return a;
  if (a.wall !== b.wall) return a.wall > b.wall ? a : b;
  return a.logical >= b.logical ? a : b;
}

// ---- IndexedDB helpers ----

function req(r) {
  return new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("ebb: transaction aborted"));
  });
}

function openDB(name) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(name, DB_VERSION);
    r.onupgradeneeded = () => {
      const db = r.result;
      db.createObjectStore("meta");                       // key -> value
      db.createObjectStore("outbox", { keyPath: "seq" }); // pending events by sequence
      db.createObjectStore("docs");                       // "collection\u0000id" -> server change
    };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

const docKey = (collection, id) => collection + "\u0000" + id;

function applyEvent(fields, ev) {
  switch (ev.op) {
    case "put": case "resolve": return { ...ev.fields };
    case "patch": {
      const out = { ...fields };
      for (const [k, v] of Object.entries(ev.fields || {})) { if (v === null) delete out[k]; else out[k] = v; }
      return out;
    }
    case "delete": return null;
  }
  return fields;
}

// ---- the replica ----

export class Replica extends EventTarget {
  constructor(db, opts, meta) {
    super();
    this._db = db;
    this.base = (opts.url || "").replace(/\/$/, "");
    this.tenant = opts.tenant;
    this.client = opts.client;
    this.device = meta.device;
    this._auth = opts.auth || "";
    this._meta = meta; // {device, seq, lastId, hlc, changesAfter, receiptsAfter}
    this._timer = null;
    this._syncing = null;
    this.online = false;
    this.lastError = "";
  }

  _headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (this._auth) h["Authorization"] = "Bearer " + btoa(this._auth);
    return h;
  }

  _path(...segs) { return this.base + "/v1/" + segs.map(encodeSeg).join("/"); }

  // write appends one event to the durable log; it resolves with the event
  // once IndexedDB has committed it.
  async _write(op, collection, id, fields, resolves) {
    const tx = this._db.transaction(["meta", "outbox", "docs"], "readwrite", { durability: "strict" });
    const meta = tx.objectStore("meta"), outbox = tx.objectStore("outbox");
    const m = { ...this._meta };
    const server = await req(tx.objectStore("docs").get(docKey(collection, id)));
    const pending = (await req(outbox.getAll())).filter((e) => e.collection === collection && e.doc === id && !e._settled);
    m.seq = m.seq + 1;
    m.lastId = nextULID(m.lastId);
    m.hlc = hlcNext(m.hlc);
    const ev = {
      schema: 1, id: m.lastId, tenant: this.tenant, collection, doc: id, op,
      base_version: server ? server.version : 0, hlc: m.hlc, client: this.client, device: m.device, seq: m.seq,
    };
    if (fields !== undefined && op !== "delete") ev.fields = fields;
    if (resolves) ev.resolves = resolves;
    if (pending.length > 0 && op !== "resolve") ev.after = pending[pending.length - 1].id;
    outbox.put({ ...ev, _sent: false });
    for (const k of ["seq", "lastId", "hlc"]) meta.put(m[k], k);
    await done(tx);
    this._meta = m;
    this._emit(collection, id);
    this.kick();
    return ev;
  }

  /** put replaces the whole document. */
  put(collection, id, fields) { return this._write("put", collection, id, fields); }
  /** patch sets fields (null removes one). */
  patch(collection, id, fields) { return this._write("patch", collection, id, fields); }
  /** delete removes the document. */
  delete(collection, id) { return this._write("delete", collection, id); }
  /** resolve settles open conflict conflictId of a document with the chosen state. */
  resolve(collection, id, conflictId, fields) { return this._write("resolve", collection, id, fields, conflictId); }

  /** get returns the local view of a document: {collection, id, version, deleted, fields, conflicts, pending} or null. */
  async get(collection, id) {
    const tx = this._db.transaction(["outbox", "docs"], "readonly");
    const server = await req(tx.objectStore("docs").get(docKey(collection, id)));
    const pending = (await req(tx.objectStore("outbox").getAll())).filter((e) => e.collection === collection && e.doc === id);
    return view(collection, id, server, pending);
  }

  /** list returns the local view of every document of a collection (not deleted ones). */
  async list(collection) {
    const tx = this._db.transaction(["outbox", "docs"], "readonly");
    const servers = await req(tx.objectStore("docs").getAll());
    const pending = await req(tx.objectStore("outbox").getAll());
    const ids = new Set();
    for (const c of servers) if (c.collection === collection) ids.add(c.doc);
    for (const e of pending) if (e.collection === collection) ids.add(e.doc);
    const out = [];
    for (const id of [...ids].sort()) {
      const v = view(collection, id, servers.find((c) => c.collection === collection && c.doc === id),
        pending.filter((e) => e.collection === collection && e.doc === id));
      if (v && !v.deleted) out.push(v);
    }
    return out;
  }

  /** pending returns the events not yet settled by the server, oldest first. */
  async pending() {
    const tx = this._db.transaction(["outbox"], "readonly");
    return (await req(tx.objectStore("outbox").getAll())).map(strip);
  }

  /** sync pushes pending events, then pulls receipts and changes. One at a time. */
  sync() {
    if (!this._syncing) this._syncing = this._sync().finally(() => { this._syncing = null; });
    return this._syncing;
  }

  async _sync() {
    try {
      await this._push();
      await this._pullReceipts();
      await this._pullChanges();
      this.online = true;
      this.lastError = "";
    } catch (err) {
      this.online = false;
      this.lastError = String(err && err.message || err);
    }
    const pending = (await this.pending()).length;
    this.dispatchEvent(new CustomEvent("status", { detail: { online: this.online, pending, error: this.lastError } }));
    return { online: this.online, pending, error: this.lastError };
  }

  async _push() {
    const unsent = (await this._outbox()).filter((e) => !e._sent).map(strip);
    if (unsent.length === 0) return;
    for (let i = 0; i < unsent.length; i += 1000) {
      const batch = unsent.slice(i, i + 1000);
      const resp = await fetch(this._path(this.tenant, "events"), { method: "POST", headers: this._headers(true), body: JSON.stringify(batch) });
      let body = null;
      try { body = await resp.json(); } catch { body = null; }
      if (!body || !Array.isArray(body.results)) throw new Error("push: HTTP " + resp.status + (body && body.error ? ": " + body.error : ""));
      const tx = this._db.transaction(["outbox"], "readwrite");
      const ob = tx.objectStore("outbox");
      for (const r of body.results) {
        const ev = batch.find((e) => e.id === r.id);
        if (!ev) continue;
        if (r.status === "accepted" || r.status === "duplicate") ob.put({ ...ev, _sent: true });
        else if (r.status === "invalid") ob.put({ ...ev, _sent: true, _refused: "invalid: " + (r.error || "") });
      }
      await done(tx);
      if (resp.status >= 500) throw new Error("push: HTTP " + resp.status);
    }
  }

  async _outbox() {
    const tx = this._db.transaction(["outbox"], "readonly");
    return req(tx.objectStore("outbox").getAll());
  }

  async _pullReceipts() {
    for (;;) {
      const after = this._meta.receiptsAfter || 0;
      const resp = await fetch(this._path(this.tenant, "receipts", this.client) + "?after=" + after, { headers: this._headers() });
      if (!resp.ok) throw new Error("receipts: HTTP " + resp.status);
      const body = await resp.json();
      const tx = this._db.transaction(["outbox", "meta"], "readwrite");
      const ob = tx.objectStore("outbox");
      for (const { receipt } of body.receipts || []) {
        if (receipt.device && receipt.device !== this.device) continue;
        const ev = await req(ob.get(receipt.seq));
        if (ev && ev.id === receipt.event) {
          ob.delete(receipt.seq);
          this.dispatchEvent(new CustomEvent("receipt", { detail: receipt }));
        }
      }
      tx.objectStore("meta").put(body.last_seq, "receiptsAfter");
      await done(tx);
      this._meta = { ...this._meta, receiptsAfter: body.last_seq };
      if (!body.more) return;
    }
  }

  async _pullChanges() {
    for (;;) {
      const after = this._meta.changesAfter || 0;
      const resp = await fetch(this._path(this.tenant, "changes") + "?after=" + after, { headers: this._headers() });
      if (!resp.ok) throw new Error("changes: HTTP " + resp.status);
      const body = await resp.json();
      const touched = [];
      const tx = this._db.transaction(["outbox", "meta", "docs"], "readwrite");
      const docs = tx.objectStore("docs"), ob = tx.objectStore("outbox");
      const outbox = await req(ob.getAll());
      let hlc = this._meta.hlc;
      for (const { change } of body.changes || []) {
        const key = docKey(change.collection, change.doc);
        const have = await req(docs.get(key));
        if (!have || change.version > have.version) {
          docs.put(change, key);
          touched.push([change.collection, change.doc]);
        }
        hlc = hlcMax(hlc, change.hlc);
        // settle this device's events the change accounts for
        const open = new Set((change.conflicts || []).map((c) => c.id));
        for (const e of outbox) {
          if (e.collection === change.collection && e.doc === change.doc && (e.id === change.event || open.has(e.id) ||
              (change.settled && (change.settled.id === e.id || change.settled.resolution === e.id)))) {
            ob.delete(e.seq);
          }
        }
      }
      const meta = tx.objectStore("meta");
      meta.put(body.last_seq, "changesAfter");
      meta.put(hlc, "hlc");
      await done(tx);
      this._meta = { ...this._meta, changesAfter: body.last_seq, hlc };
      for (const [c, id] of touched) this._emit(c, id);
      if (!body.more) return;
    }
  }

  async _emit(collection, id) {
    const doc = await this.get(collection, id);
    this.dispatchEvent(new CustomEvent("change", { detail: { collection, id, doc } }));
  }

  /** start syncs now and every interval ms (default 1000) until stop(). */
  start(interval = 1000) {
    this.stop();
    this._interval = interval;
    this.sync();
    this._timer = setInterval(() => this.sync(), interval);
    this._onOnline = () => this.sync();
    globalThis.addEventListener?.("online", this._onOnline);
  }

  /** kick syncs soon when started. */
  kick() { if (this._timer) this.sync(); }

  /** stop ends periodic sync. */
  stop() {
    if (this._timer) clearInterval(this._timer);
    this._timer = null;
    if (this._onOnline) globalThis.removeEventListener?.("online", this._onOnline);
  }

  /** close stops syncing and closes the database. */
  close() { this.stop(); this._db.close(); }
}

function strip(e) {
  const out = { ...e };
  delete out._sent; delete out._refused;
  return out;
}

function view(collection, id, server, pending) {
  let fields = server && !server.deleted ? { ...(server.fields || {}) } : null;
  let version = server ? server.version : 0;
  for (const e of pending) {
    if (e._refused) continue;
    fields = applyEvent(fields || {}, e);
  }
  if (!server && pending.length === 0) return null;
  return {
    collection, id, version, deleted: fields === null, fields: fields || {},
    conflicts: server ? server.conflicts || [] : [], pending: pending.filter((e) => !e._refused).length,
  };
}

function encodeSeg(s) {
  if (s === ".") return "%2E";
  if (s === "..") return "%2E%2E";
  return encodeURIComponent(s);
}

/**
 * open opens (or creates) the durable replica of tenant for client in this
 * browser. opts: {tenant, client, url (the server, default same origin),
 * auth ("user:password", sent as Bearer), name (the IndexedDB database,
 * default "ebb:<tenant>:<client>")}. A new database mints its own device id.
 */
export async function open(opts) {
  if (!opts || !opts.tenant || !opts.client) throw new Error("ebb: open needs tenant and client");
  const db = await openDB(opts.name || "ebb:" + opts.tenant + ":" + opts.client);
  const tx = db.transaction(["meta"], "readwrite", { durability: "strict" });
  const ms = tx.objectStore("meta");
  const meta = {};
  for (const k of ["device", "seq", "lastId", "hlc", "changesAfter", "receiptsAfter"]) meta[k] = await req(ms.get(k));
  if (!meta.device) {
    meta.device = nextULID("");
    meta.seq = 0;
    ms.put(meta.device, "device");
    ms.put(0, "seq");
  }
  await done(tx);
  return new Replica(db, opts, meta);
}

export { nextULID as _nextULID, hlcNext as _hlcNext };
