package cluster_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/ebbsync/ebb/deploy/cluster/clustertest"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/producer"
)

// Every node config parses with nats-server's own parser and says what the
// README promises: JetStream with fsync on every write, cluster "ebb" with
// routes to all three nodes, and (the -tls variants) TLS on clients and
// routes.
func TestConfigs_Parse(t *testing.T) {
	certs := embeddedtest.MustCerts(t)
	t.Setenv("NATS_TLS_CERT", certs.ServerCert)
	t.Setenv("NATS_TLS_KEY", certs.ServerKey)
	t.Setenv("NATS_TLS_CA", certs.CA)
	for i := range clustertest.Size {
		for _, withTLS := range []bool{false, true} {
			path := clustertest.ConfigFile(i, withTLS)
			t.Run(filepath.Base(path), func(t *testing.T) {
				o, err := server.ProcessConfigFile(path)
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				if want := fmt.Sprintf("nats-%d", i+1); o.ServerName != want {
					t.Errorf("server_name %q, want %q", o.ServerName, want)
				}
				if !o.JetStream || !o.SyncAlways || o.StoreDir == "" {
					t.Errorf("jetstream %v, sync always %v, store %q; want JetStream syncing every write", o.JetStream, o.SyncAlways, o.StoreDir)
				}
				if o.Cluster.Name != "ebb" || o.Cluster.Port != 6222 || len(o.Routes) != clustertest.Size {
					t.Errorf("cluster %q port %d routes %v", o.Cluster.Name, o.Cluster.Port, o.Routes)
				}
				if withTLS && (o.TLSConfig == nil || o.Cluster.TLSConfig == nil || o.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert) {
					t.Errorf("tls variant without TLS on clients and verified routes")
				}
				if !withTLS && (o.TLSConfig != nil || o.Cluster.TLSConfig != nil) {
					t.Errorf("plain variant has TLS")
				}
			})
		}
	}
}

// BenchmarkDurability measures, in one run, a write acknowledged by
// JetStream on the 3-node cluster with streams R1 and R3, fsync on every
// write (deploy/cluster's sync_interval: always) and at nats-server's
// default interval:
//
//   - raw: js.PublishMsg of an event, one at a time (ns/op is the latency
//     of one acknowledged publish);
//   - push: ebb's producer, one write appended to the local log (fsynced)
//     then Flush, which returns when JetStream has acknowledged it (the
//     latency of one `ebb put` push);
//   - push-batch: 1024 writes per AppendBatch drained by the Publisher
//     (MaxInFlight 4096) (msgs/s is ebb's push throughput).
//
// Run: go test -run '^$' -bench Durability -benchtime 2s ./deploy/cluster/
func BenchmarkDurability(b *testing.B) {
	for _, sync := range []struct {
		name   string
		always bool
	}{{"sync=always", true}, {"sync=interval", false}} {
		b.Run(sync.name, func(b *testing.B) {
			c := clustertest.MustStart(b, func(o *server.Options) {
				o.SyncAlways = sync.always
				if !sync.always {
					o.SyncInterval = 0 // nats-server's default, 2 minutes
				}
			})
			nc, err := nats.Connect(c.URLs())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range []int{1, 3} {
				b.Run(fmt.Sprintf("R%d", r), func(b *testing.B) {
					mustFreshStreams(b, js, r)
					b.Run("raw", func(b *testing.B) { benchRaw(b, js) })
					b.Run("push", func(b *testing.B) { benchPush(b, js, nc, 1) })
					b.Run("push-batch", func(b *testing.B) { benchPush(b, js, nc, 1024) })
				})
			}
		})
	}
}

// mustFreshStreams deletes ebb's streams and creates them with r replicas.
func mustFreshStreams(b *testing.B, js jetstream.JetStream, r int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, sc := range events.Streams(events.StreamOptions{}) {
		_ = js.DeleteStream(ctx, sc.Name)
	}
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{Replicas: r}); err != nil {
		b.Fatal(err)
	}
}

// benchWrite is a put whose encoded event is about 256 bytes.
func benchWrite(i int) producer.Write {
	return producer.Write{Collection: "bench", Doc: fmt.Sprintf("doc%d", i%16), Op: events.OpPut,
		Fields: events.Fields{"v": json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)}}
}

func benchRaw(b *testing.B, js jetstream.JetStream) {
	ids, clock := events.NewIDSource(nil), events.NewClock(nil, 0)
	ctx := context.Background()
	b.ResetTimer()
	for n := range b.N {
		ev := events.Event{Schema: 1, ID: ids.New().String(), Tenant: "bench", Collection: "bench", Doc: fmt.Sprintf("doc%d", n%16),
			Op: events.OpPut, Fields: events.Fields{"v": json.RawMessage(`"` + strings.Repeat("x", 54) + `"`)}, HLC: clock.Now(), Client: "raw", Seq: uint64(n + 1)}
		data, err := events.EncodeEvent(&ev)
		if err != nil {
			b.Fatal(err)
		}
		m := &nats.Msg{Subject: ev.Subject(), Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{ev.ID}}}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

func benchPush(b *testing.B, js jetstream.JetStream, nc *nats.Conn, batch int) {
	l, err := producer.Open(filepath.Join(b.TempDir(), "log.db"), producer.LogConfig{Tenant: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	p, err := producer.NewPublisher(l, js, nc, producer.PublisherConfig{MaxInFlight: 4096})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ws := make([]producer.Write, batch)
	for i := range ws {
		ws[i] = benchWrite(i)
	}
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; n += batch {
		if _, err := l.AppendBatch(ctx, ws[:min(batch, b.N-n)]); err != nil {
			b.Fatal(err)
		}
		if batch == 1 {
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// compose.yaml runs the three nodes on their configs and two ebb servers
// given all three nodes, with 3 replicas.
func TestCompose_RunsTheClusterConfigs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(clustertest.Dir(), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for i := range clustertest.Size {
		name := fmt.Sprintf("nats-%d", i+1)
		s, ok := f.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		want := "./" + filepath.Base(clustertest.ConfigFile(i, false)) + ":/etc/nats/nats.conf:ro"
		if !slices.Contains(s.Volumes, want) {
			t.Errorf("%s volumes %v, want %q", name, s.Volumes, want)
		}
	}
	for _, name := range []string{"ebb-1", "ebb-2"} {
		cmd := strings.Join(f.Services[name].Command, " ")
		if !strings.HasPrefix(cmd, "serve ") || !strings.Contains(cmd, "--replicas 3") ||
			!strings.Contains(cmd, "--nats nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222") {
			t.Errorf("%s command %q: want serve --replicas 3 --nats <the three nodes>", name, cmd)
		}
	}
}
