package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ebbsync/ebb/deploy/auth"
)

// natsConfigAbout is the help paragraph of `ebb nats-config`.
const natsConfigAbout = "For an external NATS server or cluster (ebb serve --nats): the accounts block of its config, from the same users file ebb serve --auth reads (go doc ./deploy/auth): one account per user, the EBB account with the streams and the admins, plain passwords written as bcrypt hashes. Include it in every NATS server's config, with JetStream on, and reload them (nats-server --signal reload). With --rules (the file is checked as ebb serve checks it) or --filtered the block is in filtered reads mode, which ebb serve --rules --nats requires: clients may not read CHANGES directly and read their changes through the server. ebb serve connects as an admin of the file (--nats nats://ADMIN:PASSWORD@HOST:4222). -o writes FILE with mode 0600."

// runNATSConfig prints, or writes to -o, the nats-server accounts block of
// the users file, in filtered reads mode with --rules or --filtered.
func runNATSConfig(ctx context.Context, m *Main, args []string) error {
	fs := m.newFlagSet("nats-config")
	authFile := fs.String("auth", "", "YAML users file (as ebb serve --auth takes): required")
	rulesFile := fs.String("rules", "", "YAML sync rules file ebb serve --rules runs: write the filtered reads configuration (the file is checked)")
	filtered := fs.Bool("filtered", false, "write the filtered reads configuration (sync rules) without naming a rules file")
	out := fs.String("o", "", "write the configuration to this file (mode 0600) instead of stdout")
	asJSON := fs.Bool("json", false, "print a JSON object instead: filtered, users, and the configuration (config) or the file written (file)")
	if err := m.parse(fs, args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return usagef("nats-config takes no arguments, got %q", fs.Args())
	case *authFile == "":
		return usagef("nats-config: --auth USERS.yaml is required: the users whose accounts the configuration holds")
	case *rulesFile != "" && *filtered:
		return usagef("nats-config: give --rules or --filtered, not both (--rules already writes the filtered reads configuration)")
	}
	users, err := auth.Load(*authFile)
	if err != nil {
		return usagef("--auth: %v", err)
	}
	if !hasAdmin(users) {
		return usagef("--auth %s: no user has role admin: ebb serve --nats connects to the NATS server as one (account %s)", *authFile, auth.StreamAccount)
	}
	if *rulesFile != "" {
		if _, _, err := loadRules(*rulesFile); err != nil {
			return err
		}
		*filtered = true
	}
	conf, err := users.WithFilteredReads(*filtered).NATSConfig()
	if err != nil {
		return fmt.Errorf("nats-config: %w", err)
	}
	if *out != "" {
		if err := writePrivateFile(*out, []byte(conf)); err != nil {
			return err
		}
	}
	switch {
	case *asJSON:
		r := natsConfigResult{Filtered: *filtered, Users: len(users.List()), File: *out}
		if *out == "" {
			r.Config = conf
		}
		return printJSON(m.Stdout, r)
	case *out == "":
		_, err := io.WriteString(m.Stdout, conf)
		return err
	}
	return nil
}

// natsConfigResult is what `ebb nats-config --json` prints.
type natsConfigResult struct {
	Filtered bool   `json:"filtered"`         // filtered reads mode (sync rules)
	Users    int    `json:"users"`            // users in the configuration
	File     string `json:"file,omitempty"`   // the file -o wrote
	Config   string `json:"config,omitempty"` // the configuration, without -o
}

// hasAdmin reports whether u lists a user of role admin.
func hasAdmin(u *auth.Users) bool {
	for _, usr := range u.List() {
		if usr.Role == auth.RoleAdmin {
			return true
		}
	}
	return false
}

// writePrivateFile writes data to path with mode 0600, replacing any file
// there only once data is complete (a temporary file in the same
// directory, fsynced, renamed, then the directory fsynced).
func writePrivateFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	// On disk before it takes the name: a crash after the rename must
	// not leave an empty or partial accounts file under it.
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename itself is durable once the directory is.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("write %s: open its directory to fsync: %w", path, err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync its directory: %w", path, err)
	}
	return nil
}
