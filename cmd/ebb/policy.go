package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
// in the data directory so verify replays under the same policies.
type policyConfig struct {
	Default     string            `json:"default"`
	Collections map[string]string `json:"collections,omitempty"`
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

func (c policyConfig) save(dir string) error {
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
