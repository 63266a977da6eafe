// The console's service worker: it keeps the pages, scripts and the client
// module of /ui/ in a cache so that an app built on them (the try-it page,
// the console) loads and reloads while the server is unreachable. Network
// first: when the server answers, its copy is used and cached; only when
// it does not is the cached copy served. The JSON API (/ui/api/) and the
// gateway (/v1/) are never cached: data comes from IndexedDB offline.
const CACHE = "ebb-ui-v1";
const SHELL = ["./", "index.html", "console.js", "try.html", "try.js", "ebb-client.js", "style.css"];

self.addEventListener("install", (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (e) => {
  e.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  const scope = new URL(self.registration.scope);
  if (e.request.method !== "GET" || url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname) ||
      url.pathname.startsWith(scope.pathname + "api/")) {
    return;
  }
  e.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const resp = await fetch(e.request);
      if (resp.ok) await cache.put(e.request, resp.clone());
      return resp;
    } catch (err) {
      const hit = await cache.match(e.request, { ignoreSearch: true });
      if (hit) return hit;
      throw err;
    }
  })());
});
