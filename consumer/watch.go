package consumer

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/ebbsync/ebb/producer"
)

// watchers are the Replica.Watch goroutines, owned by the replica.
type watchers struct {
	mu     sync.Mutex
	set    map[*watcher]struct{}
	done   chan struct{} // closed by closeAll
	closed bool
	wg     sync.WaitGroup
}

// watcher is one Watch: the documents changed since it last sent, coalesced
// (the latest state of each is what gets sent), and a wake-up.
type watcher struct {
	collection []byte // prefix collection+0x00
	mu         sync.Mutex
	dirty      map[string]struct{}
	wake       chan struct{}
}

func (ws *watchers) add(w *watcher) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return false
	}
	if ws.set == nil {
		ws.set = make(map[*watcher]struct{})
		ws.done = make(chan struct{})
	}
	ws.set[w] = struct{}{}
	ws.wg.Add(1)
	return true
}

func (ws *watchers) remove(w *watcher) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	delete(ws.set, w)
}

// touch marks keys changed for every watcher of their collection.
func (ws *watchers) touch(keys [][]byte) {
	if len(keys) == 0 {
		return
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for w := range ws.set {
		n := 0
		w.mu.Lock()
		for _, k := range keys {
			if len(k) > len(w.collection) && string(k[:len(w.collection)]) == string(w.collection) {
				w.dirty[string(k)] = struct{}{}
				n++
			}
		}
		w.mu.Unlock()
		if n > 0 {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
	}
}

// closeAll ends every watcher and waits for them.
func (ws *watchers) closeAll() {
	ws.mu.Lock()
	if !ws.closed {
		ws.closed = true
		if ws.done != nil {
			close(ws.done)
		}
	}
	ws.mu.Unlock()
	ws.wg.Wait()
}

// Watch returns a channel of the documents of collection as they change in
// the app's view: local writes, changes pulled from the server, settled
// receipts (a rejected write reverting). Updates are coalesced per
// document: a slow reader is never blocked behind and never misses the
// latest state of a document, but may skip intermediate ones. Deleted
// documents arrive with Deleted set. The channel is closed when ctx ends or
// the replica is closed.
func (r *Replica) Watch(ctx context.Context, collection string) (<-chan Doc, error) {
	if !r.inScope(collection) {
		return nil, fmt.Errorf("watch %s: %w", collection, ErrOutOfScope)
	}
	w := &watcher{collection: collectionPrefix(collection), dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	if err := r.checkOpen(); err != nil || !r.watchers.add(w) {
		return nil, fmt.Errorf("watch %s: %w", collection, ErrClosed)
	}
	out := make(chan Doc)
	go func() {
		defer r.watchers.wg.Done()
		defer close(out)
		defer r.watchers.remove(w)
		for {
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			case <-r.watchers.done:
				return
			}
			w.mu.Lock()
			keys := make([]string, 0, len(w.dirty))
			for k := range w.dirty {
				keys = append(keys, k)
			}
			clear(w.dirty)
			w.mu.Unlock()
			slices.Sort(keys)
			for _, k := range keys {
				col, id := splitDocKey([]byte(k))
				var d Doc
				err := r.log.View(ctx, func(tx *producer.Tx) (err error) {
					d, err = r.localDoc(tx, col, id)
					return err
				})
				if err != nil {
					r.logger.Error("watch: read document", logDoc, id, logErr, err)
					continue
				}
				select {
				case out <- d:
				case <-ctx.Done():
					return
				case <-r.watchers.done:
					return
				}
			}
		}
	}()
	return out, nil
}
