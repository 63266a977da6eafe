package projection

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultPostgresSchema is the schema the PostgreSQL view store lives in
// when PostgresOptions.Schema is empty.
const DefaultPostgresSchema = "ebb"

// validSchema is what PostgresOptions.Schema may be: a plain lowercase SQL
// identifier (quoted anyway), at most 63 bytes, PostgreSQL's limit.
var validSchema = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// pgMigrations are the versions of the view schema, in order: migration i
// takes a schema at version i to i+1. "{s}" is the quoted schema name. A
// released migration is never edited: a change is a new entry. Every text
// column that orders rows is COLLATE "C", so ORDER BY is byte-wise, as the
// Store contract (and BoltStore) orders.
var pgMigrations = []string{
	// 1: the view, its conflict history, the checkpoint and stream marks,
	// the writers' high-water marks and the outbox.
	`
CREATE TABLE {s}.meta (
	id          int PRIMARY KEY CHECK (id = 1),
	checkpoint  bigint NOT NULL,  -- last EVENTS sequence committed
	streams     jsonb,            -- StreamMarks as JSON; NULL until a batch sets them
	next_outbox bigint NOT NULL   -- the key the next outbox entry gets
);
INSERT INTO {s}.meta (id, checkpoint, streams, next_outbox) VALUES (1, 0, NULL, 1);

CREATE TABLE {s}.docs (
	tenant     text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	doc        text COLLATE "C" NOT NULL,
	version    bigint  NOT NULL,
	deleted    boolean NOT NULL,
	fields     jsonb,             -- the live fields; NULL for a tombstone or fields jsonb cannot hold
	conflicted boolean NOT NULL,  -- open manual conflicts
	event      text NOT NULL,     -- the event that made this state
	client     text NOT NULL,     -- its writer
	seq        bigint NOT NULL,   -- its client sequence
	hlc_wall   bigint NOT NULL,   -- its HLC wall clock, Unix milliseconds
	state      bytea NOT NULL,    -- the whole state, the encoded events.Change: the authority
	PRIMARY KEY (tenant, collection, doc)
);

CREATE TABLE {s}.conflicts (
	tenant     text COLLATE "C" NOT NULL,
	collection text COLLATE "C" NOT NULL,
	doc        text COLLATE "C" NOT NULL,
	id         text COLLATE "C" NOT NULL,
	policy     text NOT NULL,
	status     text NOT NULL,
	record     bytea NOT NULL,    -- the encoded events.Conflict: the authority
	PRIMARY KEY (tenant, collection, doc, id)
);

CREATE TABLE {s}.high_water (
	tenant text COLLATE "C" NOT NULL,
	client text COLLATE "C" NOT NULL,
	seq    bigint NOT NULL,       -- the mark, so a commit never lowers it
	state  bytea NOT NULL,        -- the mark and its holes, as BoltStore encodes them
	PRIMARY KEY (tenant, client)
);

CREATE TABLE {s}.outbox (
	key     bigint PRIMARY KEY,
	subject text NOT NULL,
	msg_id  text NOT NULL,
	header  bytea,                -- JSON of the extra headers; NULL when none
	data    bytea NOT NULL
);
`,
	// 2: devices. A writer is (tenant, client, device): marks gain the
	// device ('' for a client's legacy log), and the event ids applied at
	// each writer's sequences inside the dedupe window are remembered, so
	// a sequence reused by another event is told from a duplicate.
	`
ALTER TABLE {s}.high_water ADD COLUMN device text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE {s}.high_water DROP CONSTRAINT high_water_pkey;
ALTER TABLE {s}.high_water ADD PRIMARY KEY (tenant, client, device);

CREATE TABLE {s}.seq_events (
	tenant text COLLATE "C" NOT NULL,
	client text COLLATE "C" NOT NULL,
	device text COLLATE "C" NOT NULL,
	seq    bigint NOT NULL,
	event  text NOT NULL,
	PRIMARY KEY (tenant, client, device, seq)
);
`,
	// 3: partitions (PartitionedStore). The progress tables gain part: -1
	// is the whole store (every row written before), 0..n-1 the
	// partitions of a view partitioned in n, which meta's whole row
	// records in partitions (0: not partitioned). docs and conflicts stay
	// shared: a document belongs to one partition only.
	`
ALTER TABLE {s}.meta ADD COLUMN part int NOT NULL DEFAULT -1;
ALTER TABLE {s}.meta ADD COLUMN partitions int NOT NULL DEFAULT 0;
ALTER TABLE {s}.meta DROP CONSTRAINT meta_pkey;
ALTER TABLE {s}.meta DROP COLUMN id;
ALTER TABLE {s}.meta ADD PRIMARY KEY (part);

ALTER TABLE {s}.high_water ADD COLUMN part int NOT NULL DEFAULT -1;
ALTER TABLE {s}.high_water DROP CONSTRAINT high_water_pkey;
ALTER TABLE {s}.high_water ADD PRIMARY KEY (part, tenant, client, device);

ALTER TABLE {s}.seq_events ADD COLUMN part int NOT NULL DEFAULT -1;
ALTER TABLE {s}.seq_events DROP CONSTRAINT seq_events_pkey;
ALTER TABLE {s}.seq_events ADD PRIMARY KEY (part, tenant, client, device, seq);

ALTER TABLE {s}.outbox ADD COLUMN part int NOT NULL DEFAULT -1;
ALTER TABLE {s}.outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE {s}.outbox ADD PRIMARY KEY (part, key);
`,
	// 4: fencing (Fencer). Each progress row records the epoch of the
	// newest lease holder that fenced it: the lease bucket's creation
	// time in Unix nanoseconds, then the lease's KV revision; 0, 0 until
	// one does.
	`
ALTER TABLE {s}.meta ADD COLUMN epoch_bucket bigint NOT NULL DEFAULT 0;
ALTER TABLE {s}.meta ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
`,
}

// migrate creates or upgrades the view schema in one transaction, under an
// advisory lock so that stores opened at once on one schema take turns. A
// schema of a version this code does not know (a newer ebb's) is refused.
func migrate(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	q := pgx.Identifier{schema}.Sanitize()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "ebb view schema "+schema); err != nil {
			return fmt.Errorf("lock schema: %w", err)
		}
		// Create only when absent: CREATE SCHEMA IF NOT EXISTS needs the
		// CREATE privilege on the database even when the schema exists.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&exists); err != nil {
			return fmt.Errorf("look for schema: %w", err)
		}
		if !exists {
			if _, err := tx.Exec(ctx, `CREATE SCHEMA `+q); err != nil {
				return fmt.Errorf("create schema: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+q+`.schema_version (id int PRIMARY KEY CHECK (id = 1), version int NOT NULL);
INSERT INTO `+q+`.schema_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`); err != nil {
			return fmt.Errorf("create schema_version: %w", err)
		}
		var version int
		if err := tx.QueryRow(ctx, `SELECT version FROM `+q+`.schema_version WHERE id = 1`).Scan(&version); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if version > len(pgMigrations) {
			return fmt.Errorf("%w: version %d, this code knows up to %d (written by a newer ebb?)", ErrSchemaVersion, version, len(pgMigrations))
		}
		for v := version; v < len(pgMigrations); v++ {
			if _, err := tx.Exec(ctx, strings.ReplaceAll(pgMigrations[v], "{s}", q)); err != nil {
				return fmt.Errorf("migrate to version %d: %w", v+1, err)
			}
		}
		if version < len(pgMigrations) {
			if _, err := tx.Exec(ctx, `UPDATE `+q+`.schema_version SET version = $1 WHERE id = 1`, len(pgMigrations)); err != nil {
				return fmt.Errorf("record schema version: %w", err)
			}
		}
		return nil
	})
}

// PostgresSchemaVersion is the version of the view schema this code
// migrates to.
var PostgresSchemaVersion = len(pgMigrations)
