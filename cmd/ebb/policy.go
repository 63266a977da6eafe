package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ebbsync/ebb/projection"
)

// policyFlags collects repeated --policy COLLECTION=POLICY flags.
type policyFlags map[string]string

func (p policyFlags) String() string {
	parts := make([]string, 0, len(p))
	for c, n := range p {
		parts = append(parts, c+"="+n)
	}
	return strings.Join(parts, ",")
}

func (p policyFlags) Set(v string) error {
	coll, name, ok := strings.Cut(v, "=")
	if !ok || coll == "" || name == "" {
		return fmt.Errorf("want COLLECTION=POLICY, got %q", v)
	}
	if prev, dup := p[coll]; dup && prev != name {
		return fmt.Errorf("collection %q given two policies, %q and %q", coll, prev, name)
	}
	p[coll] = name
	return nil
}

// policyConfig is the server's choice of conflict policies. serve records it
// in the data directory (policies.json) so verify replays under the same
// policies, and a serve given no policies uses the recorded ones.
type policyConfig struct {
	Default     string            `json:"default" yaml:"default"`
	Collections map[string]string `json:"collections,omitempty" yaml:"collections"`
	// History lists the changes `ebb policy set` made, oldest first. It is
	// a record, not yet replayed: each change was allowed only because no
	// event of its collection was in EVENTS, so the current policies
	// replay the whole stream as it was applied.
	History []policyChange `json:"history,omitempty" yaml:"-"`
}

// policyChange is one recorded change of a collection's policy.
type policyChange struct {
	// After is the last EVENTS sequence applied under From; To is in
	// force from the next one.
	After      uint64    `json:"after_seq"`
	Collection string    `json:"collection"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	At         time.Time `json:"at"`
}

const policyFile = "policies.json"

// resolve turns names into projection.Policies; an unknown name is a usage
// error listing the known ones.
func (c policyConfig) resolve(reg *projection.Registry) (projection.Policies, error) {
	p, err := reg.Policies(c.Default, c.Collections)
	if errors.Is(err, projection.ErrUnknownPolicy) {
		return projection.Policies{}, usagef("%v (known: lww, merge, reject, manual)", err)
	}
	return p, err
}

// save records c in dir, keeping the history already recorded there
// unless c brings its own.
func (c policyConfig) save(dir string) error {
	if c.History == nil {
		if prev, err := loadPolicies(dir); err == nil {
			c.History = prev.History
		}
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("save policies: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save policies: %w", err)
	}
	tmp := filepath.Join(dir, policyFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save policies: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, policyFile))
}

// loadPolicies reads the policies serve recorded in dir; none recorded means
// the defaults.
func loadPolicies(dir string) (policyConfig, error) {
	b, err := os.ReadFile(filepath.Join(dir, policyFile))
	if errors.Is(err, os.ErrNotExist) {
		return policyConfig{Default: "lww"}, nil
	}
	if err != nil {
		return policyConfig{}, fmt.Errorf("load policies: %w", err)
	}
	var c policyConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return policyConfig{}, fmt.Errorf("load policies from %s: %w", filepath.Join(dir, policyFile), err)
	}
	return c, nil
}

// checkPolicyChange refuses policies other than those a non-empty view was
// built under: `ebb verify` replays every event under the recorded
// policies, so a change would make it report differences that are not
// there (or hide real ones). A serve given no policies uses the recorded
// ones; `ebb policy set` changes one on purpose where verify stays true.
func checkPolicyChange(ctx context.Context, c serveConfig, store interface {
	Checkpoint(context.Context) (uint64, error)
}) error {
	if _, err := os.Stat(filepath.Join(c.data, policyFile)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	prev, err := loadPolicies(c.data)
	if err != nil {
		return err
	}
	if prev.equal(c.policies) {
		return nil
	}
	cp, err := store.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("read the view's checkpoint: %w", err)
	}
	if cp == 0 {
		return nil
	}
	return usagef("the view in %s was built under policies %s; serving it under %s would make ebb verify replay its %d events under policies they were not applied with. Start without policy settings to use the recorded ones, change one on purpose with 'ebb policy set' (server stopped), or use a new --data directory",
		c.data, prev, c.policies, cp)
}

// equal reports whether c and o choose the same policy for every collection.
func (c policyConfig) equal(o policyConfig) bool {
	def := func(p policyConfig) string {
		if p.Default == "" {
			return "lww"
		}
		return p.Default
	}
	return def(c) == def(o) && maps.Equal(c.Collections, o.Collections)
}

// String formats c as "default=lww todos=manual ...".
func (c policyConfig) String() string {
	s := "default=" + c.Default
	for _, k := range slices.Sorted(maps.Keys(c.Collections)) {
		s += " " + k + "=" + c.Collections[k]
	}
	return s
}
