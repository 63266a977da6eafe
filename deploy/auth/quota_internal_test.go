package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func meterAt(q Quotas) (*Meter, *fakeClock) {
	c := &fakeClock{t: time.Unix(1000, 0)}
	return newMeterAt(q, c.now), c
}

func TestMeter_EventRate(t *testing.T) {
	m, clock := meterAt(Quotas{Publish: PublishLimit{EventsPerSecond: 10, Burst: time.Second}})
	for i := range 10 {
		if err := m.Allow("acme", "eve", 100); err != nil {
			t.Fatalf("event %d of the burst: %v", i, err)
		}
	}
	err := m.Allow("acme", "eve", 100)
	var qe *QuotaError
	if !errors.Is(err, ErrPublishRate) || !errors.As(err, &qe) {
		t.Fatalf("11th event: %v, want ErrPublishRate", err)
	}
	if qe.Tenant != "acme" || qe.User != "eve" || qe.RetryAfter != 100*time.Millisecond ||
		!strings.Contains(err.Error(), `tenant "acme" user "eve": publish rate quota exceeded: over 10 events/s`) {
		t.Fatalf("refusal %+v: %q", qe, err)
	}
	if err := m.Allow("acme", "alice", 100); err != nil {
		t.Fatalf("another user of the tenant: %v", err)
	}
	clock.advance(100 * time.Millisecond)
	if err := m.Allow("acme", "eve", 100); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	if err := m.Allow("acme", "eve", 100); !errors.Is(err, ErrPublishRate) {
		t.Fatalf("a second event after one refill: %v, want refused", err)
	}
	clock.advance(time.Hour) // saved rate is capped at the burst
	for i := range 11 {
		err := m.Allow("acme", "eve", 100)
		if (i < 10) != (err == nil) {
			t.Fatalf("event %d after an hour idle: %v", i, err)
		}
	}
}

func TestMeter_ByteRate(t *testing.T) {
	m, clock := meterAt(Quotas{Publish: PublishLimit{EventsPerSecond: 1000, BytesPerSecond: 1000, Burst: time.Second}, MaxPayload: 500})
	for i := range 2 {
		if err := m.Allow("acme", "eve", 400); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	err := m.Allow("acme", "eve", 400)
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, ErrPublishRate) || qe.RetryAfter != 200*time.Millisecond {
		t.Fatalf("over the byte rate: %v (%+v), want refused, retry in 200ms", err, qe)
	}
	clock.advance(200 * time.Millisecond)
	if err := m.Allow("acme", "eve", 400); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}

	// The bucket always holds one largest message, however low the rate.
	m, _ = meterAt(Quotas{Publish: PublishLimit{BytesPerSecond: 100, Burst: time.Second}, MaxPayload: 4096})
	if err := m.Allow("acme", "eve", 4000); err != nil {
		t.Fatalf("one message under max_payload above the byte burst: %v", err)
	}
}

func TestMeter_TenantStorage(t *testing.T) {
	m, _ := meterAt(Quotas{Storage: StorageLimit{TenantBytes: 1000}})
	for i := range 10 {
		if err := m.Allow("acme", "eve", 100); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	err := m.Allow("acme", "alice", 100)
	var qe *QuotaError
	if !errors.Is(err, ErrTenantStorage) || !errors.As(err, &qe) || qe.Tenant != "acme" || qe.User != "" ||
		!strings.Contains(err.Error(), `tenant "acme": tenant storage quota exceeded: it keeps 1000 bytes`) || !strings.Contains(err.Error(), "its limit is 1000") {
		t.Fatalf("tenant at its quota: %v, want ErrTenantStorage naming tenant and limit", err)
	}
	if err := m.Allow("other", "bob", 100); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	if got := m.Usage("acme"); got != 1000 {
		t.Fatalf("usage %d, want 1000 (refused events count nothing)", got)
	}

	// A measure replaces the counts; events accepted while it ran are
	// kept on top of it.
	m.beginMeasure()
	m.endMeasure(map[string]int64{"acme": 300})
	if got := m.Usage("acme"); got != 300 {
		t.Fatalf("usage after a measure of 300: %d", got)
	}
	m.beginMeasure()
	if err := m.Allow("acme", "eve", 100); err != nil {
		t.Fatal(err)
	}
	m.endMeasure(map[string]int64{"acme": 300})
	if got := m.Usage("acme"); got != 400 {
		t.Fatalf("usage after a measure of 300 with 100 accepted during it: %d, want 400", got)
	}
	m.beginMeasure()
	m.abortMeasure()
	if got := m.Usage("acme"); got != 400 {
		t.Fatalf("usage after a failed measure: %d, want 400 kept", got)
	}
}

func TestQuotas_OrAndValidate(t *testing.T) {
	file := Quotas{Publish: PublishLimit{EventsPerSecond: 5, BytesPerSecond: 50, Burst: time.Second}, Storage: StorageLimit{TenantBytes: 9, Rescan: time.Minute}, MaxPayload: 7}
	got := Quotas{Publish: PublishLimit{EventsPerSecond: 8}}.Or(file)
	if got.Publish.EventsPerSecond != 8 || got.Publish.BytesPerSecond != 50 || got.Storage.TenantBytes != 9 || got.MaxPayload != 7 {
		t.Fatalf("flags over file: %+v", got)
	}
	d := Quotas{}.WithDefaults()
	if d.Publish.EventsPerSecond != DefaultPublishEvents || d.Publish.BytesPerSecond != DefaultPublishBytes || d.Storage.TenantBytes != DefaultTenantBytes || d.Storage.Rescan != DefaultStorageRescan {
		t.Fatalf("defaults: %+v", d)
	}
	if err := (Quotas{Publish: PublishLimit{EventsPerSecond: -1}, Storage: StorageLimit{TenantBytes: -1}}).Validate(); !errors.Is(err, ErrInvalidUsers) || !strings.Contains(err.Error(), "tenant_bytes") {
		t.Fatalf("negative quotas: %v", err)
	}
}

// A user cannot put its consumers under another's name: the responder
// sets OwnerMetadata whatever the request says, and keeps the rest.
func TestWithOwner_OverridesMetadata(t *testing.T) {
	in := `{"stream_name":"CHANGES","config":{"name":"c1","metadata":{"ebb_user":"alice","app":"x"},"inactive_threshold":60000000000},"action":"create"}`
	out, err := withOwner([]byte(in), "eve")
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		StreamName string `json:"stream_name"`
		Action     string `json:"action"`
		Config     struct {
			Name              string            `json:"name"`
			Metadata          map[string]string `json:"metadata"`
			InactiveThreshold time.Duration     `json:"inactive_threshold"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &req); err != nil {
		t.Fatal(err)
	}
	if req.Config.Metadata[OwnerMetadata] != "eve" || req.Config.Metadata["app"] != "x" || req.Config.Name != "c1" ||
		req.Config.InactiveThreshold != time.Minute || req.StreamName != "CHANGES" || req.Action != "create" {
		t.Fatalf("request after withOwner: %s", out)
	}
	if out, err := withOwner([]byte(`{"stream_name":"CHANGES"}`), "eve"); err != nil || !strings.Contains(string(out), `"ebb_user":"eve"`) {
		t.Fatalf("a request without config: %s, %v", out, err)
	}
}

// TestUnambiguousJSON: keys equal under encoding/json's folding, at any
// depth, are refused; everything else passes.
func TestUnambiguousJSON(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{
		{`{"a":1,"b":[{"a":1},{"a":2}],"c":{"a":{"b":null}}}`, false},
		{`[1,"x",{"k":[]},[]]`, false},
		{`{"a":1,"A":2}`, true},
		{`{"a":1,"a":2}`, true},
		{`{"s":1,"ſ":2}`, true},
		{`{"k":1,"\u212a":2}`, true},
		{`{"deliver_subject":"x","\u0064eliver_subject":""}`, true},
		{`{"x":[{"m":{"q":1,"Q":2}}]}`, true},
		{`{"a":1}{"a":2}`, true},
		{``, true},
		{`{"a":`, true},
	} {
		if err := unambiguousJSON([]byte(tc.in)); (err != nil) != tc.wantErr || err != nil && !errors.Is(err, errAmbiguousJSON) {
			t.Errorf("%s: %v, want error %v", tc.in, err, tc.wantErr)
		}
	}
}
