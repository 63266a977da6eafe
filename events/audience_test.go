package events

import (
	"slices"
	"testing"
)

func TestAudience_RoundTripAndMembership(t *testing.T) {
	aud := EncodeAudience([]string{GroupPrincipal("team one"), UserPrincipal("alice"), UserPrincipal("alice")})
	got, err := ParseAudience(aud)
	if err != nil {
		t.Fatalf("ParseAudience(%q): %v", aud, err)
	}
	want := []string{GroupPrincipal("team one"), UserPrincipal("alice")}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("audience %q parsed to %q, want %q", aud, got, want)
	}
	if !InAudience(got, Principals("bob", []string{"team one"})) {
		t.Fatal("a member of the reading group is not in the audience")
	}
	if !InAudience(got, Principals("alice", nil)) {
		t.Fatal("the named user is not in the audience")
	}
	if InAudience(got, Principals("bob", []string{"team two"})) {
		t.Fatal("a stranger is in the audience")
	}
	all, _ := ParseAudience(EncodeAudience([]string{Everyone}))
	if !InAudience(all, Principals("carol", nil)) {
		t.Fatal("Everyone does not admit a user")
	}
	if none, err := ParseAudience(""); err != nil || InAudience(none, Principals("alice", nil)) {
		t.Fatalf("empty audience: %v, %v; want nobody", none, err)
	}
}

func TestParseAudience_RefusesWhatEncodeCannotWrite(t *testing.T) {
	for _, v := range []string{"x:alice", "u:a.b", "u:bob u:alice", "u:alice u:alice", "u:alice  g:t", " u:alice"} {
		if _, err := ParseAudience(v); err == nil {
			t.Errorf("ParseAudience(%q) accepted", v)
		}
	}
}

func FuzzParseAudience(f *testing.F) {
	f.Add("* g:team u:alice")
	f.Add("u:~YS5i")
	f.Fuzz(func(t *testing.T, v string) {
		p, err := ParseAudience(v)
		if err != nil {
			return
		}
		if got := EncodeAudience(p); got != v {
			t.Fatalf("ParseAudience(%q) accepted a value EncodeAudience writes as %q", v, got)
		}
	})
}
