package projection_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ebbsync/ebb/deploy/pgtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/storetest"
)

// mustOpenPostgres opens a store in schema on srv, closed in tb.Cleanup.
func mustOpenPostgres(tb testing.TB, srv *pgtest.Server, schema string) *projection.PostgresStore {
	tb.Helper()
	s, err := projection.OpenPostgres(context.Background(), srv.URL, projection.PostgresOptions{Schema: schema})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func mustConnect(tb testing.TB, srv *pgtest.Server) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// TestPostgresStore runs the shared Store suite on PostgreSQL, one schema
// per case on one server.
func TestPostgresStore(t *testing.T) {
	srv := pgtest.MustStart(t)
	storetest.RunStoreSuite(t, func(t *testing.T) projection.Store {
		return mustOpenPostgres(t, srv, pgtest.Schema(t))
	})
}

// TestPostgresStore_Reopen: what one store committed another one opened
// on the same schema later reads, the migration finding its schema
// current; another schema is another, empty, view.
func TestPostgresStore_Reopen(t *testing.T) {
	srv := pgtest.MustStart(t)
	ctx := context.Background()
	schema := pgtest.Schema(t)
	s := mustOpenPostgres(t, srv, schema)
	d := projection.Doc{Tenant: "t", Collection: "c", ID: "d", Version: 1, Fields: events.Fields{"a": json.RawMessage(`1`)}}
	b := &projection.Batch{Checkpoint: 3, Docs: []projection.Doc{d}, Outbox: []projection.OutboxEntry{{Subject: "s", MsgID: "m"}}}
	if err := s.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenPostgres(t, srv, schema)
	cp, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, d.Address())
	if err != nil {
		t.Fatal(err)
	}
	if cp != 3 || got.Version != 1 {
		t.Fatalf("after reopen: checkpoint %d doc v%d, want 3 and v1", cp, got.Version)
	}
	// Outbox keys go on rising after a reopen.
	b2 := &projection.Batch{Checkpoint: 4, Outbox: []projection.OutboxEntry{{Subject: "s", MsgID: "m2"}}}
	if err := s.Commit(ctx, b2); err != nil {
		t.Fatal(err)
	}
	if b2.Outbox[0].Key <= b.Outbox[0].Key {
		t.Fatalf("outbox key %d after reopen, first was %d", b2.Outbox[0].Key, b.Outbox[0].Key)
	}
	other := mustOpenPostgres(t, srv, pgtest.Schema(t))
	if cp, err := other.Checkpoint(ctx); err != nil || cp != 0 {
		t.Fatalf("another schema: checkpoint %d (%v), want 0", cp, err)
	}
}

// TestPostgresStore_ConcurrentOpen: stores opened at once on a fresh
// schema all succeed (the migration runs once, under its lock).
func TestPostgresStore_ConcurrentOpen(t *testing.T) {
	srv := pgtest.MustStart(t)
	schema := pgtest.Schema(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := projection.OpenPostgres(context.Background(), srv.URL, projection.PostgresOptions{Schema: schema})
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var version int
	if err := mustConnect(t, srv).QueryRow(context.Background(), `SELECT version FROM `+schema+`.schema_version`).Scan(&version); err != nil || version != 1 {
		t.Fatalf("schema version %d (%v), want 1", version, err)
	}
}

// TestPostgresStore_NewerSchemaRefused: a schema a newer ebb migrated is
// refused with ErrSchemaVersion, not written by code that does not know it.
func TestPostgresStore_NewerSchemaRefused(t *testing.T) {
	srv := pgtest.MustStart(t)
	schema := pgtest.Schema(t)
	mustOpenPostgres(t, srv, schema).Close()
	if _, err := mustConnect(t, srv).Exec(context.Background(), `UPDATE `+schema+`.schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	_, err := projection.OpenPostgres(context.Background(), srv.URL, projection.PostgresOptions{Schema: schema})
	if !errors.Is(err, projection.ErrSchemaVersion) {
		t.Fatalf("open of a version 99 schema: %v, want ErrSchemaVersion", err)
	}
}

// TestPostgresStore_Options: bad options are refused before connecting,
// all at once; a Cipher is refused with ErrPostgresCipher.
func TestPostgresStore_Options(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		url     string
		opts    projection.PostgresOptions
		wantErr error
	}{
		{"cipher", "postgres://127.0.0.1:1/x", projection.PostgresOptions{Cipher: viewCipher(t, 1)}, projection.ErrPostgresCipher},
		{"schema", "postgres://127.0.0.1:1/x", projection.PostgresOptions{Schema: `x"; DROP TABLE y; --`}, nil},
		{"schema upper", "postgres://127.0.0.1:1/x", projection.PostgresOptions{Schema: "Ebb"}, nil},
		{"max conns", "postgres://127.0.0.1:1/x", projection.PostgresOptions{MaxConns: -1}, nil},
		{"url", "postgres://u:secret@[::1/x", projection.PostgresOptions{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := projection.OpenPostgres(ctx, tt.url, tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("opened")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if tt.name == "url" && strings.Contains(err.Error(), "secret") {
				t.Fatalf("error shows the password: %v", err)
			}
		})
	}
}

// TestPostgresStore_QueryableJSONB: a service reads the view with SQL:
// live fields as JSONB, tombstones flagged, open conflicts flagged; a
// document whose fields jsonb cannot hold (a NUL) keeps them in its state
// (read back exactly) with fields NULL, rather than failing the commit.
func TestPostgresStore_QueryableJSONB(t *testing.T) {
	srv := pgtest.MustStart(t)
	ctx := context.Background()
	schema := pgtest.Schema(t)
	s := mustOpenPostgres(t, srv, schema)
	live := projection.Doc{Tenant: "acme", Collection: "notes", ID: "n1", Version: 2, Event: "e2", Client: "c", Seq: 2,
		HLC: events.HLC{Wall: 1700000000000}, Fields: events.Fields{"title": json.RawMessage(`"milk"`), "n": json.RawMessage(`3`)},
		Conflicts: []events.Conflict{{ID: "x", Status: events.ConflictOpen}}}
	dead := projection.Doc{Tenant: "acme", Collection: "notes", ID: "n2", Version: 4, Deleted: true}
	nul := projection.Doc{Tenant: "acme", Collection: "notes", ID: "n3", Version: 1, Fields: events.Fields{"t": json.RawMessage(`"a\u0000b"`)}}
	if err := s.Commit(ctx, &projection.Batch{Checkpoint: 1, Docs: []projection.Doc{live, dead, nul}}); err != nil {
		t.Fatal(err)
	}
	conn := mustConnect(t, srv)
	var title string
	var n int
	var conflicted bool
	var wall int64
	err := conn.QueryRow(ctx, `SELECT fields->>'title', (fields->>'n')::int, conflicted, hlc_wall FROM `+schema+`.docs
		WHERE tenant = 'acme' AND collection = 'notes' AND fields @> '{"title":"milk"}' AND NOT deleted`).Scan(&title, &n, &conflicted, &wall)
	if err != nil || title != "milk" || n != 3 || !conflicted || wall != 1700000000000 {
		t.Fatalf("SQL read: %q %d conflicted=%v wall=%d (%v)", title, n, conflicted, wall, err)
	}
	var deleted, nullFields bool
	var version int64
	if err := conn.QueryRow(ctx, `SELECT deleted, fields IS NULL, version FROM `+schema+`.docs WHERE doc = 'n2'`).Scan(&deleted, &nullFields, &version); err != nil || !deleted || !nullFields || version != 4 {
		t.Fatalf("tombstone row: deleted=%v fields null=%v v%d (%v)", deleted, nullFields, version, err)
	}
	if err := conn.QueryRow(ctx, `SELECT fields IS NULL FROM `+schema+`.docs WHERE doc = 'n3'`).Scan(&nullFields); err != nil || !nullFields {
		t.Fatalf("NUL document: fields null=%v (%v), want NULL", nullFields, err)
	}
	got, err := s.Get(ctx, nul.Address())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, nul) {
		t.Fatalf("NUL document read back as %+v", got)
	}
}
