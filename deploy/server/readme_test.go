package server_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection/rules"
)

// TestREADME_EmbeddingIsExampleStart: the README's "Embedding ebb in a Go
// service" block is example_test.go as it stands, so the code the README
// shows is the code ExampleStart runs.
func TestREADME_EmbeddingIsExampleStart(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "\n## Embedding ebb in a Go service\n"
	_, section, ok := strings.Cut(string(readme), heading)
	if !ok {
		t.Fatalf("README has no section %q", strings.TrimSpace(heading))
	}
	if next := strings.Index(section, "\n## "); next >= 0 {
		section = section[:next]
	}
	_, block, ok := strings.Cut(section, "\n```go\n")
	if !ok {
		t.Fatal("the README's embedding section has no ```go block")
	}
	block, _, ok = strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("the README's embedding ```go block is not closed")
	}
	if block != string(example) {
		got, want := strings.Split(block, "\n"), strings.Split(string(example), "\n")
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("README block differs from example_test.go at line %d:\nREADME:  %q\nexample: %q", i+1, got[i], want[i])
			}
		}
		t.Fatalf("README block has %d lines, example_test.go %d", len(got), len(want))
	}
}

// TestREADME_SyncRulesExampleParses: the rules file the README's "Sync
// rules" section shows is accepted as written, and means what it says.
func TestREADME_SyncRulesExampleParses(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Sync rules\n")
	if !ok {
		t.Fatal("README has no section Sync rules")
	}
	_, block, ok := strings.Cut(section, "\n```yaml\n")
	if !ok {
		t.Fatal("the README's sync rules section has no ```yaml block")
	}
	block, _, ok = strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("the README's sync rules block is not closed")
	}
	s, err := rules.Parse([]byte(block))
	if err != nil {
		t.Fatalf("the README's rules: %v", err)
	}
	ctx := context.Background()
	list := events.Fields{"owner": json.RawMessage(`"ann"`), "team": json.RawMessage(`"red"`)}
	aud, _, err := s.Audience(ctx, "todos", events.Fields{"list": json.RawMessage(`"l1"`)},
		func(context.Context, string, string) (events.Fields, bool, error) { return list, true, nil })
	if err != nil || events.EncodeAudience(aud) != "g:red u:ann" {
		t.Errorf("a todo of ann's red list: audience %q, %v", aud, err)
	}
	why, err := s.MayWrite(ctx, "lists", list, rules.Writer{Name: "bob", Groups: []string{"red"}}, nil)
	if err != nil || why != "write needs you to be the user in field owner" {
		t.Errorf("bob writing ann's list: %q, %v", why, err)
	}
}
