package gateway

import (
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/ebbsync/ebb/events"
)

func TestParsePrecondition(t *testing.T) {
	for _, tc := range []struct {
		name    string
		op      events.Op
		headers map[string]string
		want    precondition
		wantErr error // errors.Is target
		bad     bool  // a 400 (badRequest)
	}{
		{name: "put without", op: events.OpPut},
		{name: "quoted version", op: events.OpPut, headers: map[string]string{"If-Match": `"3"`}, want: precondition{ifMatch: true, version: 3}},
		{name: "bare version", op: events.OpPatch, headers: map[string]string{"If-Match": "3"}, want: precondition{ifMatch: true, version: 3}},
		{name: "any version", op: events.OpDelete, headers: map[string]string{"If-Match": "*"}, want: precondition{ifMatch: true, anyVersion: true}},
		{name: "create only", op: events.OpPut, headers: map[string]string{"If-None-Match": "*"}, want: precondition{ifNoneMatch: true}},
		{name: "patch without", op: events.OpPatch, wantErr: errPreconditionRequired},
		{name: "delete without", op: events.OpDelete, wantErr: errPreconditionRequired},
		{name: "weak", op: events.OpPut, headers: map[string]string{"If-Match": `W/"3"`}, bad: true},
		{name: "list", op: events.OpPut, headers: map[string]string{"If-Match": `"3", "4"`}, bad: true},
		{name: "zero", op: events.OpPut, headers: map[string]string{"If-Match": `"0"`}, bad: true},
		{name: "not a number", op: events.OpPut, headers: map[string]string{"If-Match": `"abc"`}, bad: true},
		{name: "both", op: events.OpPut, headers: map[string]string{"If-Match": `"1"`, "If-None-Match": "*"}, bad: true},
		{name: "none-match tag", op: events.OpPut, headers: map[string]string{"If-None-Match": `"1"`}, bad: true},
		{name: "none-match patch", op: events.OpPatch, headers: map[string]string{"If-None-Match": "*"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("PUT", "/", nil)
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			got, err := parsePrecondition(r, tc.op)
			var br badRequest
			switch {
			case tc.bad:
				if !errors.As(err, &br) {
					t.Fatalf("error %v, want a bad request", err)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
			case err != nil:
				t.Fatalf("error %v", err)
			case got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIdempotencyKeyHeader(t *testing.T) {
	for _, tc := range []struct {
		value, want string
		bad         bool
	}{
		{value: "k-1", want: "k-1"},
		{value: `"k-1"`, want: "k-1"},
		{value: "", bad: true},
		{value: "caf\u00e9", bad: true},
		{value: string(make([]byte, 256)), bad: true},
	} {
		r := httptest.NewRequest("PUT", "/", nil)
		r.Header.Set("Idempotency-Key", tc.value)
		got, err := idempotencyKey(r)
		if tc.bad != (err != nil) || got != tc.want {
			t.Errorf("Idempotency-Key %q: %q, %v", tc.value, got, err)
		}
	}
}
