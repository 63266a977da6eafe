package server_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
