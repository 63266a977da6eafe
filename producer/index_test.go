package producer

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/events"
)

// ids returns the event ids of es.
func entryIDs(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Event.ID)
	}
	return out
}

func settle(t testing.TB, l *Log, e *events.Event) {
	t.Helper()
	err := l.Update(context.Background(), func(tx *Tx) error {
		return tx.Settle(&events.Receipt{Event: e.ID, Tenant: e.Tenant, Client: e.Client, Seq: e.Seq, Outcome: events.OutcomeApplied, Version: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkIndex compares UnsettledFor, UnsettledIn and UnsettledEntry with a
// full scan (EachUnsettled) for every document of evs, and Counts with
// the scan.
func checkIndex(t *testing.T, l *Log, evs []*events.Event) {
	t.Helper()
	err := l.View(t.Context(), func(tx *Tx) error {
		var all []Entry
		if err := tx.EachUnsettled(func(e Entry) (bool, error) { all = append(all, e); return true, nil }); err != nil {
			return err
		}
		byDoc, byCol := map[[2]string][]string{}, map[string][]string{}
		for _, e := range all {
			k := [2]string{e.Event.Collection, e.Event.Doc}
			byDoc[k] = append(byDoc[k], e.Event.ID)
			byCol[e.Event.Collection] = append(byCol[e.Event.Collection], e.Event.ID)
		}
		for _, e := range evs {
			es, err := tx.UnsettledFor(e.Collection, e.Doc)
			if err != nil {
				return err
			}
			if got, want := entryIDs(es), byDoc[[2]string{e.Collection, e.Doc}]; !slices.Equal(got, want) {
				t.Errorf("UnsettledFor(%s, %s) = %v, want %v", e.Collection, e.Doc, got, want)
			}
			_, ok, err := tx.UnsettledEntry(e.ID)
			if err != nil {
				return err
			}
			if want := slices.Contains(byDoc[[2]string{e.Collection, e.Doc}], e.ID); ok != want {
				t.Errorf("UnsettledEntry(%s) = %v, want %v", e.ID, ok, want)
			}
		}
		for col, want := range byCol {
			es, err := tx.UnsettledIn(col)
			if err != nil {
				return err
			}
			got := entryIDs(es)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("UnsettledIn(%s) = %d entries, want %d", col, len(got), len(want))
			}
		}
		if n := l.Counts().Unsettled; n != len(all) {
			t.Errorf("Counts().Unsettled = %d, want %d", n, len(all))
		}
		if n := tx.UnsettledCount(); n != len(all) {
			t.Errorf("UnsettledCount = %d, want %d", n, len(all))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// indexWrites writes to documents whose names share prefixes (so a
// length-less key would confuse "ab"/"c" with "a"/"bc") in two collections.
func indexWrites() []Write {
	var ws []Write
	for i := range 60 {
		col := []string{"a", "ab"}[i%2]
		doc := []string{"bc", "c", "b.c", "ü x", "cd"}[i%5]
		ws = append(ws, put(col, doc, i))
	}
	return ws
}

func TestLog_UnsettledIndex(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  []func(*LogConfig)
	}{{"plaintext", nil}, {"encrypted", []func(*LogConfig){withCipher(testCipher(t, 1))}}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			l := mustOpen(t, path, tt.mod...)
			evs := mustAppend(t, l, indexWrites()...)
			checkIndex(t, l, evs)
			for i, e := range evs {
				if i%3 == 0 {
					settle(t, l, e)
				}
			}
			settle(t, l, evs[0]) // again: changes nothing
			checkIndex(t, l, evs)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = mustOpen(t, path, tt.mod...)
			checkIndex(t, l, evs)
		})
	}
}

// stripIndex makes path look like a log written before the index existed:
// no producer.bydoc, no index version, empty unsettled markers.
func stripIndex(t *testing.T, path string) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		if err := tx.DeleteBucket(bucketByDoc); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Delete(metaIndex); err != nil {
			return err
		}
		var ks [][]byte
		_ = tx.Bucket(bucketUnsettled).ForEach(func(k, _ []byte) error { ks = append(ks, slices.Clone(k)); return nil })
		for _, k := range ks {
			if err := tx.Bucket(bucketUnsettled).Put(k, []byte{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLog_OpenIndexesOldFile: a log made before the index is indexed once
// when opened, and settling keeps that index right.
func TestLog_OpenIndexesOldFile(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  []func(*LogConfig)
	}{{"plaintext", nil}, {"encrypted", []func(*LogConfig){withCipher(testCipher(t, 1))}}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log.db")
			l := mustOpen(t, path, tt.mod...)
			evs := mustAppend(t, l, indexWrites()...)
			settle(t, l, evs[1])
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			stripIndex(t, path)
			l = mustOpen(t, path, tt.mod...)
			checkIndex(t, l, evs)
			settle(t, l, evs[2])
			more := mustAppend(t, l, put("a", "bc", "new"))
			checkIndex(t, l, append(evs, more...))
			err := l.View(t.Context(), func(tx *Tx) error {
				es, err := tx.UnsettledFor("a", "bc")
				if err != nil {
					return err
				}
				if len(es) == 0 || es[len(es)-1].Event.ID != more[0].ID {
					return fmt.Errorf("a/bc after migration: %v, want the new write last", entryIDs(es))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLog_OpenRepairsIndexAnOlderVersionBypassed: after a version without
// the index wrote to an indexed file (an append with an empty marker and
// no index entry; a settle that left its index entry), the next open
// rebuilds the index.
func TestLog_OpenRepairsIndexAnOlderVersionBypassed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	l := mustOpen(t, path)
	evs := mustAppend(t, l, indexWrites()...)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		last bool // the older version touches the last entry, not the first
		old  func(tx *bbolt.Tx, k []byte) error
	}{
		{"append", false, func(tx *bbolt.Tx, k []byte) error {
			prefix := slices.Clone(tx.Bucket(bucketUnsettled).Get(k))
			if err := tx.Bucket(bucketByDoc).Delete(append(prefix, k...)); err != nil {
				return err
			}
			return tx.Bucket(bucketUnsettled).Put(k, []byte{})
		}},
		{"settle", true, func(tx *bbolt.Tx, k []byte) error {
			// The older version settles: marker and state go, the index
			// entry stays.
			return tx.Bucket(bucketUnsettled).Delete(k)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bbolt.Tx) error {
				c := tx.Bucket(bucketUnsettled).Cursor()
				k, _ := c.First()
				if tt.last {
					k, _ = c.Last()
				}
				return tt.old(tx, slices.Clone(k))
			})
			if cerr := db.Close(); err != nil || cerr != nil {
				t.Fatal(err, cerr)
			}
			l := mustOpen(t, path)
			checkIndex(t, l, evs)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
