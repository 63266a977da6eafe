package events

import (
	"strings"
	"testing"
)

var awkwardNames = []string{
	"plain", "with.dot", "a.b.c", "*", ">", "a*b", "x>", "with space", " ", "tab\tin",
	"ünïcødé", "日本語", "emoji😀", "", "~", "~abc", "~YQ", "-", "_", "A", "a",
	"a/b", "a\\b", "$SYS", "nul\x00byte", "new\nline", "..", ".", "UPPER", "MiXeD-_09",
	"ebb.evt.t.c.d", "%2E", "a~b", strings.Repeat("x", 512),
}

func TestEncodeToken_RoundTrip(t *testing.T) {
	for _, name := range awkwardNames {
		tok := EncodeToken(name)
		if tok == "" {
			t.Fatalf("EncodeToken(%q) is empty", name)
		}
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Errorf("EncodeToken(%q) = %q is not subject-safe", name, tok)
		}
		for _, r := range tok {
			if r > 0x7e || r < 0x21 {
				t.Errorf("EncodeToken(%q) = %q has non-printable-ASCII %U", name, tok, r)
			}
		}
		got, err := DecodeToken(tok)
		if err != nil {
			t.Fatalf("DecodeToken(%q) for %q: %v", tok, name, err)
		}
		if got != name {
			t.Errorf("round trip %q -> %q -> %q", name, tok, got)
		}
	}
}

func TestEncodeToken_NoCollisions(t *testing.T) {
	seen := map[string]string{}
	for _, name := range awkwardNames {
		tok := EncodeToken(name)
		if prev, ok := seen[tok]; ok {
			t.Fatalf("%q and %q share token %q", prev, name, tok)
		}
		seen[tok] = name
	}
	// Full subjects must not collide either, even when names contain dots.
	a := EventSubject("t", "k", "a.b", "c")
	b := EventSubject("t", "k", "a", "b.c")
	if a == b {
		t.Fatalf("subjects collide: %q", a)
	}
}

func TestDecodeToken_Refuses(t *testing.T) {
	for _, tok := range []string{"", "a.b", "a b", "~!!", "~YQ=", "~cGxhaW4" /* "plain" must be plain */, "é"} {
		if name, err := DecodeToken(tok); err == nil {
			t.Errorf("DecodeToken(%q) = %q, want error", tok, name)
		}
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"event", EventSubject("acme", "phone", "todos", "t1"), "ebb.evt.acme.phone.todos.t1"},
		{"event awkward", EventSubject("acme", "phone", "todos", "a.b"), "ebb.evt.acme.phone.todos.~YS5i"},
		{"client events", ClientEvents("acme", "my phone"), "ebb.evt.acme.~bXkgcGhvbmU.>"},
		{"change", ChangeSubject("acme", "todos", "t1"), "ebb.chg.acme.todos.t1"},
		{"receipt", ReceiptSubject("acme", "c1"), "ebb.rcpt.acme.c1"},
		{"dead", DeadSubject("acme"), "ebb.dead.acme"},
		{"dead unknown tenant", DeadSubject(""), "ebb.dead.~"},
		{"tenant events", TenantEvents("acme"), "ebb.evt.acme.>"},
		{"tenant changes", TenantChanges("a.b"), "ebb.chg.~YS5i.>"},
		{"collection changes", CollectionChanges("acme", "todos"), "ebb.chg.acme.todos.*"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseEventSubject(t *testing.T) {
	for _, doc := range awkwardNames {
		want := EventAddress{Client: "cli ent", DocAddress: DocAddress{Tenant: "ten.ant", Collection: "col", Doc: doc}}
		got, err := ParseEventSubject(EventSubject(want.Tenant, want.Client, want.Collection, want.Doc))
		if err != nil {
			t.Fatalf("parse subject of doc %q: %v", doc, err)
		}
		if got != want {
			t.Errorf("parse: got %+v, want %+v", got, want)
		}
	}
	for _, bad := range []string{"ebb.chg.a.k.b.c", "ebb.evt.a.b.c", "ebb.evt.a.k.b.c.d", "ebb.evt.a.k.b.~!", "other"} {
		if _, err := ParseEventSubject(bad); err == nil {
			t.Errorf("ParseEventSubject(%q): want error", bad)
		}
	}
	if got, err := ParseChangeSubject(ChangeSubject("a.b", "c", "d e")); err != nil || got != (DocAddress{"a.b", "c", "d e"}) {
		t.Errorf("ParseChangeSubject = %+v, %v", got, err)
	}
	if got, err := TenantOfSubject(ReceiptSubject("a b", "c")); err != nil || got != "a b" {
		t.Errorf("TenantOfSubject = %q, %v", got, err)
	}
}

func FuzzToken(f *testing.F) {
	for _, n := range awkwardNames {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, name string) {
		tok := EncodeToken(name)
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("token %q of %q is not subject-safe", tok, name)
		}
		got, err := DecodeToken(tok)
		if err != nil || got != name {
			t.Fatalf("round trip %q -> %q -> %q, %v", name, tok, got, err)
		}
		// Decoding arbitrary input either fails or gives the name whose
		// encoding is exactly that input (one token per name).
		if n, err := DecodeToken(name); err == nil && EncodeToken(n) != name {
			t.Fatalf("DecodeToken(%q) = %q but EncodeToken gives %q", name, n, EncodeToken(n))
		}
	})
}

func TestHeaderCarrier_KeepsLowerCaseKeys(t *testing.T) {
	h := HeaderCarrier{}
	h.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if _, ok := h["traceparent"]; !ok || h.Get("traceparent") == "" || len(h.Keys()) != 1 {
		t.Fatalf("carrier changed the key: %v", h)
	}
	if h.Get("Traceparent") != "" {
		t.Fatal("keys are case-sensitive, as NATS headers are")
	}
}
