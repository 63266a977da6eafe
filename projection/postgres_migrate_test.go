package projection

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ebbsync/ebb/deploy/pgtest"
)

// TestPostgresStore_MigrateToPartitions: a view written at schema version
// 2 (before partitions) keeps its whole-store progress through migration
// 3, and a partition made from it then starts where it was.
func TestPostgresStore_MigrateToPartitions(t *testing.T) {
	srv := pgtest.MustStart(t)
	ctx := context.Background()
	schema := pgtest.Schema(t)
	q := pgx.Identifier{schema}.Sanitize()
	conn, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A version 2 schema, as the ebb before partitions left it.
	setup := []string{`CREATE SCHEMA ` + q,
		`CREATE TABLE ` + q + `.schema_version (id int PRIMARY KEY CHECK (id = 1), version int NOT NULL)`,
		`INSERT INTO ` + q + `.schema_version VALUES (1, 2)`}
	for _, m := range pgMigrations[:2] {
		setup = append(setup, strings.ReplaceAll(m, "{s}", q))
	}
	setup = append(setup,
		`UPDATE `+q+`.meta SET checkpoint = 7, next_outbox = 4, streams = '{"Reanchors": 1}' WHERE id = 1`,
		`INSERT INTO `+q+`.outbox (key, subject, msg_id, header, data) VALUES (3, 's', 'm3', NULL, '\x00')`)
	for _, s := range setup {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	w := ClientKey{Tenant: "t", Client: "c", Device: "d"}
	if _, err := conn.Exec(ctx, `INSERT INTO `+q+`.high_water (tenant, client, device, seq, state) VALUES ($1, $2, $3, 5, $4)`,
		w.Tenant, w.Client, w.Device, encodeHighWater(HighWater{Seq: 5, Holes: []SeqRange{{From: 2, To: 2}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO `+q+`.seq_events VALUES ($1, $2, $3, 5, 'ev5')`, w.Tenant, w.Client, w.Device); err != nil {
		t.Fatal(err)
	}

	s, err := OpenPostgres(ctx, srv.URL, PostgresOptions{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(name string, st Store, wantOutbox int, wantSeqEvent string) {
		t.Helper()
		cp, err := st.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.Streams(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hw, err := st.WriterHighWater(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		out, err := st.Outbox(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := st.SeqEvent(ctx, w, 5)
		if err != nil {
			t.Fatal(err)
		}
		if cp != 7 || m.Reanchors != 1 || hw.Seq != 5 || len(hw.Holes) != 1 || len(out) != wantOutbox || ev != wantSeqEvent {
			t.Errorf("%s after migration: checkpoint %d, marks %+v, high-water %+v, outbox %d, event at 5 %q; want 7, 1 reanchor, 5 with a hole, %d, %q",
				name, cp, m, hw, len(out), ev, wantOutbox, wantSeqEvent)
		}
	}
	check("the whole store", s, 1, "ev5")
	p0, err := s.Partition(ctx, Partition{Index: 0, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	check("partition 0", p0, 1, "") // a partition remembers its own sequences' ids only
	p1, err := s.Partition(ctx, Partition{Index: 1, Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	check("partition 1", p1, 0, "")
	// Outbox keys of partition 0 go on after the whole store's.
	prev := uint64(7)
	b := &Batch{Checkpoint: 8, Prev: &prev, Outbox: []OutboxEntry{{Subject: "s", MsgID: "m4"}}}
	if err := p0.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Outbox[0].Key != 4 {
		t.Errorf("partition 0's first outbox key %d, want 4 (after the whole store's 3)", b.Outbox[0].Key)
	}
	var version int
	if err := conn.QueryRow(ctx, `SELECT version FROM `+q+`.schema_version`).Scan(&version); err != nil || version != PostgresSchemaVersion {
		t.Fatalf("schema version %d (%v), want %d", version, err, PostgresSchemaVersion)
	}
}
