package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/events"
)

var (
	_ PartitionCounter = (*PostgresStore)(nil)
	_ Fencer           = (*PostgresStore)(nil)
)

// Errors of the PostgreSQL view store. Match them with errors.Is.
var (
	// ErrPostgresCipher marks PostgresOptions with a Cipher: the
	// PostgreSQL store keeps documents as queryable JSONB, in the clear
	// (encryption at rest is the database's, see doc.go).
	ErrPostgresCipher = errors.New("the PostgreSQL view store does not encrypt at rest")
	// ErrSchemaVersion marks a view schema of a version this code does
	// not know (written by a newer ebb).
	ErrSchemaVersion = errors.New("unknown view schema version")
)

// PostgresOptions tune OpenPostgres. The zero value works.
type PostgresOptions struct {
	// Schema is the PostgreSQL schema that holds the view's tables,
	// created on open if absent; empty means DefaultPostgresSchema. A
	// lowercase identifier: letters a-z, digits, '_', at most 63 bytes,
	// not starting with a digit. Stores in different schemas of one
	// database are independent views.
	Schema string
	// MaxConns bounds the connection pool; zero keeps pgxpool's default
	// (the larger of 4 and the number of CPUs), or the pool_max_conns the
	// connection string sets.
	MaxConns int32
	// Cipher must be nil: sealing the fields would defeat the point of a
	// view that services query with SQL. A non-nil Cipher is refused with
	// an error wrapping ErrPostgresCipher, so a configuration that asks
	// for encryption at rest never silently gets none.
	Cipher *keys.Cipher
}

// PostgresStore is the view store on PostgreSQL (for ebb serve beyond one
// machine): every Commit is one transaction, durable when the server's
// synchronous_commit and fsync are on (PostgreSQL's defaults). Documents
// are rows of <schema>.docs with their fields as JSONB, so services can
// query the view with SQL; the encoded state beside them is what the store
// reads back, byte for byte what was committed. See doc.go, "PostgreSQL".
// It is a PartitionedStore, so several ebb servers can share one view
// (Group): each partition's checkpoint, stream marks, high-water marks,
// remembered sequences and outbox are rows of their own (the part column),
// the documents and conflicts are shared, and a partition's Commit is
// fenced by Batch.Prev under the lock of its own meta row. It is a
// Fencer: a Store returned by Fence also checks, under that lock, that no
// newer lease holder's Epoch has been recorded in the row.
type PostgresStore struct {
	pool   *pgxpool.Pool
	schema string
	sql    pgSQL

	// root is the whole store (itself, or the one a partition's Store was
	// made from): closing it closes the pool. part is the zero Partition
	// for the whole store; its progress rows have part -1 (pgPart).
	root *PostgresStore
	part Partition
	// epoch fences every Commit (Fence); zero: not fenced.
	epoch Epoch

	mu     sync.Mutex
	closed bool
}

// pgPart is the value of the part column of partition p's progress rows:
// -1 for the whole store.
func pgPart(p Partition) int {
	if p.whole() {
		return -1
	}
	return p.Index
}

// pgSQL holds the statements, with the schema's name in them.
type pgSQL struct {
	getDoc, getHWM, checkpoint, streams, lockMeta, updateMeta    string
	fence                                                        string
	upsertDocs, upsertConflicts, upsertHWM, deleteOut, insertOut string
	outbox, conflicts, scan, scanConflicts                       string
	docsWithField                                                string
	getSeqEvent, upsertSeqEvents, forgetSeqEvents                string
}

// newPgSQL returns the statements of the progress of partition part
// (pgPart) in schema; the documents and conflicts are shared.
func newPgSQL(schema string, part int) pgSQL {
	q := pgx.Identifier{schema}.Sanitize()
	return pgStatements(strings.NewReplacer("{s}", q, "{p}", strconv.Itoa(part)))
}

func pgStatements(r *strings.Replacer) pgSQL {
	return pgSQL{
		getDoc:     r.Replace(`SELECT state FROM {s}.docs WHERE tenant = $1 AND collection = $2 AND doc = $3`),
		getHWM:     r.Replace(`SELECT state FROM {s}.high_water WHERE part = {p} AND tenant = $1 AND client = $2 AND device = $3`),
		checkpoint: r.Replace(`SELECT checkpoint FROM {s}.meta WHERE part = {p}`),
		streams:    r.Replace(`SELECT streams FROM {s}.meta WHERE part = {p}`),
		lockMeta:   r.Replace(`SELECT checkpoint, next_outbox, partitions, epoch_bucket, epoch FROM {s}.meta WHERE part = {p} FOR UPDATE`),
		fence: r.Replace(`UPDATE {s}.meta SET epoch_bucket = $1, epoch = $2 WHERE part = {p} AND (epoch_bucket, epoch) <= ($1, $2)
RETURNING epoch_bucket`),
		updateMeta: r.Replace(`UPDATE {s}.meta SET checkpoint = $1, next_outbox = $2, streams = COALESCE($3::jsonb, streams) WHERE part = {p}`),
		upsertDocs: r.Replace(`INSERT INTO {s}.docs AS d (tenant, collection, doc, version, deleted, fields, conflicted, event, client, seq, hlc_wall, state)
SELECT t, c, i, v, del, f::jsonb, cf, e, cl, sq, w, st
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::boolean[], $6::text[], $7::boolean[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bytea[])
	AS u(t, c, i, v, del, f, cf, e, cl, sq, w, st)
ON CONFLICT (tenant, collection, doc) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, fields = excluded.fields,
	conflicted = excluded.conflicted, event = excluded.event, client = excluded.client, seq = excluded.seq,
	hlc_wall = excluded.hlc_wall, state = excluded.state`),
		upsertConflicts: r.Replace(`INSERT INTO {s}.conflicts (tenant, collection, doc, id, policy, status, record)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[])
ON CONFLICT (tenant, collection, doc, id) DO UPDATE SET policy = excluded.policy, status = excluded.status, record = excluded.record`),
		upsertHWM: r.Replace(`INSERT INTO {s}.high_water AS h (part, tenant, client, device, seq, state)
SELECT {p}, * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[])
ON CONFLICT (part, tenant, client, device) DO UPDATE SET seq = excluded.seq, state = excluded.state WHERE h.seq <= excluded.seq`),
		getSeqEvent: r.Replace(`SELECT event FROM {s}.seq_events WHERE part = {p} AND tenant = $1 AND client = $2 AND device = $3 AND seq = $4`),
		upsertSeqEvents: r.Replace(`INSERT INTO {s}.seq_events (part, tenant, client, device, seq, event)
SELECT {p}, * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
ON CONFLICT (part, tenant, client, device, seq) DO UPDATE SET event = excluded.event`),
		forgetSeqEvents: r.Replace(`DELETE FROM {s}.seq_events AS e USING unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS f(t, c, d, s)
WHERE e.part = {p} AND e.tenant = f.t AND e.client = f.c AND e.device = f.d AND e.seq <= f.s`),
		deleteOut: r.Replace(`DELETE FROM {s}.outbox WHERE part = {p} AND key = ANY($1::bigint[])`),
		insertOut: r.Replace(`INSERT INTO {s}.outbox (part, key, subject, msg_id, header, data)
SELECT {p}, * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::bytea[])`),
		outbox:        r.Replace(`SELECT key, subject, msg_id, header, data FROM {s}.outbox WHERE part = {p} ORDER BY key LIMIT $1`),
		conflicts:     r.Replace(`SELECT record FROM {s}.conflicts WHERE tenant = $1 AND collection = $2 AND doc = $3 ORDER BY id`),
		scan:          r.Replace(`SELECT state FROM {s}.docs ORDER BY tenant, collection, doc`),
		scanConflicts: r.Replace(`SELECT tenant, collection, doc, record FROM {s}.conflicts ORDER BY tenant, collection, doc, id`),
		// fields is NULL for a document jsonb cannot hold: those are
		// read and judged from their state.
		docsWithField: r.Replace(`SELECT state FROM {s}.docs WHERE tenant = $1 AND collection = $2 AND NOT deleted
	AND (fields->>$3 = $4 OR fields IS NULL) ORDER BY doc`),
	}
}

// OpenPostgres connects to the PostgreSQL database at connString (a URL,
// postgres://user:pass@host:5432/db, or a key=value string, as pgx takes
// them) and opens the view store in opts.Schema, creating or migrating its
// tables first (versioned, idempotent, one transaction; a schema written
// by a newer ebb is refused with ErrSchemaVersion). ctx bounds the
// connection and the migration only.
func OpenPostgres(ctx context.Context, connString string, opts PostgresOptions) (*PostgresStore, error) {
	if opts.Schema == "" {
		opts.Schema = DefaultPostgresSchema
	}
	var errs []error
	if opts.Cipher != nil {
		errs = append(errs, fmt.Errorf("%w: its fields stay queryable JSONB; encrypt the database's storage instead", ErrPostgresCipher))
	}
	if !validSchema.MatchString(opts.Schema) {
		errs = append(errs, fmt.Errorf("schema %q: want a lowercase identifier (a-z, 0-9, _; at most 63 bytes; no leading digit)", opts.Schema))
	}
	if opts.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("MaxConns %d is negative", opts.MaxConns))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("open PostgreSQL view store: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		// pgx's error may quote the connection string, password included.
		return nil, errors.New("open PostgreSQL view store: cannot parse the connection string")
	}
	where := fmt.Sprintf("%s:%d/%s schema %s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database, opts.Schema)
	if opts.MaxConns > 0 {
		cfg.MaxConns = opts.MaxConns
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "ebb"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL view store %s: %w", where, err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL view store %s: %w", where, err)
	}
	if err := migrate(ctx, pool, opts.Schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL view store %s: %w", where, err)
	}
	s := &PostgresStore{pool: pool, schema: opts.Schema, sql: newPgSQL(opts.Schema, pgPart(Partition{}))}
	s.root = s
	return s, nil
}

// Partition implements PartitionedStore. A partition's progress rows
// (meta, high_water, seq_events, outbox) carry its index in their part
// column; the whole store's carry -1. The first Partition call of a view
// records the count in the whole store's meta row, under that row's lock,
// so a whole-store Commit racing it either lands before the copy or is
// refused. The partition's Store shares the pool.
func (s *PostgresStore) Partition(ctx context.Context, p Partition) (Store, error) {
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("partition view store: %w", err)
	}
	if p.whole() {
		return nil, fmt.Errorf("partition view store: %w: Partition.Count %d, want 2 or more", ErrInvalidConfig, p.Count)
	}
	if s.root != s {
		return nil, fmt.Errorf("partition view store: %w: a partition of a partition", ErrInvalidConfig)
	}
	if err := s.use(ctx); err != nil {
		return nil, fmt.Errorf("partition %s of view store schema %s: %w", p, s.schema, err)
	}
	q := pgx.Identifier{s.schema}.Sanitize()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT partitions FROM `+q+`.meta WHERE part = -1 FOR UPDATE`).Scan(&n); err != nil {
			return fmt.Errorf("lock meta: %w", err)
		}
		if n != 0 && n != p.Count {
			return fmt.Errorf("%w: the view is partitioned in %d, not %d", ErrInvalidConfig, n, p.Count)
		}
		if n == 0 {
			if _, err := tx.Exec(ctx, `UPDATE `+q+`.meta SET partitions = $1 WHERE part = -1`, p.Count); err != nil {
				return fmt.Errorf("record partition count: %w", err)
			}
		}
		// Start where the whole store is: its checkpoint, stream marks and
		// marks; partition 0 takes its outbox (keys and order kept).
		tag, err := tx.Exec(ctx, `INSERT INTO `+q+`.meta (part, checkpoint, streams, next_outbox, partitions)
SELECT $1, checkpoint, streams, CASE WHEN $1 = 0 THEN next_outbox ELSE 1 END, 0 FROM `+q+`.meta WHERE part = -1
ON CONFLICT (part) DO NOTHING`, p.Index)
		if err != nil {
			return fmt.Errorf("create progress: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return nil // made before
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+q+`.high_water (part, tenant, client, device, seq, state)
SELECT $1, tenant, client, device, seq, state FROM `+q+`.high_water WHERE part = -1`, p.Index); err != nil {
			return fmt.Errorf("copy high-water marks: %w", err)
		}
		if p.Index != 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO `+q+`.outbox (part, key, subject, msg_id, header, data)
SELECT 0, key, subject, msg_id, header, data FROM `+q+`.outbox WHERE part = -1`); err != nil {
			return fmt.Errorf("copy outbox: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("partition %s of view store schema %s: %w", p, s.schema, s.fail(err))
	}
	// Like BoltStore, a partition remembers the event ids of its writers'
	// sequences from its start on; the whole store's are not copied.
	return &PostgresStore{pool: s.pool, schema: s.schema, sql: newPgSQL(s.schema, pgPart(p)), root: s, part: p}, nil
}

// Fence implements Fencer: it records e in the progress row of s (a
// partition's, or the whole store's) unless a newer epoch is there, and
// returns s fenced by e: every Commit reads the row's epoch under the
// row's lock (the one that orders commits) and is refused with ErrFenced
// when it is newer than e. The returned Store shares s's pool; closing
// it closes that Store only. A Commit through a Store that was never
// fenced is not checked: a single projector with no Group.
func (s *PostgresStore) Fence(ctx context.Context, e Epoch) (Store, error) {
	if e.IsZero() {
		return nil, fmt.Errorf("fence view store schema %s partition %s: %w: a zero epoch", s.schema, s.part, ErrInvalidConfig)
	}
	if err := s.use(ctx); err != nil {
		return nil, fmt.Errorf("fence view store schema %s partition %s: %w", s.schema, s.part, err)
	}
	var eb int64
	err := s.pool.QueryRow(ctx, s.sql.fence, bucketNanos(e), int64(min(e.Revision, math.MaxInt64))).Scan(&eb)
	if errors.Is(err, pgx.ErrNoRows) {
		var sb, sr int64
		err = s.pool.QueryRow(ctx, `SELECT epoch_bucket, epoch FROM `+pgx.Identifier{s.schema}.Sanitize()+`.meta WHERE part = $1`, pgPart(s.part)).Scan(&sb, &sr)
		if err == nil {
			err = fmt.Errorf("%w: lease epoch %s, the view records %s (a newer holder, or the lease bucket was created again with an older clock)", ErrFenced, e, pgEpoch(sb, sr))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fence view store schema %s partition %s: %w", s.schema, s.part, s.fail(err))
	}
	// Its root is never itself, so closing it leaves the pool open.
	return &PostgresStore{pool: s.pool, schema: s.schema, sql: s.sql, root: s.root, part: s.part, epoch: e}, nil
}

// bucketNanos is e.Bucket as a progress row records it: Unix
// nanoseconds, 0 for the zero time.
func bucketNanos(e Epoch) int64 {
	if e.Bucket.IsZero() {
		return 0
	}
	return e.Bucket.UnixNano()
}

// pgEpoch is the Epoch a progress row records.
func pgEpoch(bucket, rev int64) Epoch {
	e := Epoch{Revision: uint64(max(rev, 0))}
	if bucket != 0 {
		e.Bucket = time.Unix(0, bucket)
	}
	return e
}

// PartitionCount implements PartitionCounter: the count the first
// Partition call recorded, 0 when the view was never partitioned.
func (s *PostgresStore) PartitionCount(ctx context.Context) (int, error) {
	var n int
	err := s.use(ctx)
	if err == nil {
		err = s.pool.QueryRow(ctx, `SELECT partitions FROM `+pgx.Identifier{s.schema}.Sanitize()+`.meta WHERE part = -1`).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("read the partition count: %w", s.fail(err))
	}
	return n, nil
}

// Schema returns the PostgreSQL schema the store lives in.
func (s *PostgresStore) Schema() string { return s.schema }

// Close closes the connection pool, waiting for calls in progress to give
// their connections back. It is safe to call more than once.
// Closing a partition's Store (Partition) closes that Store only.
func (s *PostgresStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.root == s {
		s.pool.Close()
	}
	return nil
}

// isClosed reports whether s, or the whole store it is a partition of, is
// closed.
func (s *PostgresStore) isClosed() bool {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if !closed && s.root != s {
		return s.root.isClosed()
	}
	return closed
}

// use returns ErrClosed after Close, else ctx's error, if any.
func (s *PostgresStore) use(ctx context.Context) error {
	if s.isClosed() {
		return ErrClosed
	}
	return ctx.Err()
}

// fail names err as ErrClosed when Close raced the call that got it.
func (s *PostgresStore) fail(err error) error {
	if s.isClosed() && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Get implements Store.
func (s *PostgresStore) Get(ctx context.Context, addr events.DocAddress) (Doc, error) {
	d := Doc{Tenant: addr.Tenant, Collection: addr.Collection, ID: addr.Doc}
	err := s.use(ctx)
	if err == nil {
		var state []byte
		err = s.pool.QueryRow(ctx, s.sql.getDoc, addr.Tenant, addr.Collection, addr.Doc).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return d, nil
		case err == nil:
			d, err = decodeDocState(state)
		}
	}
	if err != nil {
		return Doc{}, fmt.Errorf("get document %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, s.fail(err))
	}
	return d, nil
}

// HighWater implements Store.
func (s *PostgresStore) HighWater(ctx context.Context, tenant, client string) (HighWater, error) {
	return s.WriterHighWater(ctx, ClientKey{Tenant: tenant, Client: client})
}

// SeqEvent implements Store.
func (s *PostgresStore) SeqEvent(ctx context.Context, k ClientKey, seq uint64) (string, error) {
	var id string
	err := s.use(ctx)
	if err == nil && seq <= math.MaxInt64 {
		err = s.pool.QueryRow(ctx, s.sql.getSeqEvent, k.Tenant, k.Client, k.Device, int64(seq)).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("read the event at sequence %d of %v: %w", seq, k, s.fail(err))
	}
	return id, nil
}

// WriterHighWater implements Store.
func (s *PostgresStore) WriterHighWater(ctx context.Context, k ClientKey) (HighWater, error) {
	tenant, client := k.Tenant, k.Client
	var h HighWater
	err := s.use(ctx)
	if err == nil {
		var state []byte
		err = s.pool.QueryRow(ctx, s.sql.getHWM, tenant, client, k.Device).Scan(&state)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return HighWater{}, nil
		case err == nil:
			h, err = decodeHighWater(state)
		}
	}
	if err != nil {
		return HighWater{}, fmt.Errorf("read high-water mark of %s/%s: %w", tenant, client, s.fail(err))
	}
	return h, nil
}

// Checkpoint implements Store.
func (s *PostgresStore) Checkpoint(ctx context.Context) (uint64, error) {
	var v int64
	err := s.use(ctx)
	if err == nil {
		err = s.pool.QueryRow(ctx, s.sql.checkpoint).Scan(&v)
	}
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", s.fail(err))
	}
	return uint64(v), nil
}

// Streams implements Store.
func (s *PostgresStore) Streams(ctx context.Context) (StreamMarks, error) {
	var m StreamMarks
	err := s.use(ctx)
	if err == nil {
		var v []byte
		err = s.pool.QueryRow(ctx, s.sql.streams).Scan(&v)
		if err == nil && v != nil {
			err = json.Unmarshal(v, &m)
		}
	}
	if err != nil {
		return StreamMarks{}, fmt.Errorf("read stream marks: %w", s.fail(err))
	}
	return m, nil
}

// Commit implements Store. The batch is one transaction that first locks
// the meta row: commits take turns, so outbox keys rise in commit order
// and the checkpoint check cannot race another commit.
func (s *PostgresStore) Commit(ctx context.Context, b *Batch) error {
	if b.Reanchor && b.Streams == nil {
		return fmt.Errorf("commit batch up to %d: %w: a re-anchor without stream marks", b.Checkpoint, ErrCheckpoint)
	}
	err := s.use(ctx)
	var keys []uint64
	if err == nil {
		keys, err = s.commit(ctx, b)
	}
	if err != nil {
		return fmt.Errorf("commit batch up to %d: %w", b.Checkpoint, s.fail(err))
	}
	for i := range b.Outbox {
		b.Outbox[i].Key = keys[i]
	}
	return nil
}

func (s *PostgresStore) commit(ctx context.Context, b *Batch) ([]uint64, error) {
	if b.Checkpoint > math.MaxInt64 {
		return nil, fmt.Errorf("checkpoint %d does not fit a bigint", b.Checkpoint)
	}
	var streams []byte
	if b.Streams != nil {
		v, err := json.Marshal(b.Streams)
		if err != nil {
			return nil, err
		}
		streams = v
	}
	out, err := outboxColumns(b.Outbox)
	if err != nil {
		return nil, err
	}
	docs, err := docColumns(b.Docs)
	if err != nil {
		return nil, err
	}
	confs, err := conflictColumns(b.Conflicts)
	if err != nil {
		return nil, err
	}
	hwm := hwmColumns(b.HighWater)
	seqs, forget := seqEventColumns(b.SeqEvents, b.ForgetSeqEvents)

	var keys []uint64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var old, next, eb, er int64
		var parts int
		if err := tx.QueryRow(ctx, s.sql.lockMeta).Scan(&old, &next, &parts, &eb, &er); err != nil {
			return fmt.Errorf("lock meta: %w", err)
		}
		if stored := pgEpoch(eb, er); !s.epoch.IsZero() && s.epoch.Before(stored) {
			return fmt.Errorf("%w: this holder's lease epoch is %s, the view's partition %s records %s (another instance took it over)", ErrFenced, s.epoch, s.part, stored)
		}
		if b.Checkpoint < uint64(old) && !b.Reanchor {
			return fmt.Errorf("%w: %d is below %d", ErrCheckpoint, b.Checkpoint, old)
		}
		if b.Prev != nil && *b.Prev != uint64(old) {
			return fmt.Errorf("%w: the batch was decided from checkpoint %d, the store is at %d (another projector of partition %s committed)", ErrCheckpoint, *b.Prev, old, s.part)
		}
		if parts != 0 {
			return fmt.Errorf("%w: the view is partitioned in %d: commit through its partitions", ErrCheckpoint, parts)
		}
		keys = make([]uint64, len(b.Outbox))
		for i := range keys {
			keys[i] = uint64(next) + uint64(i)
		}
		out.key = make([]int64, len(keys))
		for i, k := range keys {
			out.key[i] = int64(k)
		}
		var pb pgx.Batch
		pb.Queue(s.sql.updateMeta, int64(b.Checkpoint), next+int64(len(keys)), streams)
		if len(docs.tenant) > 0 {
			pb.Queue(s.sql.upsertDocs, docs.tenant, docs.collection, docs.doc, docs.version, docs.deleted, docs.fields,
				docs.conflicted, docs.event, docs.client, docs.seq, docs.wall, docs.state)
		}
		if len(confs.tenant) > 0 {
			pb.Queue(s.sql.upsertConflicts, confs.tenant, confs.collection, confs.doc, confs.id, confs.policy, confs.status, confs.record)
		}
		if len(hwm.tenant) > 0 {
			pb.Queue(s.sql.upsertHWM, hwm.tenant, hwm.client, hwm.device, hwm.seq, hwm.state)
		}
		if len(seqs.tenant) > 0 {
			pb.Queue(s.sql.upsertSeqEvents, seqs.tenant, seqs.client, seqs.device, seqs.seq, seqs.event)
		}
		if len(forget.tenant) > 0 {
			pb.Queue(s.sql.forgetSeqEvents, forget.tenant, forget.client, forget.device, forget.seq)
		}
		if len(b.Published) > 0 {
			pub := make([]int64, len(b.Published))
			for i, k := range b.Published {
				pub[i] = int64(k) // a key beyond int64 was never assigned: it wraps to no row
			}
			pb.Queue(s.sql.deleteOut, pub)
		}
		if len(keys) > 0 {
			pb.Queue(s.sql.insertOut, out.key, out.subject, out.msgID, out.header, out.data)
		}
		return tx.SendBatch(ctx, &pb).Close()
	})
	return keys, err
}

type docCols struct {
	tenant, collection, doc, event, client []string
	version, seq, wall                     []int64
	deleted, conflicted                    []bool
	fields                                 []*string
	state                                  [][]byte
}

// docColumns lays the documents out as columns, one row per address: a
// later entry for an address replaces an earlier one (one INSERT may not
// touch a row twice).
func docColumns(in []Doc) (docCols, error) {
	var c docCols
	at := make(map[events.DocAddress]int, len(in))
	for i := range in {
		d := &in[i]
		state, err := encodeDocState(d) // docstate.go: the change and the audience
		if err != nil {
			return c, fmt.Errorf("encode document %s/%s/%s: %w", d.Tenant, d.Collection, d.ID, err)
		}
		var fields *string
		if !d.Deleted {
			f := d.Fields
			if f == nil {
				f = events.Fields{}
			}
			v, err := json.Marshal(f)
			if err != nil {
				return c, fmt.Errorf("encode fields of %s/%s/%s: %w", d.Tenant, d.Collection, d.ID, err)
			}
			if jsonbSafe(v) {
				s := string(v)
				fields = &s
			}
		}
		if d.Version > math.MaxInt64 || d.Seq > math.MaxInt64 {
			return c, fmt.Errorf("document %s/%s/%s: version %d or sequence %d does not fit a bigint", d.Tenant, d.Collection, d.ID, d.Version, d.Seq)
		}
		if j, ok := at[d.Address()]; ok {
			c.version[j], c.deleted[j], c.fields[j], c.conflicted[j] = int64(d.Version), d.Deleted, fields, len(d.Conflicts) > 0
			c.event[j], c.client[j], c.seq[j], c.wall[j], c.state[j] = d.Event, d.Client, int64(d.Seq), d.HLC.Wall, state
			continue
		}
		at[d.Address()] = len(c.tenant)
		c.tenant, c.collection, c.doc = append(c.tenant, d.Tenant), append(c.collection, d.Collection), append(c.doc, d.ID)
		c.version, c.deleted, c.fields = append(c.version, int64(d.Version)), append(c.deleted, d.Deleted), append(c.fields, fields)
		c.conflicted, c.event, c.client = append(c.conflicted, len(d.Conflicts) > 0), append(c.event, d.Event), append(c.client, d.Client)
		c.seq, c.wall, c.state = append(c.seq, int64(d.Seq)), append(c.wall, d.HLC.Wall), append(c.state, state)
	}
	return c, nil
}

type conflictCols struct {
	tenant, collection, doc, id, policy, status []string
	record                                      [][]byte
}

// conflictColumns lays the records out as columns, a later record with the
// same document and id replacing an earlier one.
func conflictColumns(in []ConflictRecord) (conflictCols, error) {
	var c conflictCols
	type key struct {
		addr events.DocAddress
		id   string
	}
	at := make(map[key]int, len(in))
	for _, r := range in {
		v, err := json.Marshal(r.Conflict)
		if err != nil {
			return c, fmt.Errorf("encode conflict %s: %w", r.Conflict.ID, err)
		}
		k := key{r.Address, r.Conflict.ID}
		if j, ok := at[k]; ok {
			c.policy[j], c.status[j], c.record[j] = string(r.Conflict.Policy), string(r.Conflict.Status), v
			continue
		}
		at[k] = len(c.tenant)
		c.tenant, c.collection, c.doc = append(c.tenant, r.Address.Tenant), append(c.collection, r.Address.Collection), append(c.doc, r.Address.Doc)
		c.id, c.policy, c.status = append(c.id, r.Conflict.ID), append(c.policy, string(r.Conflict.Policy)), append(c.status, string(r.Conflict.Status))
		c.record = append(c.record, v)
	}
	return c, nil
}

type hwmCols struct {
	tenant, client, device []string
	seq                    []int64
	state                  [][]byte
}

func hwmColumns(in map[ClientKey]HighWater) hwmCols {
	var c hwmCols
	for k, h := range in {
		c.tenant, c.client, c.device = append(c.tenant, k.Tenant), append(c.client, k.Client), append(c.device, k.Device)
		c.seq, c.state = append(c.seq, int64(min(h.Seq, math.MaxInt64))), append(c.state, encodeHighWater(h))
	}
	return c
}

type seqEventCols struct {
	tenant, client, device, event []string
	seq                           []int64
}

// seqEventColumns lays out the ids to remember (one row per writer and
// sequence: a later entry wins) and, per writer, the sequence at or below
// which the remembered ids may go.
func seqEventColumns(in []SeqEvent, forget map[ClientKey]uint64) (seqEventCols, seqEventCols) {
	var c, f seqEventCols
	type key struct {
		w   ClientKey
		seq uint64
	}
	at := make(map[key]int, len(in))
	for _, e := range in {
		if e.Seq > math.MaxInt64 {
			continue // beyond any sequence the window keeps
		}
		if j, ok := at[key{e.Writer, e.Seq}]; ok {
			c.event[j] = e.Event
			continue
		}
		at[key{e.Writer, e.Seq}] = len(c.tenant)
		c.tenant, c.client, c.device = append(c.tenant, e.Writer.Tenant), append(c.client, e.Writer.Client), append(c.device, e.Writer.Device)
		c.seq, c.event = append(c.seq, int64(e.Seq)), append(c.event, e.Event)
	}
	for w, seq := range forget {
		f.tenant, f.client, f.device = append(f.tenant, w.Tenant), append(f.client, w.Client), append(f.device, w.Device)
		f.seq = append(f.seq, int64(min(seq, math.MaxInt64)))
	}
	return c, f
}

type outboxCols struct {
	key            []int64
	subject, msgID []string
	header, data   [][]byte
}

func outboxColumns(in []OutboxEntry) (outboxCols, error) {
	var c outboxCols
	for i := range in {
		e := &in[i]
		var h []byte
		if len(e.Header) > 0 {
			v, err := json.Marshal(e.Header)
			if err != nil {
				return c, fmt.Errorf("encode headers of outbox entry %s: %w", e.MsgID, err)
			}
			h = v
		}
		data := e.Data
		if data == nil {
			data = []byte{}
		}
		c.subject, c.msgID = append(c.subject, e.Subject), append(c.msgID, e.MsgID)
		c.header, c.data = append(c.header, h), append(c.data, data)
	}
	return c, nil
}

// jsonbSafe reports whether PostgreSQL's jsonb takes the JSON text v:
// valid UTF-8, no \u0000 escape (jsonb strings are text, which holds no
// NUL), no unpaired surrogate escape. v is valid JSON, so a backslash
// only occurs in a string.
func jsonbSafe(v []byte) bool {
	if !utf8.Valid(v) {
		return false
	}
	hex := func(i int) (rune, bool) {
		if i+6 > len(v) || v[i] != '\\' || v[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range v[i+2 : i+6] {
			switch {
			case c >= '0' && c <= '9':
				r = r<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' {
			continue
		}
		r, ok := hex(i)
		if !ok {
			i++ // \" \\ \n and the like
			continue
		}
		switch {
		case r == 0:
			return false
		case r >= 0xDC00 && r <= 0xDFFF:
			return false // a low surrogate with no high one before it
		case r >= 0xD800 && r <= 0xDBFF:
			lo, ok := hex(i + 6)
			if !ok || lo < 0xDC00 || lo > 0xDFFF {
				return false
			}
			i += 11
		default:
			i += 5
		}
	}
	return true
}

// Outbox implements Store.
func (s *PostgresStore) Outbox(ctx context.Context, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := s.use(ctx)
	if err == nil {
		var lim *int64
		if limit > 0 {
			l := int64(limit)
			lim = &l
		}
		var rows pgx.Rows
		rows, err = s.pool.Query(ctx, s.sql.outbox, lim)
		if err == nil {
			for rows.Next() {
				var key int64
				var header []byte
				e := OutboxEntry{}
				if err = rows.Scan(&key, &e.Subject, &e.MsgID, &header, &e.Data); err != nil {
					break
				}
				e.Key = uint64(key)
				if header != nil {
					if err = json.Unmarshal(header, &e.Header); err != nil {
						err = fmt.Errorf("outbox entry %d: %w", key, err)
						break
					}
				}
				out = append(out, e)
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", s.fail(err))
	}
	return out, nil
}

// RemoveOutbox implements Store.
func (s *PostgresStore) RemoveOutbox(ctx context.Context, keys []uint64) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.use(ctx)
	if err == nil {
		del := make([]int64, len(keys))
		for i, k := range keys {
			del[i] = int64(k)
		}
		_, err = s.pool.Exec(ctx, s.sql.deleteOut, del)
	}
	if err != nil {
		return fmt.Errorf("remove %d outbox entries: %w", len(keys), s.fail(err))
	}
	return nil
}

// Conflicts implements Store.
func (s *PostgresStore) Conflicts(ctx context.Context, addr events.DocAddress) ([]events.Conflict, error) {
	var out []events.Conflict
	err := s.use(ctx)
	if err == nil {
		var rows pgx.Rows
		rows, err = s.pool.Query(ctx, s.sql.conflicts, addr.Tenant, addr.Collection, addr.Doc)
		if err == nil {
			for rows.Next() {
				var rec []byte
				if err = rows.Scan(&rec); err != nil {
					break
				}
				var cf events.Conflict
				if err = json.Unmarshal(rec, &cf); err != nil {
					break
				}
				out = append(out, cf)
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read conflicts of %s/%s/%s: %w", addr.Tenant, addr.Collection, addr.Doc, s.fail(err))
	}
	return out, nil
}

// Scan implements Store. It reads the documents as one query, streamed:
// fn runs while the query holds one pooled connection, and may use the
// store (on another).
func (s *PostgresStore) Scan(ctx context.Context, fn func(Doc) error) error {
	if err := s.use(ctx); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, s.sql.scan)
	if err != nil {
		return fmt.Errorf("scan documents: %w", s.fail(err))
	}
	defer rows.Close()
	for rows.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var state []byte
		if err := rows.Scan(&state); err != nil {
			return fmt.Errorf("scan documents: %w", s.fail(err))
		}
		d, err := decodeDocState(state)
		if err != nil {
			return fmt.Errorf("scan documents: %w", err)
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan documents: %w", s.fail(err))
	}
	return nil
}

// DocsWithField implements Store, with a query on the fields column.
func (s *PostgresStore) DocsWithField(ctx context.Context, tenant, collection, field, value string) ([]Doc, error) {
	if err := s.use(ctx); err != nil {
		return nil, err
	}
	fail := func(err error) error {
		return fmt.Errorf("find %s/%s documents by field %s: %w", tenant, collection, field, err)
	}
	rows, err := s.pool.Query(ctx, s.sql.docsWithField, tenant, collection, field, value)
	if err != nil {
		return nil, fail(s.fail(err))
	}
	defer rows.Close()
	var out []Doc
	for rows.Next() {
		var state []byte
		if err := rows.Scan(&state); err != nil {
			return nil, fail(s.fail(err))
		}
		d, err := decodeDocState(state)
		if err != nil {
			return nil, fail(err)
		}
		if d.Exists() && fieldIs(d.Fields, field, value) { // ->> also matches 5 for "5"
			out = append(out, d)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fail(s.fail(err))
	}
	return out, nil
}

// ScanConflicts implements Store.
func (s *PostgresStore) ScanConflicts(ctx context.Context, fn func(ConflictRecord) error) error {
	if err := s.use(ctx); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, s.sql.scanConflicts)
	if err != nil {
		return fmt.Errorf("scan conflicts: %w", s.fail(err))
	}
	defer rows.Close()
	for rows.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var r ConflictRecord
		var rec []byte
		if err := rows.Scan(&r.Address.Tenant, &r.Address.Collection, &r.Address.Doc, &rec); err != nil {
			return fmt.Errorf("scan conflicts: %w", s.fail(err))
		}
		if err := json.Unmarshal(rec, &r.Conflict); err != nil {
			return fmt.Errorf("scan conflicts: %s/%s/%s: %w", r.Address.Tenant, r.Address.Collection, r.Address.Doc, err)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan conflicts: %w", s.fail(err))
	}
	return nil
}
