package auth_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ebbsync/ebb/deploy/auth"
	"github.com/ebbsync/ebb/events"
)

// TestHostile_ConsumerCreateAmbiguousKeys: a consumer create request
// whose JSON holds one key twice, or two keys equal under case folding,
// at any level, is refused: the responder and JetStream could read it
// differently (the reviewer's "deliver_subject" then "Deliver_subject":
// "" made a push consumer past the check). A key the check reads under
// another spelling is checked all the same, and a config or metadata that
// is no JSON object is refused (a null one made the responder panic).
func TestHostile_ConsumerCreateAmbiguousKeys(t *testing.T) {
	srv, js := hostileServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eve := connectEve(t, srv)
	filter := events.ReceiptSubject("evil", "eve")
	deliver := "_ebb.api.publish." + events.EventSubject("acme", "alice", "todos", "x")
	create := func(name, body string) []byte {
		t.Helper()
		resp, err := eve.Request("$JS.API.CONSUMER.CREATE.RECEIPTS."+name+"."+filter, []byte(body), 10*time.Second)
		if err != nil {
			t.Fatalf("consumer create: %v", err)
		}
		return resp.Data
	}
	base := func(name string) string {
		return `"name":"` + name + `","filter_subject":"` + filter + `","ack_policy":"none","deliver_policy":"all"`
	}
	for _, tc := range []struct{ name, body string }{
		{"dupcase", `{"stream_name":"RECEIPTS","config":{"deliver_subject":"` + deliver + `","Deliver_subject":"","deliver_group":"ebb-api",` + base("dupcase") + `}}`},
		{"dupexact", `{"stream_name":"RECEIPTS","config":{"deliver_subject":"` + deliver + `","deliver_subject":"",` + base("dupexact") + `}}`},
		{"dupescaped", `{"stream_name":"RECEIPTS","config":{"deliver_subject":"` + deliver + `","\u0064eliver_subject":"",` + base("dupescaped") + `}}`},
		{"dupfold", `{"stream_name":"RECEIPTS","config":{"deliver_subject":"` + deliver + `","deliver_ſubject":"",` + base("dupfold") + `}}`},
		{"dupinactive", `{"stream_name":"RECEIPTS","config":{"inactive_threshold":1000000,"Inactive_threshold":0,` + base("dupinactive") + `}}`},
		{"dupconfig", `{"stream_name":"RECEIPTS","config":{"deliver_subject":"` + deliver + `",` + base("dupconfig") + `},"Config":{` + base("dupconfig") + `}}`},
		{"dupnested", `{"stream_name":"RECEIPTS","config":{` + base("dupnested") + `,"metadata":{"a":"1","A":"2"}}}`},
		{"variant", `{"stream_name":"RECEIPTS","CONFIG":{"Deliver_Subject":"` + deliver + `",` + base("variant") + `}}`},
		{"nullconfig", `{"stream_name":"RECEIPTS","config":null}`},
		{"nullmetadata", `{"stream_name":"RECEIPTS","config":{` + base("nullmetadata") + `,"metadata":null}}`},
		{"foldvariant", `{"stream_name":"RECEIPTS","config":{"deliver_ſubject":"` + deliver + `",` + base("foldvariant") + `}}`},
	} {
		a := create(tc.name, tc.body)
		var answer struct {
			Error *struct{ Description string } `json:"error"`
		}
		if err := json.Unmarshal(a, &answer); err != nil || answer.Error == nil {
			t.Errorf("%s: consumer create not refused: %s", tc.name, a)
		}
	}
	st, err := js.Stream(ctx, events.StreamReceipts)
	if err != nil {
		t.Fatal(err)
	}
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		t.Errorf("consumer %s created (deliver subject %q, inactive threshold %s)", info.Name, info.Config.DeliverSubject, info.Config.InactiveThreshold)
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	// A plain pull consumer still passes, stamped with its owner.
	a := create("evepull", `{"stream_name":"RECEIPTS","config":{`+base("evepull")+`,"inactive_threshold":60000000000}}`)
	var ok struct {
		Error  json.RawMessage `json:"error"`
		Config struct {
			Metadata map[string]string `json:"metadata"`
		} `json:"config"`
	}
	if err := json.Unmarshal(a, &ok); err != nil || ok.Error != nil || ok.Config.Metadata[auth.OwnerMetadata] != "eve" {
		t.Fatalf("a plain pull consumer: %s", a)
	}
}
