package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ebbsync/ebb/projection"
	"github.com/ebbsync/ebb/projection/rules"
)

// rulesFile is the copy of the sync rules serve ran last, in the data
// directory, for ebb verify: a rebuild must judge writes by the rules the
// live projector used.
const rulesFile = "rules.yaml"

// loadRules reads and parses the --rules file; "" means no rules. A bad
// file is a usage error naming the collection, rule and field.
func loadRules(path string) (*rules.Set, []byte, error) {
	if path == "" {
		return nil, nil, nil
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, usagef("--rules: %v", err)
	}
	s, err := rules.Parse(src)
	if err != nil {
		return nil, nil, usagef("--rules %s: %v", path, err)
	}
	return s, src, nil
}

// recordRules keeps the rules serve runs (src; nil: none) in the data
// directory for ebb verify, replacing or removing what an earlier run
// kept. The projector itself records their fingerprint in the view
// (projection.StreamMarks.Rules) and publishes every live document again
// when it changed.
func recordRules(dir string, src []byte) error {
	p := filepath.Join(dir, rulesFile)
	if src == nil {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("record sync rules: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record sync rules: %w", err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, src, 0o600); err != nil {
		return fmt.Errorf("record sync rules: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("record sync rules: %w", err)
	}
	return nil
}

// recordedRules returns the rules serve last ran in dir: nil when none.
func recordedRules(dir string) (*rules.Set, error) {
	s, err := rules.Load(filepath.Join(dir, rulesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return s, err
}

// beforeProject is the server's BeforeProject: the policy check and
// record, then the rules record.
func (c serveConfig) beforeProject(policies func(context.Context, projection.Store) error) func(context.Context, projection.Store) error {
	return func(ctx context.Context, store projection.Store) error {
		if err := policies(ctx, store); err != nil {
			return err
		}
		return recordRules(c.data, c.rulesSrc)
	}
}
