package events

import (
	"errors"
	"testing"
	"time"
)

// fakeTime is a settable physical clock.
type fakeTime struct{ t time.Time }

func (f *fakeTime) now() time.Time { return f.t }

func TestClock_MonotonicWhenPhysicalGoesBack(t *testing.T) {
	ft := &fakeTime{t: time.UnixMilli(1_000_000)}
	c := NewClock(ft.now, 0)
	steps := []time.Duration{0, 0, time.Millisecond, -time.Hour, -time.Second, 0, 2 * time.Hour, -time.Minute}
	prev := HLC{}
	for i, d := range steps {
		ft.t = ft.t.Add(d)
		h := c.Now()
		if h.Compare(prev) <= 0 {
			t.Fatalf("step %d: %s not after %s", i, h, prev)
		}
		prev = h
	}
}

func TestClock_NowUsesPhysicalTimeWhenAhead(t *testing.T) {
	ft := &fakeTime{t: time.UnixMilli(5000)}
	c := NewClock(ft.now, 0)
	c.Now()
	c.Now()
	ft.t = time.UnixMilli(6000)
	if got := c.Now(); got != (HLC{Wall: 6000}) {
		t.Fatalf("got %s, want 6000.0", got)
	}
}

func TestClock_Update(t *testing.T) {
	tests := []struct {
		name    string
		last    HLC
		phys    int64
		remote  HLC
		want    HLC
		wantErr error
	}{
		{"physical ahead of both", HLC{100, 5}, 200, HLC{150, 9}, HLC{200, 0}, nil},
		{"remote ahead", HLC{100, 5}, 100, HLC{150, 9}, HLC{150, 10}, nil},
		{"local ahead", HLC{300, 2}, 100, HLC{150, 9}, HLC{300, 3}, nil},
		{"equal wall, remote logical higher", HLC{300, 2}, 100, HLC{300, 7}, HLC{300, 8}, nil},
		{"remote within drift", HLC{0, 0}, 1000, HLC{1000 + 60_000, 0}, HLC{61_000, 1}, nil},
		// A clock behind the sender still moves past what it received: the
		// drift is reported, never a reason to stamp a later write earlier.
		{"remote beyond drift", HLC{500, 1}, 1000, HLC{1000 + 60_001, 0}, HLC{61_001, 1}, ErrClockDrift},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft := &fakeTime{t: time.UnixMilli(tt.phys)}
			c := NewClock(ft.now, time.Minute)
			c.Observe(tt.last)
			got, err := c.Update(tt.remote)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if c.Last() != tt.want {
				t.Fatalf("Last = %s, want %s", c.Last(), tt.want)
			}
		})
	}
}

// TestClock_SlowClockFollowsReceived: a client whose wall clock is an hour
// behind receives a timestamp from the server; every reading it takes
// afterwards (its next write) is after that timestamp.
func TestClock_SlowClockFollowsReceived(t *testing.T) {
	ft := &fakeTime{t: time.UnixMilli(1_000_000)}
	c := NewClock(ft.now, DefaultMaxDrift)
	remote := HLC{Wall: ft.t.Add(time.Hour).UnixMilli(), Logical: 3}
	got, err := c.Update(remote)
	if !errors.Is(err, ErrClockDrift) {
		t.Errorf("Update of a timestamp an hour ahead: err %v, want it to report ErrClockDrift", err)
	}
	if got.Compare(remote) <= 0 {
		t.Fatalf("Update returned %s, not after the received %s", got, remote)
	}
	if next := c.Now(); next.Compare(remote) <= 0 {
		t.Fatalf("next reading %s is not after the received %s", next, remote)
	}
}

func TestClock_LogicalOverflowCarries(t *testing.T) {
	ft := &fakeTime{t: time.UnixMilli(10)}
	c := NewClock(ft.now, 0)
	c.Observe(HLC{Wall: 10, Logical: ^uint32(0)})
	if got := c.Now(); got != (HLC{Wall: 11}) {
		t.Fatalf("got %s, want 11.0", got)
	}
}

func TestCompareWrites_TieBreakOnClient(t *testing.T) {
	h := HLC{Wall: 5, Logical: 1}
	if CompareWrites(h, "a", h, "b") >= 0 || CompareWrites(h, "b", h, "a") <= 0 || CompareWrites(h, "a", h, "a") != 0 {
		t.Fatal("equal HLCs must be ordered by client id")
	}
	if CompareWrites(HLC{Wall: 6}, "a", h, "z") <= 0 {
		t.Fatal("a later HLC wins whatever the client id")
	}
}

func TestCheckDrift(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	if err := CheckDrift(HLC{Wall: 1_000_000 + 1000}, now, time.Second); err != nil {
		t.Fatalf("at the bound: %v", err)
	}
	if err := CheckDrift(HLC{Wall: 1_000_000 + 1001}, now, time.Second); !errors.Is(err, ErrClockDrift) {
		t.Fatalf("past the bound: %v", err)
	}
	if err := CheckDrift(HLC{Wall: 1 << 50}, now, 0); err != nil {
		t.Fatalf("no bound: %v", err)
	}
}

func TestIDSource_MonotonicAcrossClockJumps(t *testing.T) {
	ft := &fakeTime{t: time.UnixMilli(1_700_000_000_000)}
	s := NewIDSource(ft.now)
	prev := s.New()
	for i := range 2000 {
		if i%100 == 0 {
			ft.t = ft.t.Add(-time.Hour) // clock goes backwards
		}
		id := s.New()
		if id.Compare(prev) <= 0 {
			t.Fatalf("id %d: %s not after %s", i, id, prev)
		}
		if _, err := ParseID(id.String()); err != nil {
			t.Fatal(err)
		}
		prev = id
	}
	// A restored id bounds every later one from below.
	s2 := NewIDSource(func() time.Time { return time.UnixMilli(1) })
	s2.Restore(prev)
	if id := s2.New(); id.Compare(prev) <= 0 {
		t.Fatalf("after Restore: %s not after %s", id, prev)
	}
}
