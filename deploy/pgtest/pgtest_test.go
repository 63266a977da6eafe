package pgtest_test

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ebbsync/ebb/deploy/pgtest"
)

func TestMustStart(t *testing.T) {
	srv := pgtest.MustStart(t)
	conn, err := pgx.Connect(t.Context(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var user string
	var fsync string
	if err := conn.QueryRow(t.Context(), "SELECT current_user, current_setting('fsync')").Scan(&user, &fsync); err != nil {
		t.Fatal(err)
	}
	if user != "ebb" || fsync != "on" {
		t.Fatalf("connected as %q with fsync %q, want ebb and on", user, fsync)
	}
	var bytewise bool // under ICU "en", "a" sorts before "B"
	if err := conn.QueryRow(t.Context(), "SELECT 'B' < 'a'").Scan(&bytewise); err != nil {
		t.Fatal(err)
	}
	t.Logf("default collation byte-wise: %v", bytewise)
	if _, err := os.Stat(srv.SocketDir); err != nil {
		t.Fatalf("socket directory: %v", err)
	}
}

func TestSchema_Unique(t *testing.T) {
	a, b := pgtest.Schema(t), pgtest.Schema(t)
	if a == b || len(a) > 63 {
		t.Fatalf("schemas %q and %q", a, b)
	}
}
