// Package console is ebb's web console, served under /ui by deploy/server (`ebb serve`),
// and the home of the browser client module (/ui/ebb-client.js).
//
// The console is a single page (embedded HTML, CSS and plain JavaScript:
// no CDN, no build step, works with no network beyond the server) over a
// small read-only JSON API under /ui/api/:
//
//	GET  /ui/api/me                          who is logged in, which tenants it sees
//	GET  /ui/api/docs?tenant&collection&q&after&limit   documents, paged, searched by id prefix
//	GET  /ui/api/doc?tenant&collection&id    one document with its conflict history
//	GET  /ui/api/conflicts?tenant            documents with open conflicts
//	GET  /ui/api/dead?tenant                 dead letters with their reasons (newest last)
//	GET  /ui/api/rejections?tenant           receipts that refused a write, counted per client
//	GET  /ui/api/streams                     stream sizes and sequences, projector checkpoint
//	                                         and lag, outcomes by policy (admin only under auth)
//	GET  /ui/api/journey?tenant&event        one write: its event, receipt, change and trace id
//
// The API reads the view store (projection.Store, never written here) and
// the JetStream streams. It writes nothing: a conflict is resolved in the
// browser by the client module, which builds a real resolve event in its
// own durable log (its own device) and pushes it through the gateway's
// POST /v1/{tenant}/events, so the resolve goes through the projector like
// any other write and has a receipt.
//
// The pages and scripts are cached by a service worker (sw.js, network
// first), so the try-it app and the console load again with the server
// unreachable; the API and the gateway are never cached.
//
// The browser client module (ebb-client.js) is a plain ES module any web
// app may import from ClientPath: a durable log and view in IndexedDB
// (each store its own device, ULID ids, HLC, sequences as
// events/PROTOCOL.md says), pushed and pulled over the gateway's routes;
// its header comment states its contract.
//
// Scans of RECEIPTS and DEAD read at most Config.MaxScan messages, the
// newest ones; older ones are not shown (the answer says "truncated").
//
// Under auth (Config.Users) every /ui/api/ route needs the gateway's
// credentials (HTTP Basic, or Bearer base64(user:password)), checked
// through the same login guard (auth.Users.AuthenticateFrom). An admin
// sees every tenant; any other user only its own; under sync rules
// (Config.Filtered) a client user gets only "me", since every other route
// shows a whole tenant and the rules decide what a client reads. The static assets are
// served without credentials: they hold no data. The API never sends
// WWW-Authenticate, so a browser shows the console's own login form, not
// its Basic dialog.
package console
