package producer

import (
	"errors"
	"fmt"
	"os"
	"time"

	"go.etcd.io/bbolt"
)

// Diagnosis is what Diagnose found in a local store.
type Diagnosis struct {
	Path    string
	Problem error    // nil: the file is whole
	Pages   []string // bbolt's page-level check failures, if it could run
	Client  string   // read from the log's meta bucket, when readable
	Device  string
	Pending int // unsent entries, when readable
}

// Diagnose checks the local store at path without changing it: the header
// (CheckFile), then, if the file can be mapped, every page (bbolt's Check)
// and the log's identity and backlog. A bbolt panic on a bad page is
// reported as a problem, not raised.
func Diagnose(path string) (d Diagnosis) {
	d.Path = path
	if err := CheckFile(path); err != nil {
		d.Problem = err
		return d
	}
	defer func() {
		if p := recover(); p != nil {
			d.Problem = fmt.Errorf("local store %s: %w: %v", path, ErrStoreDamaged, p)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		d.Problem = fmt.Errorf("local store %s: %w", path, err)
		return d
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			d.Pages = append(d.Pages, err.Error())
		}
		if len(d.Pages) > 0 {
			return nil
		}
		if meta := tx.Bucket(bucketMeta); meta != nil {
			d.Client, d.Device = string(meta.Get(metaClient)), string(meta.Get(metaDevice))
		}
		if b := tx.Bucket(bucketPending); b != nil {
			d.Pending = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		d.Problem = fmt.Errorf("local store %s: %w", path, err)
	} else if len(d.Pages) > 0 {
		d.Problem = fmt.Errorf("local store %s: %w: %d bad pages", path, ErrStoreDamaged, len(d.Pages))
	}
	return d
}

// SetAside moves a damaged local store (and its marker) out of the way, to
// "<path>.damaged-<UTC time>", so the next open makes a new store with a
// new device. Nothing is deleted. It returns the new name.
func SetAside(path string, now time.Time) (string, error) {
	dst := path + ".damaged-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("set aside %s: %w", path, err)
	}
	if err := os.Rename(path+MarkerSuffix, dst+MarkerSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("set aside %s: %w", path+MarkerSuffix, err)
	}
	return dst, nil
}
