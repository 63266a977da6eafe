package auth

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of Limits, applied to every zero field.
const (
	// DefaultMaxConnections is how many NATS connections one user may hold
	// at once (one per device and process is the normal case).
	DefaultMaxConnections = 16
	// DefaultMaxSubscriptions is how many NATS subscriptions one
	// connection of a user may hold at once (nats-server applies an
	// account's max_subscriptions to each of its connections).
	DefaultMaxSubscriptions = 256
	// DefaultMaxPayload is the largest message, in bytes, a user may
	// publish: an event at events.DefaultLimits (256 KiB of fields) with
	// room for its envelope and headers, and small enough that its dead
	// letter stays under nats-server's 1 MiB message limit.
	DefaultMaxPayload = 320 << 10
	// DefaultMaxConsumers bounds the JetStream consumers of each stream of
	// ebb's stream account, all users and ebb's own together.
	DefaultMaxConsumers = 4096
	// DefaultMaxConsumersPerUser bounds the consumers one user holds on
	// CHANGES and RECEIPTS: a few per device and process, with room for
	// ordered consumers a reconnecting client left to expire.
	DefaultMaxConsumersPerUser = 128
)

// Limits are the quotas of every non-admin user, enforced by nats-server
// on the user's own account, the users file's and a token user's alike
// (see the package documentation), and the login limits of both NATS and
// HTTP. The zero value of a field means its
// default; a negative value is invalid.
type Limits struct {
	// MaxConnections per user; DefaultMaxConnections if zero. A
	// connection beyond it is refused with "maximum account active
	// connections exceeded".
	MaxConnections int `yaml:"max_connections"`
	// MaxSubscriptions per connection of a user;
	// DefaultMaxSubscriptions if zero. A subscription beyond it is
	// refused with "maximum subscriptions exceeded"
	// (nats.ErrMaxSubscriptionsExceeded).
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// MaxPayload per message a user publishes, in bytes;
	// DefaultMaxPayload if zero. A larger message is refused with
	// "maximum payload violation" and the connection is closed.
	MaxPayload int `yaml:"max_payload"`
	// MaxConsumers of each stream of ebb's stream account (nats-server's
	// account limit is per stream), shared by everyone;
	// DefaultMaxConsumers if zero. A consumer beyond it is refused with
	// JetStream's "maximum consumers limit reached".
	MaxConsumers int `yaml:"max_consumers"`
	// MaxConsumersPerUser bounds the consumers one user holds on CHANGES
	// and RECEIPTS (counted by the consumer create responder, from the
	// consumers' OwnerMetadata); DefaultMaxConsumersPerUser if zero. One
	// more is refused with a JetStream API error, code 429, "consumer
	// quota: user ... holds N consumers ..., its limit is N".
	MaxConsumersPerUser int `yaml:"max_consumers_per_user"`
	// Login limits password guessing (see LoginLimit).
	Login LoginLimit `yaml:"login"`
	// Publish is each user's rate into EVENTS (see PublishLimit),
	// Storage each tenant's bytes in EVENTS, CHANGES and DEAD (see
	// StorageLimit). A Meter enforces both (see Quotas); over NATS only
	// with the responders (NATSUsers, NATSConfigWith(true)).
	Publish PublishLimit `yaml:"publish"`
	Storage StorageLimit `yaml:"storage"`
}

// Quotas returns the part of l a Meter enforces.
func (l Limits) Quotas() Quotas {
	return Quotas{Publish: l.Publish, Storage: l.Storage, MaxPayload: l.MaxPayload, MaxConsumersPerUser: l.MaxConsumersPerUser}
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConnections
	}
	if l.MaxSubscriptions == 0 {
		l.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if l.MaxPayload == 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxConsumers == 0 {
		l.MaxConsumers = DefaultMaxConsumers
	}
	if l.MaxConsumersPerUser == 0 {
		l.MaxConsumersPerUser = DefaultMaxConsumersPerUser
	}
	l.Login = l.Login.WithDefaults()
	l.Publish = l.Publish.WithDefaults()
	l.Storage = l.Storage.WithDefaults()
	return l
}

func (l Limits) validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{{"max_connections", l.MaxConnections}, {"max_subscriptions", l.MaxSubscriptions}, {"max_payload", l.MaxPayload}, {"max_consumers", l.MaxConsumers}, {"max_consumers_per_user", l.MaxConsumersPerUser}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%w: limits: %s %d is negative", ErrInvalidUsers, f.name, f.v))
		}
	}
	if l.MaxPayload > 64<<20 {
		errs = append(errs, fmt.Errorf("%w: limits: max_payload %d is above nats-server's 64 MiB", ErrInvalidUsers, l.MaxPayload))
	}
	if err := l.Login.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := (Quotas{Publish: l.Publish, Storage: l.Storage}).Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Defaults of LoginLimit.
const (
	DefaultLoginBurst      = 5
	DefaultLoginBackoff    = time.Second
	DefaultLoginMaxBackoff = time.Minute
	DefaultLoginChecks     = 2
)

// LoginLimit bounds password guessing. Failures are counted per user name
// and per source address; after Burst failures in a row on either, every
// attempt on it is refused without checking the password for a backoff
// that starts at Backoff and doubles with each further failure, up to
// MaxBackoff. A success clears the user's and the source's count. At most
// Checks password checks (bcrypt) run at once; others wait, so guessing
// costs the server at most Checks cores.
type LoginLimit struct {
	Burst      int           `yaml:"burst"`
	Backoff    time.Duration `yaml:"backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	Checks     int           `yaml:"checks"`
}

// WithDefaults returns l with every zero field set to its default.
func (l LoginLimit) WithDefaults() LoginLimit {
	if l.Burst == 0 {
		l.Burst = DefaultLoginBurst
	}
	if l.Backoff == 0 {
		l.Backoff = DefaultLoginBackoff
	}
	if l.MaxBackoff == 0 {
		l.MaxBackoff = DefaultLoginMaxBackoff
	}
	if l.Checks == 0 {
		l.Checks = DefaultLoginChecks
	}
	return l
}

// Validate reports every negative or inconsistent field of l; each error
// wraps ErrInvalidUsers.
func (l LoginLimit) Validate() error {
	var errs []error
	if l.Burst < 0 || l.Checks < 0 {
		errs = append(errs, fmt.Errorf("%w: limits: login burst %d and checks %d may not be negative", ErrInvalidUsers, l.Burst, l.Checks))
	}
	if l.Backoff < 0 || l.MaxBackoff < 0 || l.MaxBackoff != 0 && l.MaxBackoff < l.Backoff {
		errs = append(errs, fmt.Errorf("%w: limits: login backoff %s and max_backoff %s: want 0 <= backoff <= max_backoff", ErrInvalidUsers, l.Backoff, l.MaxBackoff))
	}
	return errors.Join(errs...)
}
