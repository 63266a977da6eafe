package producer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
)

// bbolt's on-disk header, as far as CheckFile reads it: two meta pages at
// the start of the file (page 0 and page 1), each a 16-byte page header
// followed by the meta record whose first 64 bytes a FNV-64a checksum
// covers (everything before the checksum).
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	boltPageHeader = 16
	boltMetaSummed = 56 // magic, version, page size, flags, root bucket, freelist, pgid, txid
	minPageSize    = 512
	maxPageSize    = 1 << 20
)

// CheckFile checks, without opening it, that the bbolt file at path is
// whole enough to open: it exists, is not empty, has a valid meta page, and
// is at least as long as that meta page says. bbolt itself maps a truncated
// file and dies with SIGBUS on the first read past its end, and a store
// that is missing or empty would otherwise be silently replaced by a new
// one. The error wraps ErrStoreMissing, ErrStoreEmpty or ErrStoreDamaged
// and names the file; the file is never changed.
func CheckFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("local store %s: %w", path, ErrStoreMissing)
	}
	if err != nil {
		return fmt.Errorf("local store %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("local store %s: %w", path, err)
	}
	if st.Size() == 0 {
		return fmt.Errorf("local store %s: %w", path, ErrStoreEmpty)
	}
	m0, err0 := readMeta(f, 0)
	pageSize := int64(4096)
	if err0 == nil {
		pageSize = int64(m0.pageSize)
	}
	m1, err1 := readMeta(f, pageSize)
	var m boltMeta
	switch {
	case err0 == nil && err1 == nil:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case err0 == nil:
		m = m0
	case err1 == nil:
		m = m1
	default:
		return fmt.Errorf("local store %s: %w: no valid meta page (%v; %v)", path, ErrStoreDamaged, err0, err1)
	}
	if need := int64(m.pgid) * int64(m.pageSize); st.Size() < need {
		return fmt.Errorf("local store %s: %w: truncated to %d bytes, its meta page needs %d", path, ErrStoreDamaged, st.Size(), need)
	}
	return nil
}

type boltMeta struct {
	pageSize uint32
	pgid     uint64
	txid     uint64
}

// readMeta reads and validates the meta page at offset off.
func readMeta(r io.ReaderAt, off int64) (boltMeta, error) {
	buf := make([]byte, boltPageHeader+boltMetaSummed+8)
	if _, err := r.ReadAt(buf, off); err != nil {
		return boltMeta{}, fmt.Errorf("meta page at %d: %w", off, err)
	}
	b := buf[boltPageHeader:]
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != boltMagic {
		return boltMeta{}, fmt.Errorf("meta page at %d: not a bbolt file (bad magic)", off)
	}
	if v := le.Uint32(b[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("meta page at %d: bbolt version %d, want %d", off, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(b[:boltMetaSummed])
	if le.Uint64(b[boltMetaSummed:]) != h.Sum64() {
		return boltMeta{}, fmt.Errorf("meta page at %d: checksum mismatch", off)
	}
	m := boltMeta{pageSize: le.Uint32(b[8:]), pgid: le.Uint64(b[40:]), txid: le.Uint64(b[48:])}
	if m.pageSize < minPageSize || m.pageSize > maxPageSize {
		return boltMeta{}, fmt.Errorf("meta page at %d: implausible page size %d", off, m.pageSize)
	}
	return m, nil
}
