package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/ebbsync/ebb/events"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidUsers wraps every problem found in a users file; the
	// message names the user and the field.
	ErrInvalidUsers = errors.New("invalid users file")
	// ErrBadCredentials means an unknown user or a wrong password. It does
	// not say which, on purpose.
	ErrBadCredentials = errors.New("bad credentials")
)

// Role says what a user may do; see the package documentation.
type Role string

// The roles.
const (
	RoleClient  Role = "client"
	RoleService Role = "service"
	RoleAdmin   Role = "admin"
)

// ReservedPrefix starts the names of ebb's internal users; a users file
// may not use it.
const ReservedPrefix = "_ebb"

// User is one entry of a users file.
type User struct {
	Name string `yaml:"name"`
	// Password is the plain password; PasswordHash a bcrypt hash of it.
	// Exactly one is set.
	Password     string `yaml:"password,omitempty"`
	PasswordHash string `yaml:"password_hash,omitempty"`
	// Tenant the user is confined to; required for client and service,
	// ignored for admin.
	Tenant string `yaml:"tenant,omitempty"`
	Role   Role   `yaml:"role"`
	// Durables are the names of the durable consumers on CHANGES that
	// this user owns (role service only): only it may create, update,
	// read from, ack for or delete them. Each is one subject token of
	// letters, digits, '-' and '_', and no two users list the same name.
	Durables []string `yaml:"durables,omitempty"`
	// Groups are the groups the user belongs to, which sync rules may
	// name (events.GroupPrincipal) and which the server stamps on the
	// user's events (events.HeaderWriterGroups). Each is a valid name
	// (events.ValidateName), listed once.
	Groups []string `yaml:"groups,omitempty"`
}

// Users is a validated set of users. It is safe for concurrent use.
type Users struct {
	list   []User
	byName map[string]int
	limits Limits // with defaults
	guard  *Guard
	dummy  []byte // a bcrypt hash at the highest cost of the file, or nil
	// filtered: a client reads CHANGES only through the change
	// responder (WithFilteredReads).
	filtered bool

	mu    sync.Mutex
	known map[string][32]byte // user -> sha256 of a password bcrypt accepted
}

// file is the YAML document.
type file struct {
	Limits Limits `yaml:"limits"`
	Users  []User `yaml:"users"`
}

// Load reads and validates the users file at path (see Parse).
func Load(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	u, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return u, nil
}

// Parse decodes and validates a users file:
//
//	users:
//	  - {name: alice, password: secret, tenant: acme, role: client, groups: [team-a]}
//	  - {name: billing, password_hash: "$2a$10$...", tenant: acme, role: service}
//	  - {name: ops, password: s3cret, role: admin}
//
// Unknown keys, duplicate names, names starting with ReservedPrefix, a
// missing tenant (client, service), both or neither of password and
// password_hash, a password_hash that is not bcrypt, and a group that is
// no valid name or is listed twice are all refused; the
// error wraps ErrInvalidUsers and lists every problem.
func Parse(data []byte) (*Users, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrInvalidUsers, err)
	}
	return NewWithLimits(f.Users, f.Limits)
}

// New validates list (see Parse) and returns it as Users with default
// Limits.
func New(list []User) (*Users, error) { return NewWithLimits(list, Limits{}) }

// NewWithLimits validates list and limits (see Parse) and returns them as
// Users; zero fields of limits take their defaults.
func NewWithLimits(list []User, limits Limits) (*Users, error) {
	var errs []error
	bad := func(i int, name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: user %d (%q): %s", ErrInvalidUsers, i+1, name, fmt.Sprintf(format, args...)))
	}
	if len(list) == 0 {
		errs = append(errs, fmt.Errorf("%w: no users", ErrInvalidUsers))
	}
	if err := limits.validate(); err != nil {
		errs = append(errs, err)
	}
	u := &Users{list: slices.Clone(list), byName: make(map[string]int, len(list)), known: map[string][32]byte{},
		limits: limits.WithDefaults()}
	owner := map[string]string{} // durable -> user
	for i, usr := range u.list {
		for _, d := range usr.Durables {
			switch {
			case usr.Role != RoleService:
				bad(i, usr.Name, "durables are for role service, not %s", usr.Role)
			case !isPlainName(d) || len(d) > 64:
				bad(i, usr.Name, "durable %q: want 1 to 64 letters, digits, '-' or '_'", d)
			case owner[d] != "":
				bad(i, usr.Name, "durable %q is already owned by %q", d, owner[d])
			default:
				owner[d] = usr.Name
			}
		}
		if err := validateGroups(usr.Groups); err != nil {
			bad(i, usr.Name, "%v", err)
		}
		if err := events.ValidateName("name", usr.Name, events.DefaultLimits.MaxNameBytes); err != nil {
			bad(i, usr.Name, "%v", err)
		}
		if strings.HasPrefix(usr.Name, ReservedPrefix) {
			bad(i, usr.Name, "names starting with %q are reserved", ReservedPrefix)
		}
		if _, dup := u.byName[usr.Name]; dup {
			bad(i, usr.Name, "duplicate name")
		}
		u.byName[usr.Name] = i
		switch {
		case usr.Password == "" && usr.PasswordHash == "":
			bad(i, usr.Name, "set password or password_hash")
		case usr.Password != "" && usr.PasswordHash != "":
			bad(i, usr.Name, "set only one of password and password_hash")
		case usr.PasswordHash != "":
			if _, err := bcrypt.Cost([]byte(usr.PasswordHash)); err != nil {
				bad(i, usr.Name, "password_hash is not a bcrypt hash: %v", err)
			}
		}
		switch usr.Role {
		case RoleClient, RoleService:
			if err := events.ValidateName("tenant", usr.Tenant, events.DefaultLimits.MaxNameBytes); err != nil {
				bad(i, usr.Name, "role %s needs a tenant: %v", usr.Role, err)
			}
		case RoleAdmin:
		default:
			bad(i, usr.Name, "role %q: want client, service or admin", usr.Role)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	hashes := make([]string, 0, len(u.list))
	for _, usr := range u.list {
		hashes = append(hashes, usr.PasswordHash)
	}
	var err error
	if u.dummy, err = dummyHash(hashes); err != nil {
		return nil, err
	}
	u.guard = NewGuard(u.limits.Login)
	return u, nil
}

// validateGroups checks a user's groups: each a valid name, none twice.
func validateGroups(groups []string) error {
	var errs []error
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if err := events.ValidateName("group", g, events.DefaultLimits.MaxNameBytes); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[g] {
			errs = append(errs, fmt.Errorf("group %q listed twice", g))
		}
		seen[g] = true
	}
	return errors.Join(errs...)
}

// payFailure spends what a wrong password of the costliest bcrypt user
// costs (nothing if there is none).
func (u *Users) payFailure(password string) {
	if u.dummy != nil {
		_ = bcrypt.CompareHashAndPassword(u.dummy, []byte(password))
	}
}

// isPlainName reports whether s is non-empty and only ASCII letters,
// digits, '-' and '_': one subject token that needs no encoding.
func isPlainName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Limits returns the limits of u, with defaults filled in.
func (u *Users) Limits() Limits { return u.limits }

// List returns the users in file order.
func (u *Users) List() []User { return slices.Clone(u.list) }

// Lookup returns the user called name.
func (u *Users) Lookup(name string) (User, bool) {
	i, ok := u.byName[name]
	if !ok {
		return User{}, false
	}
	usr := u.list[i]
	usr.Durables, usr.Groups = slices.Clone(usr.Durables), slices.Clone(usr.Groups)
	return usr, true
}

// Identity returns the user called name (as Lookup): Users is the
// Directory of a server without token logins.
func (u *Users) Identity(name string) (User, bool) { return u.Lookup(name) }

// AuthenticateFrom is Authenticate behind u's login Guard (see
// LoginLimit): source is the client's address (host or host:port). A
// refusal by the guard wraps ErrTooManyAttempts and is a *LockedError;
// it costs no password check.
func (u *Users) AuthenticateFrom(ctx context.Context, source, name, password string) (User, error) {
	usr, known := u.Lookup(name)
	cached := func() bool { return known && usr.PasswordHash != "" && u.cached(name, password) }
	err := u.guard.CheckCached(ctx, name, Source(source), cached, func() error {
		var err error
		usr, err = u.Authenticate(name, password)
		return err
	})
	if err != nil {
		return User{}, err
	}
	return usr, nil
}

// cached reports whether password is the one bcrypt last accepted for name.
func (u *Users) cached(name, password string) bool {
	sum := sha256.Sum256([]byte(password))
	u.mu.Lock()
	have, hit := u.known[name]
	u.mu.Unlock()
	return hit && subtle.ConstantTimeCompare(have[:], sum[:]) == 1
}

// Authenticate returns the user called name if password is theirs, and an
// error wrapping ErrBadCredentials otherwise. If any user has a
// password_hash, every failure of an unknown name or of a plain password
// also pays one bcrypt check at the highest cost in the file, so failures
// do not tell which names exist (give all hashes one cost, or the cost
// tells them apart); with plain passwords only, failures cost a constant
// time compare. It has no rate limit: AuthenticateFrom adds it.
func (u *Users) Authenticate(name, password string) (User, error) {
	usr, ok := u.Lookup(name)
	if !ok {
		u.payFailure(password)
		return User{}, fmt.Errorf("authenticate %q: %w", name, ErrBadCredentials)
	}
	if usr.PasswordHash == "" {
		if subtle.ConstantTimeCompare([]byte(usr.Password), []byte(password)) != 1 {
			u.payFailure(password)
			return User{}, fmt.Errorf("authenticate %q: %w", name, ErrBadCredentials)
		}
		return usr, nil
	}
	if u.cached(name, password) {
		return usr, nil
	}
	sum := sha256.Sum256([]byte(password))
	if err := bcrypt.CompareHashAndPassword([]byte(usr.PasswordHash), []byte(password)); err != nil {
		return User{}, fmt.Errorf("authenticate %q: %w", name, ErrBadCredentials)
	}
	u.mu.Lock()
	u.known[name] = sum
	u.mu.Unlock()
	return usr, nil
}

// CanRead reports whether usr may read tenant's data.
func (usr User) CanRead(tenant string) bool {
	return usr.Role == RoleAdmin || usr.Tenant == tenant
}

// CanWrite reports whether usr may write events to tenant.
func (usr User) CanWrite(tenant string) bool {
	return usr.Role == RoleAdmin || usr.Role == RoleClient && usr.Tenant == tenant
}

// CanReadReceipts reports whether usr may read the receipts of client in
// tenant: an admin any, a client only its own (its client id is its name).
func (usr User) CanReadReceipts(tenant, client string) bool {
	return usr.Role == RoleAdmin || usr.Role == RoleClient && usr.Tenant == tenant && usr.Name == client
}
