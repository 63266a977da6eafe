package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ebbsync/ebb/deploy/keys"
	"github.com/ebbsync/ebb/projection"
)

// isPostgresURL reports whether a --view value names a PostgreSQL database
// rather than a bbolt file.
func isPostgresURL(v string) bool {
	return strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://")
}

// viewStore is what serve and verify need of the view: the projector's
// Store, closed when done.
type viewStore interface {
	projection.Store
	Close() error
}

// openView opens the server view: the bbolt file at view, or the
// PostgreSQL database it names. A PostgreSQL view refuses a cipher
// (projection.ErrPostgresCipher): its documents stay queryable JSONB, and
// encryption at rest is the database's. The URL, which may hold a password,
// is never part of an error.
func openView(ctx context.Context, view string, cipher *keys.Cipher, timeout time.Duration) (viewStore, error) {
	if isPostgresURL(view) {
		s, err := projection.OpenPostgres(ctx, view, projection.PostgresOptions{Cipher: cipher})
		if err != nil {
			return nil, fmt.Errorf("open the PostgreSQL view: %w", err)
		}
		return s, nil
	}
	s, err := projection.OpenBolt(view, projection.BoltOptions{Timeout: timeout, Cipher: cipher})
	if err != nil {
		return nil, fmt.Errorf("open view %s: %w", view, err)
	}
	return s, nil
}
