package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ebbsync/ebb/events"
)

// clientContext is a saved set of client settings, like a `nats context`:
// the values a user would otherwise export as EBB_* variables. An empty
// field leaves that setting to its default. Precedence is flags, then
// environment variables, then the context, then the defaults.
type clientContext struct {
	NATS     string `json:"nats,omitempty"`
	Tenant   string `json:"tenant,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"` // a login JWT, instead of a password
	Data     string `json:"data,omitempty"`
	TLSCA    string `json:"tls_ca,omitempty"`
	TLSCert  string `json:"tls_cert,omitempty"`
	TLSKey   string `json:"tls_key,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
}

// errNoContext is a context name that was never saved.
var errNoContext = errors.New("no such context")

// contextDir is where contexts live: $XDG_CONFIG_HOME/ebb, else
// ~/.config/ebb.
func (m *Main) contextDir() (string, error) {
	if x := m.Getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "ebb"), nil
	}
	if h := m.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "ebb"), nil
	}
	return "", errors.New("neither XDG_CONFIG_HOME nor HOME is set: no place for contexts")
}

// contextPath is the file of context name, after checking the name.
func (m *Main) contextPath(name string) (string, error) {
	if err := events.ValidateName("context", name, 64); err != nil || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", usagef("context name %q: want letters, digits, '-' or '_'", name)
	}
	dir, err := m.contextDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "contexts", name+".json"), nil
}

func (m *Main) loadContext(name string) (clientContext, error) {
	var cc clientContext
	p, err := m.contextPath(name)
	if err != nil {
		return cc, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return cc, usagef("context %q: %v (see 'ebb context ls')", name, errNoContext)
	}
	if err != nil {
		return cc, fmt.Errorf("read context %q: %w", name, err)
	}
	if err := json.Unmarshal(b, &cc); err != nil {
		return cc, fmt.Errorf("read context %q from %s: %w", name, p, err)
	}
	return cc, nil
}

// currentContext is the name `ebb context use` selected, "" for none.
func (m *Main) currentContext() string {
	dir, err := m.contextDir()
	if err != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, "context"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// selectedContext loads the context a client command runs under: named
// (from --context), else env EBB_CONTEXT, else the one in use. None
// selected is the zero context; a selected one that is missing is an
// error.
func (m *Main) selectedContext(named string) (clientContext, error) {
	name := named
	if name == "" {
		name = m.Getenv("EBB_CONTEXT")
	}
	if name == "" {
		name = m.currentContext()
	}
	if name == "" {
		return clientContext{}, nil
	}
	return m.loadContext(name)
}

// contextArg finds --context NAME (or --context=NAME) in args, before the
// flags are parsed: the context supplies their defaults.
func contextArg(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"--context", "-context"} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return ""
}

func runContext(ctx context.Context, m *Main, args []string) error {
	if len(args) == 0 {
		return usagef("ebb context: want save, use, ls, show or rm (run 'ebb context --help')")
	}
	verb, rest := args[0], args[1:]
	switch verb {
	case "save":
		return runContextSave(m, rest)
	case "use", "ls", "show", "rm":
		return runContextOther(m, verb, rest)
	case "-h", "-help", "--help":
		m.commandHelp("context", nil)
		return flag.ErrHelp
	}
	return usagef("ebb context: unknown verb %q (want save, use, ls, show or rm)", verb)
}

// runContextSave writes a context from its flags; an existing one is
// replaced. The file is readable by its owner only: it may hold a password.
func runContextSave(m *Main, args []string) error {
	var cc clientContext
	var use bool
	fs := m.newFlagSet("context save")
	fs.StringVar(&cc.NATS, "nats", "", "NATS server URL")
	fs.StringVar(&cc.Tenant, "tenant", "", "tenant")
	fs.StringVar(&cc.User, "user", "", "user name (the client id under auth)")
	fs.StringVar(&cc.Password, "password", "", "password (stored in the context file, mode 0600)")
	fs.StringVar(&cc.Token, "token", "", "login JWT instead of a password (stored in the context file, mode 0600)")
	fs.StringVar(&cc.Data, "data", "", "client data directory (made absolute)")
	fs.StringVar(&cc.TLSCA, "tls-ca", "", "PEM file of the CA that signed the server's certificate")
	fs.StringVar(&cc.TLSCert, "tls-cert", "", "PEM client certificate")
	fs.StringVar(&cc.TLSKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&cc.KeyFile, "key-file", "", "key file encrypting the local store")
	fs.BoolVar(&use, "use", false, "also make it the context in use")
	var asJSON bool
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("ebb context save: want NAME, got %d argument(s)", fs.NArg())
	}
	name := fs.Arg(0)
	p, err := m.contextPath(name)
	if err != nil {
		return err
	}
	// Relative paths would change meaning with the working directory.
	for _, f := range []*string{&cc.Data, &cc.TLSCA, &cc.TLSCert, &cc.TLSKey, &cc.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			abs, err := filepath.Abs(*f)
			if err != nil {
				return fmt.Errorf("context save %s: %w", name, err)
			}
			*f = abs
		}
	}
	b, err := json.MarshalIndent(cc, "", "  ")
	if err != nil {
		return fmt.Errorf("context save %s: %w", name, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("context save %s: %w", name, err)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("context save %s: %w", name, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("context save %s: %w", name, err)
	}
	if use {
		if err := m.useContext(name); err != nil {
			return err
		}
	}
	return printContextDone(m, asJSON, "saved", name, p)
}

func (m *Main) useContext(name string) error {
	if _, err := m.loadContext(name); err != nil {
		return err
	}
	dir, err := m.contextDir()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "context"), []byte(name+"\n"), 0o600); err != nil {
		return fmt.Errorf("context use %s: %w", name, err)
	}
	return nil
}

// contextRecord is one context in `ebb context ls --json` and `show --json`.
type contextRecord struct {
	Name    string `json:"name"`
	Current bool   `json:"current"`
	clientContext
}

func runContextOther(m *Main, verb string, args []string) error {
	var asJSON bool
	fs := m.newFlagSet("context " + verb)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := m.parse(fs, interleave(fs, args)); err != nil {
		return err
	}
	current := m.currentContext()
	switch verb {
	case "use", "rm":
		if fs.NArg() != 1 {
			return usagef("ebb context %s: want NAME, got %d argument(s)", verb, fs.NArg())
		}
		name := fs.Arg(0)
		if verb == "use" {
			if err := m.useContext(name); err != nil {
				return err
			}
			return printContextDone(m, asJSON, "using", name, "")
		}
		p, err := m.contextPath(name)
		if err != nil {
			return err
		}
		if err := os.Remove(p); errors.Is(err, os.ErrNotExist) {
			return usagef("context %q: %v", name, errNoContext)
		} else if err != nil {
			return fmt.Errorf("context rm %s: %w", name, err)
		}
		if name == current {
			dir, _ := m.contextDir()
			_ = os.Remove(filepath.Join(dir, "context"))
		}
		return printContextDone(m, asJSON, "removed", name, p)
	case "show":
		if fs.NArg() > 1 {
			return usagef("ebb context show: want [NAME], got %d arguments", fs.NArg())
		}
		name := current
		if fs.NArg() == 1 {
			name = fs.Arg(0)
		}
		if name == "" {
			return usagef("no context in use (see 'ebb context ls')")
		}
		cc, err := m.loadContext(name)
		if err != nil {
			return err
		}
		rec := contextRecord{Name: name, Current: name == current, clientContext: cc.redacted()}
		if asJSON {
			return printJSON(m.Stdout, rec)
		}
		fmt.Fprint(m.Stdout, rec.text())
		return nil
	}
	// ls
	if fs.NArg() > 0 {
		return usagef("ebb context ls takes no arguments, got %q", fs.Args())
	}
	recs := []contextRecord{}
	if dir, err := m.contextDir(); err == nil {
		ents, err := os.ReadDir(filepath.Join(dir, "contexts"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("context ls: %w", err)
		}
		for _, e := range ents {
			name, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok {
				continue
			}
			cc, err := m.loadContext(name)
			if err != nil {
				return err
			}
			recs = append(recs, contextRecord{Name: name, Current: name == current, clientContext: cc.redacted()})
		}
	}
	slices.SortFunc(recs, func(a, b contextRecord) int { return strings.Compare(a.Name, b.Name) })
	if asJSON {
		return printJSON(m.Stdout, recs)
	}
	if len(recs) == 0 {
		fmt.Fprintln(m.Stdout, "no contexts (save one with 'ebb context save NAME --nats URL --tenant T --user U --data DIR')")
		return nil
	}
	for _, r := range recs {
		mark := " "
		if r.Current {
			mark = "*"
		}
		fmt.Fprintf(m.Stdout, "%s %-12s nats=%s tenant=%s user=%s data=%s\n", mark, r.Name, r.NATS, r.Tenant, r.User, r.Data)
	}
	return nil
}

// redacted hides the password and the token.
func (c clientContext) redacted() clientContext {
	if c.Password != "" {
		c.Password = "REDACTED"
	}
	if c.Token != "" {
		c.Token = "REDACTED"
	}
	return c
}

func (r contextRecord) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "context:  %s (in use: %v)\n", r.Name, r.Current)
	for _, kv := range [][2]string{{"nats", r.NATS}, {"tenant", r.Tenant}, {"user", r.User}, {"password", r.Password}, {"token", r.Token},
		{"data", r.Data}, {"tls-ca", r.TLSCA}, {"tls-cert", r.TLSCert}, {"tls-key", r.TLSKey}, {"key-file", r.KeyFile}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "%-9s %s\n", kv[0]+":", kv[1])
		}
	}
	return b.String()
}

// printContextDone reports what save, use or rm did.
func printContextDone(m *Main, asJSON bool, did, name, path string) error {
	if asJSON {
		return printJSON(m.Stdout, struct {
			Done string `json:"done"`
			Name string `json:"name"`
			Path string `json:"path,omitempty"`
		}{did, name, path})
	}
	if path != "" && did == "saved" {
		fmt.Fprintf(m.Stdout, "saved context %s in %s\n", name, path)
		return nil
	}
	fmt.Fprintf(m.Stdout, "%s context %s\n", did, name)
	return nil
}
