package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// backupAbout is `ebb help backup`'s paragraph.
const backupAbout = `Works while the server serves: it reads through NATS, never the files. Each stream is a JetStream snapshot ($JS.API.STREAM.SNAPSHOT): the server's consistent copy of the stream with every message at its sequence, with its timestamp, so a restore keeps every sequence number. Taken in this order: the projector's durable (its acknowledged EVENTS sequence), CHANGES, RECEIPTS, DEAD, then EVENTS, the source of truth, last, so it holds every event the others reflect. The policies and their history are copied from --data (policies.json). Not backed up: the view and the writers' high-water marks (the restore rebuilds both from EVENTS), consumers, and the partition lease bucket. A FILE ending in .tar is one tar archive; anything else is a new directory. The snapshots hold the messages as the server reads them, in the clear even when the server encrypts its data directory: keep backups where only operators read them.`

// backupFormat is the version of the backup layout (manifest.json).
const backupFormat = 1

const manifestFile = "manifest.json"

// backupManifest is a backup's manifest.json, written last: a directory
// without it is an unfinished backup.
type backupManifest struct {
	Format        int       `json:"format"`
	Created       time.Time `json:"created"`
	Ebb           string    `json:"ebb"`
	ServerVersion string    `json:"server_version"`
	// Projector is the projector's durable on EVENTS when the backup
	// began; nil when there was none (or several, partitioned).
	Projector *backupProjector `json:"projector,omitempty"`
	// Partitioned is set when EVENTS had per-partition projector durables.
	Partitioned bool           `json:"partitioned,omitempty"`
	Streams     []backupStream `json:"streams"`
	// Policies is set when policies.json (the policies and their history)
	// is in the backup.
	Policies bool `json:"policies"`
}

// backupProjector is the projector's position when the backup began.
type backupProjector struct {
	Durable string `json:"durable"`
	// AckFloor is the last EVENTS sequence the projector acknowledged,
	// which it does only once the batch's changes and receipts are stored:
	// CHANGES and RECEIPTS, snapshot after it was read, reflect every
	// event up to it.
	AckFloor uint64 `json:"ack_floor"`
}

// backupStream is one stream's snapshot in a backup.
type backupStream struct {
	Name   string      `json:"name"`
	File   string      `json:"file"`
	Bytes  int64       `json:"bytes"`
	SHA256 string      `json:"sha256"`
	Image  streamImage `json:"image"` // the config and state the server gave with the snapshot
	// Created is the stream's creation time: the restored stream gets a
	// new one, and records this one in its metadata (see restore).
	Created time.Time `json:"created"`
}

// backupOrder is the order the streams are snapshot in: EVENTS last.
var backupOrder = []string{events.StreamChanges, events.StreamReceipts, events.StreamDead, events.StreamEvents}

func runBackup(ctx context.Context, m *Main, args []string) error {
	var a adminFlags
	var data string
	var noPolicies bool
	fs := m.newFlagSet("backup")
	a.register(m, fs)
	fs.StringVar(&data, "data", "./ebb-data", "the server's data directory, to copy its policies (policies.json) from")
	fs.BoolVar(&noPolicies, "no-policies", false, "back up without the policies (the restore then takes its policies from flags or config)")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("ebb backup: want DIR or FILE.tar, got %d arguments", fs.NArg())
	}
	target := fs.Arg(0)
	var policies []byte
	if !noPolicies {
		b, err := os.ReadFile(filepath.Join(data, policyFile))
		if errors.Is(err, os.ErrNotExist) {
			return usagef("backup: no policies recorded at %s (give the server's --data, or --no-policies)", filepath.Join(data, policyFile))
		}
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		policies = b
	}
	dir := target
	asTar := strings.HasSuffix(target, ".tar")
	if asTar {
		if _, err := os.Stat(target); err == nil {
			return usagef("backup: %s exists", target)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(target), ".ebb-backup-*")
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := newDir(target); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	nc, js, err := a.connect("ebb-backup")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer nc.Close()
	man := backupManifest{Format: backupFormat, Created: time.Now().UTC(), Ebb: readBuildInfo().Version,
		ServerVersion: nc.ConnectedServerVersion(), Policies: policies != nil, Streams: []backupStream{}}
	evs, err := js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return fmt.Errorf("backup: read stream %s: %w", events.StreamEvents, err)
	}
	durables, err := projectorDurables(ctx, evs)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	switch {
	case len(durables) == 1 && durables[0].Name == projection.DefaultDurable:
		man.Projector = &backupProjector{Durable: durables[0].Name, AckFloor: durables[0].AckFloor.Stream}
	case len(durables) > 0:
		man.Partitioned = true
	}
	for _, name := range backupOrder {
		bs, err := backupOne(ctx, nc, dir, name)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		man.Streams = append(man.Streams, bs)
	}
	if policies != nil {
		if err := writeFileSync(filepath.Join(dir, policyFile), policies); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := writeFileSync(filepath.Join(dir, manifestFile), append(mb, '\n')); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if asTar {
		if err := tarDir(dir, target); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	if a.json {
		return printJSON(m.Stdout, struct {
			Target string `json:"target"`
			backupManifest
		}{target, man})
	}
	for _, s := range man.Streams {
		fmt.Fprintf(m.Stdout, "%-9s %s in %d bytes\n", s.Name, imageSummary(s.Image), s.Bytes)
	}
	if man.Projector != nil {
		fmt.Fprintf(m.Stdout, "projector acknowledged EVENTS up to %d\n", man.Projector.AckFloor)
	}
	fmt.Fprintf(m.Stdout, "backed up to %s\n", target)
	return nil
}

// backupOne snapshots stream into dir/<stream>.snap (the server's
// snapshot format, s2-compressed).
func backupOne(ctx context.Context, nc *nats.Conn, dir, name string) (backupStream, error) {
	bs := backupStream{Name: name, File: name + ".snap"}
	js, err := jetstream.New(nc)
	if err != nil {
		return bs, err
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		return bs, fmt.Errorf("read stream %s: %w", name, err)
	}
	bs.Created = st.CachedInfo().Created
	f, err := os.OpenFile(filepath.Join(dir, bs.File), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return bs, err
	}
	defer f.Close()
	h := sha256.New()
	img, n, err := snapshotStream(ctx, nc, name, io.MultiWriter(f, h))
	if err != nil {
		return bs, err
	}
	if err := f.Sync(); err != nil {
		return bs, fmt.Errorf("sync %s: %w", f.Name(), err)
	}
	bs.Bytes, bs.SHA256, bs.Image = n, hex.EncodeToString(h.Sum(nil)), img
	return bs, f.Close()
}

// imageSummary says what a stream image holds: "12 messages, sequences 1..12".
func imageSummary(img streamImage) string {
	var st struct {
		Msgs     uint64 `json:"messages"`
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	}
	_ = json.Unmarshal(img.State, &st)
	return fmt.Sprintf("%d messages, sequences %d..%d,", st.Msgs, st.FirstSeq, st.LastSeq)
}

// newDir creates dir, which must not exist or be empty.
func newDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(dir, 0o700)
	case err != nil:
		return err
	case len(ents) > 0:
		return usagef("%s is not empty", dir)
	}
	return nil
}

// writeFileSync writes a file and syncs it.
func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

// tarDir writes the regular files of dir into a new tar archive at path,
// the manifest last, through a temporary file renamed into place.
func tarDir(dir, path string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer f.Close()
	tw := tar.NewWriter(f)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() != manifestFile {
			names = append(names, e.Name())
		}
	}
	for _, n := range append(names, manifestFile) {
		if err := tarFile(tw, filepath.Join(dir, n), n); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func tarFile(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: st.ModTime(), Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}
