package projection

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/ebbsync/ebb/deploy/keys"
)

// TestBoltFieldIndex_OldBuildWriteBetweenOpens: the index is built, this
// build closes the file, an older build (no index) opens it and moves c
// under l1 (or opens it and writes nothing), and this build opens it
// again: DocsWithField finds what a scan finds, asked right after the open
// or after a commit of another document. OpenBolt's and Commit's own
// transactions stamped the index as kept before, so the stale index was
// taken as current and c was missed: plaintext and encrypted stores alike.
func TestBoltFieldIndex_OldBuildWriteBetweenOpens(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		for _, how := range []string{"reopen", "reopen+commit-elsewhere", "old-build-writes-nothing"} {
			t.Run(map[bool]string{false: "plaintext/", true: "encrypted/"}[sealed]+how, func(t *testing.T) {
				ctx := context.Background()
				var c *keys.Cipher
				if sealed {
					var err error
					if c, err = keys.RandomCipher(); err != nil {
						t.Fatal(err)
					}
				}
				path := filepath.Join(t.TempDir(), "view.db")
				s, err := OpenBolt(path, BoltOptions{Cipher: c})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(ctx, &Batch{Checkpoint: 1, Docs: []Doc{fieldDoc("a", 1, "l1"), fieldDoc("c", 1, "l2")}}); err != nil {
					t.Fatal(err)
				}
				if got := idsWithField(t, s, "l1"); !slices.Equal(got, []string{"a"}) {
					t.Fatalf("first ask: %q", got)
				}
				s.Close()
				want, wantL2 := []string{"a"}, []string{"c"}
				if how == "old-build-writes-nothing" {
					err = OldBuildPut(path, c)
				} else {
					want, wantL2 = []string{"a", "c"}, nil
					err = OldBuildPut(path, c, fieldDoc("c", 2, "l1")) // the old build moves c under l1
				}
				if err != nil {
					t.Fatal(err)
				}
				if s, err = OpenBolt(path, BoltOptions{Cipher: c}); err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if how == "reopen+commit-elsewhere" {
					if err := s.Commit(ctx, &Batch{Checkpoint: 2, Docs: []Doc{fieldDoc("z", 1, "l9")}}); err != nil {
						t.Fatal(err)
					}
				}
				if got := idsWithField(t, s, "l1"); !slices.Equal(got, want) {
					t.Fatalf("DocsWithField(l1) after an old build's open and a reopen = %q, a scan finds %q", got, want)
				}
				if got := idsWithField(t, s, "l2"); !slices.Equal(got, wantL2) {
					t.Fatalf("DocsWithField(l2) = %q, a scan finds %q", got, wantL2)
				}
				// Rebuilt and kept again: current after this build's next commit.
				if err := s.Commit(ctx, &Batch{Checkpoint: 3, Docs: []Doc{fieldDoc("d", 1, "l1")}}); err != nil {
					t.Fatal(err)
				}
				err = s.db.View(func(tx *bolt.Tx) error {
					if !fieldsCurrent(tx) || !fieldsBuilt(tx) {
						t.Error("the rebuilt index is not taken as kept after this build's own commit")
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if got := idsWithField(t, s, "l1"); !slices.Equal(got, append(want, "d")) {
					t.Fatalf("DocsWithField(l1) after the next commit = %q, want %q", got, append(want, "d"))
				}
			})
		}
	}
}
