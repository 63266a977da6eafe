package projection

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ebbsync/ebb/events"
)

// TestUnionAudience_Bound: the cumulative audience is the sorted union of
// its parts; one holding "*" is "*"; one whose header would pass
// MaxAudienceBytes is "*" too, so a header always fits.
func TestUnionAudience_Bound(t *testing.T) {
	if got := unionAudience([]string{"u:bob", "u:ann"}, nil, []string{"u:ann", "g:red"}); !slices.Equal(got, []string{"g:red", "u:ann", "u:bob"}) {
		t.Errorf("union = %q", got)
	}
	if got := unionAudience(nil, nil); got != nil {
		t.Errorf("union of nothing = %q, want nil", got)
	}
	if got := unionAudience([]string{"u:ann"}, []string{events.Everyone}); !slices.Equal(got, []string{events.Everyone}) {
		t.Errorf("union with everyone = %q", got)
	}
	var many []string
	for i := 0; len(events.EncodeAudience(many)) <= MaxAudienceBytes; i++ {
		many = append(many, events.UserPrincipal(fmt.Sprintf("user-%06d", i)))
	}
	if got := unionAudience(many[:len(many)-1]); len(got) != len(many)-1 {
		t.Errorf("an audience within the bound became %q", got[:min(len(got), 3)])
	}
	got := unionAudience(many)
	if !slices.Equal(got, []string{events.Everyone}) {
		t.Errorf("an audience of %d bytes kept %d principals, want \"*\"", len(events.EncodeAudience(many)), len(got))
	}
	if len(events.EncodeAudience(unionAudience(many[:len(many)-1]))) > MaxAudienceBytes {
		t.Error("a kept audience passes the bound")
	}
}
