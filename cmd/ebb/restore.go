package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ebbsync/ebb/deploy/server"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/consumer"
	"github.com/ebbsync/ebb/deploy/datadir"
	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// restoreAbout is `ebb help restore`'s paragraph.
const restoreAbout = `Restores into a new data directory (--data, which must hold no JetStream storage, policies or view), starting the embedded NATS on it for the time of the restore; or, with --nats, into an external NATS where none of the four streams exists. Sequence numbers do not change: each stream comes back from its snapshot with the same messages at the same sequences, with their timestamps. The server gives each restored stream a new creation time; its metadata (ebb.restored_from_created, ebb.restored_last_seq) names the stream the backup was taken of and the backup's last sequence, so a replica whose cursor is at or below it resumes where it was, pulling only what changed since, and one that had read past the backup resyncs fully. The view is rebuilt from EVENTS up to the sequence the projector had acknowledged when the backup began (what CHANGES and RECEIPTS in the backup reflect), with the writers' high-water marks, and records the restored EVENTS and CHANGES as its own; 'ebb serve' then applies the rest of EVENTS and publishes those changes and receipts again, and the change of any document the restored CHANGES lacks. Writes acknowledged after the backup began are not in it. With --key-file the new data directory is encrypted as ebb serve --key-file encrypts it.`

// restoreRecord is `ebb restore --json`.
type restoreRecord struct {
	Data       string          `json:"data"`
	Streams    []restoredState `json:"streams"`
	Checkpoint uint64          `json:"checkpoint"` // the view's, rebuilt from EVENTS
	Docs       int             `json:"docs"`
	Policies   string          `json:"policies"`
}

type restoredState struct {
	Name     string    `json:"name"`
	Messages uint64    `json:"messages"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Created  time.Time `json:"created"`
}

func runRestore(ctx context.Context, m *Main, args []string) error {
	var data, natsURL, view string
	var asJSON bool
	fs := m.newFlagSet("restore")
	fs.StringVar(&data, "data", "./ebb-data", "the new data directory: the policies, the view (unless --view), and JetStream's storage (unless --nats)")
	fs.StringVar(&natsURL, "nats", "", "restore the streams into this NATS server instead of the embedded one on --data")
	fs.StringVar(&view, "view", "", "the view to rebuild: a bbolt file (default view.db in --data) or an empty PostgreSQL database postgres://...")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	var conn connFlags
	conn.register(m, fs, clientContext{})
	var keyFile string
	fs.StringVar(&keyFile, "key-file", m.env("EBB_KEY_FILE", ""), "encrypt the new data directory with this key file, as ebb serve --key-file will (env EBB_KEY_FILE)")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("ebb restore: want DIR or FILE.tar, got %d arguments", fs.NArg())
	}
	src, cleanup, err := openBackup(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer cleanup()
	man, err := readManifest(src)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := checkBackup(src, man); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if view == "" {
		view = filepath.Join(data, viewFile)
	}
	if err := freshDataDir(data, natsURL == "", view); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	lock, err := datadir.Acquire(data, datadir.Options{Command: "ebb restore"})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer lock.Release()
	sec, err := verifyKeys(keyFile, data)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}

	pc := policyConfig{Default: "lww"}
	if man.Policies {
		b, err := os.ReadFile(filepath.Join(src, policyFile))
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := json.Unmarshal(b, &pc); err != nil {
			return fmt.Errorf("restore: %s in the backup: %w", policyFile, err)
		}
	}
	policies, err := pc.resolve(projection.NewRegistry())
	if err != nil {
		return err
	}

	var nc *nats.Conn
	if natsURL != "" {
		nc, err = conn.connect(natsURL, "ebb-restore")
	} else {
		var srv *embedded.Server
		srv, err = embedded.Start(ctx, embedded.Config{Dir: filepath.Join(data, "jetstream"), DontListen: true, JetStreamKey: sec.jsKey})
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer srv.Shutdown(context.WithoutCancel(ctx))
		nc, err = srv.Connect()
	}
	if err != nil {
		return fmt.Errorf("restore: connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, s := range man.Streams {
		if _, err := js.Stream(ctx, s.Name); err == nil {
			return usagef("restore: stream %s exists on the server: restore needs a server without ebb's streams", s.Name)
		}
	}
	rec := restoreRecord{Data: data, Policies: pc.String(), Streams: []restoredState{}}
	for _, s := range man.Streams {
		if err := restoreOne(ctx, nc, src, s); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		st, err := js.Stream(ctx, s.Name)
		if err != nil {
			return fmt.Errorf("restore: read restored stream %s: %w", s.Name, err)
		}
		info := st.CachedInfo()
		rec.Streams = append(rec.Streams, restoredState{Name: s.Name, Messages: info.State.Msgs, FirstSeq: info.State.FirstSeq,
			LastSeq: info.State.LastSeq, Created: info.Created})
	}
	// The policies go in only once the streams are back: a data directory
	// with them and no streams would be taken for a server's.
	if man.Policies {
		if err := pc.save(data); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	store, err := server.OpenView(ctx, view, sec.view, time.Second)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer store.Close()
	upTo := uint64(0)
	if man.Projector != nil {
		upTo = man.Projector.AckFloor
	}
	if man.Partitioned {
		// projection.Rebuild does not rebuild a partitioned view: the
		// projectors rebuild it from EVENTS when serve starts, and reseed
		// CHANGES (replicas then pull every document again).
		fmt.Fprintln(m.Stderr, "ebb restore: the backup is of a partitioned server: the view is left empty for the projectors to rebuild")
	} else if rec.Docs, err = rebuildRestored(ctx, js, store, projection.Config{Policies: policies}, upTo); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	rec.Checkpoint = upTo
	if asJSON {
		return printJSON(m.Stdout, rec)
	}
	for _, s := range rec.Streams {
		fmt.Fprintf(m.Stdout, "%-9s %d messages, sequences %d..%d\n", s.Name, s.Messages, s.FirstSeq, s.LastSeq)
	}
	fmt.Fprintf(m.Stdout, "view rebuilt from EVENTS 1..%d: %d documents; policies %s\n", upTo, rec.Docs, rec.Policies)
	fmt.Fprintf(m.Stdout, "restored into %s: start 'ebb serve --data %s'\n", data, data)
	return nil
}

// rebuildRestored rebuilds the view from the restored EVENTS up to upTo,
// publishing nothing (the restored CHANGES and RECEIPTS hold what the
// projector published for those events), and records the restored EVENTS
// and CHANGES as the streams the view counts in and published into, so the
// projector resumes at upTo+1 without re-anchoring or reseeding CHANGES.
// It returns the view's document count.
func rebuildRestored(ctx context.Context, js jetstream.JetStream, store server.ViewStore, cfg projection.Config, upTo uint64) (int, error) {
	cp, err := store.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	docs := 0
	if err := store.Scan(ctx, func(projection.Doc) error { docs++; return nil }); err != nil {
		return 0, err
	}
	if cp != 0 || docs != 0 {
		return 0, usagef("the view is not empty (checkpoint %d, %d documents): restore rebuilds it and needs an empty one", cp, docs)
	}
	if err := projection.Rebuild(ctx, js, store, cfg, upTo); err != nil {
		return 0, err
	}
	docs = 0
	if err := store.Scan(ctx, func(projection.Doc) error { docs++; return nil }); err != nil {
		return 0, err
	}
	evs, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamEvents, err)
	}
	chg, err := js.Stream(ctx, events.StreamChanges)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", events.StreamChanges, err)
	}
	ei, ci := evs.CachedInfo(), chg.CachedInfo()
	marks := projection.StreamMarks{
		Events:  projection.StreamMark{Created: ei.Created, FirstSeq: ei.State.FirstSeq},
		Changes: projection.StreamMark{Created: ci.Created, LastSeq: ci.State.LastSeq, Msgs: ci.State.Msgs},
		Docs:    uint64(docs), DocsCounted: true,
	}
	missing, err := missingChanges(ctx, js, store, cfg)
	if err != nil {
		return 0, err
	}
	if err := store.Commit(ctx, &projection.Batch{Checkpoint: upTo, Streams: &marks, Outbox: missing}); err != nil {
		return 0, fmt.Errorf("record the restored streams in the view: %w", err)
	}
	return docs, nil
}

// checkBackup checks every snapshot file against the SHA-256 in the
// manifest, before anything is restored.
func checkBackup(src string, man *backupManifest) error {
	for _, s := range man.Streams {
		f, err := os.Open(filepath.Join(src, s.File))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", s.File, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
			return fmt.Errorf("%s: SHA-256 %s, the manifest says %s: the backup is damaged", s.File, got, s.SHA256)
		}
	}
	return nil
}

// missingChanges returns, as outbox entries the projector publishes when
// it starts, the current change of every document of the rebuilt view
// that the restored CHANGES lacks or holds at a lower version. The
// projector acknowledges a batch once its changes are stored, so normally
// there is none; but a consumer it recreated (at its checkpoint + 1)
// shows that checkpoint as its ack floor before a failing publish went
// through. Each goes under the reseed's Nats-Msg-Id form,
// seed:<ULID>:<subject>:<version>.
func missingChanges(ctx context.Context, js jetstream.JetStream, store server.ViewStore, cfg projection.Config) ([]projection.OutboxEntry, error) {
	have := map[string]uint64{}
	err := readFiltered(ctx, js, events.StreamChanges, []string{events.ChangesPrefix + ".>"}, func(subject string, data []byte, _ *jetstream.MsgMetadata) error {
		if c, err := events.DecodeChange(data); err == nil {
			have[subject] = c.Version
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	gen := events.NewIDSource(nil).New().String()
	var out []projection.OutboxEntry
	err = store.Scan(ctx, func(d projection.Doc) error {
		subject := events.ChangeSubject(d.Tenant, d.Collection, d.ID)
		if have[subject] >= d.Version {
			return nil
		}
		data, err := cfg.Policies.EncodeChange(&d, nil)
		if err != nil {
			return fmt.Errorf("encode change of %s/%s/%s: %w", d.Tenant, d.Collection, d.ID, err)
		}
		out = append(out, projection.OutboxEntry{Subject: subject, MsgID: fmt.Sprintf("seed:%s:%s:%d", gen, subject, d.Version), Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("compare the view with %s: %w", events.StreamChanges, err)
	}
	return out, nil
}

// restoreOne restores one stream from its snapshot file, checking the
// file's SHA-256 again as it goes (a file changed since checkBackup fails
// after the server has the bytes: the stream is then deleted again).
func restoreOne(ctx context.Context, nc *nats.Conn, src string, s backupStream) error {
	f, err := os.Open(filepath.Join(src, s.File))
	if err != nil {
		return err
	}
	defer f.Close()
	img, err := markRestored(s)
	if err != nil {
		return err
	}
	h := sha256.New()
	if err := restoreStream(ctx, nc, s.Name, img, io.TeeReader(f, h)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != s.SHA256 {
		js, err := jetstream.New(nc)
		if err == nil {
			_ = js.DeleteStream(ctx, s.Name)
		}
		return fmt.Errorf("%s: SHA-256 %s, the manifest says %s: the backup is damaged", s.File, got, s.SHA256)
	}
	return nil
}

// markRestored returns the stream's image with its configuration's
// metadata naming the stream the backup was taken of and the last
// sequence it held (consumer.MetaRestoredCreated, MetaRestoredLastSeq):
// the server gives a restored stream a new creation time, and replicas
// whose cursor is at or below that sequence then resume instead of
// taking the stream for a new one.
func markRestored(s backupStream) (streamImage, error) {
	img := s.Image
	var cfg map[string]any
	if err := json.Unmarshal(img.Config, &cfg); err != nil {
		return img, fmt.Errorf("%s: the backup's configuration: %w", s.Name, err)
	}
	var st struct {
		LastSeq uint64 `json:"last_seq"`
	}
	if err := json.Unmarshal(img.State, &st); err != nil {
		return img, fmt.Errorf("%s: the backup's state: %w", s.Name, err)
	}
	md, _ := cfg["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
	}
	if !s.Created.IsZero() {
		md[consumer.MetaRestoredCreated] = s.Created.UTC().Format(time.RFC3339Nano)
		md[consumer.MetaRestoredLastSeq] = strconv.FormatUint(st.LastSeq, 10)
	}
	cfg["metadata"] = md
	b, err := json.Marshal(cfg)
	if err != nil {
		return img, err
	}
	img.Config = b
	return img, nil
}

// freshDataDir checks that data holds nothing a restore would overwrite:
// JetStream storage (when the embedded server is the target) or a view
// file.
func freshDataDir(data string, embeddedNATS bool, view string) error {
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	check := []string{filepath.Join(data, policyFile)}
	if embeddedNATS {
		check = append(check, filepath.Join(data, "jetstream"))
	}
	if !server.IsPostgresURL(view) {
		check = append(check, view)
	}
	for _, p := range check {
		if _, err := os.Stat(p); err == nil {
			return usagef("%s exists: restore needs a new data directory", p)
		}
	}
	return nil
}

// openBackup returns the directory of a backup: DIR itself, or a FILE.tar
// unpacked into a temporary directory that cleanup removes.
func openBackup(path string) (dir string, cleanup func(), err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if st.IsDir() {
		return path, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "ebb-restore-*")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	if err := untar(path, tmp); err != nil {
		cleanup()
		return "", nil, err
	}
	return tmp, cleanup, nil
}

// untar unpacks the regular files of a backup archive into dir; names
// with a directory part are refused.
func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg || filepath.Base(h.Name) != h.Name || h.Name == "." || h.Name == ".." {
			return fmt.Errorf("read %s: unexpected entry %q: not an ebb backup", path, h.Name)
		}
		out, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", h.Name, err)
		}
	}
}

// readManifest reads and checks a backup's manifest.
func readManifest(dir string) (*backupManifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, usagef("%s has no %s: not an ebb backup, or an unfinished one", dir, manifestFile)
	}
	if err != nil {
		return nil, err
	}
	var man backupManifest
	if err := json.Unmarshal(b, &man); err != nil {
		return nil, fmt.Errorf("%s: %w", manifestFile, err)
	}
	if man.Format != backupFormat {
		return nil, usagef("%s: backup format %d, this ebb reads %d", manifestFile, man.Format, backupFormat)
	}
	have := map[string]bool{}
	for _, s := range man.Streams {
		have[s.Name] = true
	}
	if !have[events.StreamEvents] {
		return nil, fmt.Errorf("%s: no %s in the backup", manifestFile, events.StreamEvents)
	}
	return &man, nil
}
