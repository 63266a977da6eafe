package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/embedded/embeddedtest"
	"github.com/ebbsync/ebb/events"
	"github.com/ebbsync/ebb/projection"
)

// BenchmarkLatencyBreakdown is the latency row of `ebb bench` taken apart:
// two replicas and a projector on one server, the writer offered 500 Puts
// a second (open loop, each on its own document), every step traced, and
// the median and p99 of each step between the app's call and the other
// replica's Watch reported as metrics (ms):
//
//	put       scheduled call -> Put returned (the local commit)
//	pickup    append span end -> the producer's publish span start
//	ack       producer publish start -> its PubAck (the server stores the event)
//	fetch     producer publish start -> projector apply start (server to projector)
//	project   projector apply start -> its publish of the change starts (decide, commit)
//	deliver   projector's change publish start -> the reader's apply start
//	apply     reader's apply span (its view commit)
//	notify    reader's apply end -> its Watch shows the write
//	total     scheduled call -> Watch
//
//	go test -run XXX -bench LatencyBreakdown -benchtime 1x ./consumer
func BenchmarkLatencyBreakdown(b *testing.B) {
	for _, sm := range []struct {
		name string
		sync embedded.SyncPolicy
	}{{"always", embedded.SyncPolicy{}}, {"interval", embedded.SyncPolicy{Interval: time.Minute}}} {
		b.Run("sync="+sm.name, func(b *testing.B) {
			for range b.N {
				latencyBreakdown(b, sm.sync, 500, 1000)
			}
		})
	}
}

func latencyBreakdown(b *testing.B, sp embedded.SyncPolicy, rate, n int) {
	s := embeddedtest.MustStart(b, func(c *embedded.Config) { c.Sync = sp })
	nc := embeddedtest.MustConnect(b, s, nats.MaxReconnects(-1))
	js := embeddedtest.MustJetStream(b, nc)
	ctx := b.Context()
	if err := events.EnsureStreams(ctx, js, events.StreamOptions{}); err != nil {
		b.Fatal(err)
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	store, err := projection.OpenBolt(filepath.Join(b.TempDir(), "view.db"), projection.BoltOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	pr, err := projection.New(js, store, projection.Config{Policies: testPolicies(), TracerProvider: tp})
	if err != nil {
		b.Fatal(err)
	}
	if err := pr.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer pr.Close()
	open := func(client string) *Replica {
		r, err := OpenReplica(ctx, ReplicaConfig{Dir: b.TempDir(), Tenant: "t1", Client: client, Conn: nc,
			Policies: testPolicies(), TracerProvider: tp})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	writer, reader := open("writer"), open("reader")
	defer writer.Close()
	defer reader.Close()
	if _, err := reader.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	docs, err := reader.Watch(wctx, "lww")
	if err != nil {
		b.Fatal(err)
	}
	seen := make(chan map[string]time.Time, 1)
	go func() {
		m := map[string]time.Time{}
		for d := range docs {
			if _, ok := m[d.ID]; !ok && d.Pending == 0 {
				m[d.ID] = time.Now()
				if len(m) == n {
					break
				}
			}
		}
		seen <- m
	}()
	tracer := tp.Tracer("bench")
	traceOf := make([]trace.TraceID, n)
	sched := make([]time.Time, n)
	putDone := make([]time.Time, n)
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	var wg sync.WaitGroup
	tm := time.NewTimer(0)
	b.ResetTimer()
	for i := range n {
		sched[i] = start.Add(time.Duration(i) * interval)
		tm.Reset(time.Until(sched[i]))
		<-tm.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, span := tracer.Start(ctx, "bench.put")
			traceOf[i] = span.SpanContext().TraceID()
			if _, err := writer.Put(pctx, "lww", "w"+strconv.Itoa(i), events.Fields{"n": json.RawMessage(strconv.Itoa(i))}); err != nil {
				b.Error(err)
			}
			putDone[i] = time.Now()
			span.End()
		}()
	}
	wg.Wait()
	var m map[string]time.Time
	select {
	case m = <-seen:
	case <-time.After(time.Minute):
		stopWatch()
		m = <-seen
	}
	b.StopTimer()
	if len(m) < n {
		b.Fatalf("reader saw %d of %d writes", len(m), n)
	}
	// The spans of each write's trace, by name (and, for the replicas'
	// applies, the reader's).
	type steps struct{ appendEnd, pubStart, pubEnd, projStart, chgPubStart, applyStart, applyEnd time.Time }
	byTrace := map[trace.TraceID]*steps{}
	for _, sp := range rec.Ended() {
		st := byTrace[sp.SpanContext().TraceID()]
		if st == nil {
			st = &steps{}
			byTrace[sp.SpanContext().TraceID()] = st
		}
		stub := tracetest.SpanStubFromReadOnlySpan(sp)
		switch sp.Name() {
		case "ebb.producer.append":
			st.appendEnd = sp.EndTime()
		case "ebb.producer.publish":
			if st.pubStart.IsZero() || sp.StartTime().Before(st.pubStart) {
				st.pubStart, st.pubEnd = sp.StartTime(), sp.EndTime()
			}
		case "ebb.projector.apply":
			st.projStart = sp.StartTime()
		case "ebb.projector.publish":
			if attrOf(stub, "messaging.destination.name") != "" && !isReceiptSpan(stub) {
				st.chgPubStart = sp.StartTime()
			}
		case spanApply:
			if attrOf(stub, "ebb.client") == "reader" {
				st.applyStart, st.applyEnd = sp.StartTime(), sp.EndTime()
			}
		}
	}
	stages := map[string][]float64{}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for i := range n {
		st := byTrace[traceOf[i]]
		at := m["w"+strconv.Itoa(i)]
		if st == nil || st.pubStart.IsZero() || st.projStart.IsZero() || st.chgPubStart.IsZero() || st.applyStart.IsZero() {
			continue
		}
		stages["put"] = append(stages["put"], ms(putDone[i].Sub(sched[i])))
		stages["pickup"] = append(stages["pickup"], ms(st.pubStart.Sub(st.appendEnd)))
		stages["ack"] = append(stages["ack"], ms(st.pubEnd.Sub(st.pubStart)))
		stages["fetch"] = append(stages["fetch"], ms(st.projStart.Sub(st.pubStart)))
		stages["project"] = append(stages["project"], ms(st.chgPubStart.Sub(st.projStart)))
		stages["deliver"] = append(stages["deliver"], ms(st.applyStart.Sub(st.chgPubStart)))
		stages["apply"] = append(stages["apply"], ms(st.applyEnd.Sub(st.applyStart)))
		stages["notify"] = append(stages["notify"], ms(at.Sub(st.applyEnd)))
		stages["total"] = append(stages["total"], ms(at.Sub(sched[i])))
	}
	if len(stages["total"]) < n/2 {
		b.Fatalf("only %d of %d writes fully traced", len(stages["total"]), n)
	}
	for _, k := range []string{"put", "pickup", "ack", "fetch", "project", "deliver", "apply", "notify", "total"} {
		xs := stages[k]
		slices.Sort(xs)
		b.ReportMetric(xs[len(xs)/2], k+"-p50-ms")
		b.ReportMetric(xs[len(xs)*99/100], k+"-p99-ms")
	}
	b.Logf("%d writes traced of %d", len(stages["total"]), n)
	_ = fmt.Sprint
}

// isReceiptSpan reports whether a projector publish span is a receipt's.
func isReceiptSpan(s tracetest.SpanStub) bool {
	d := attrOf(s, "messaging.destination.name")
	return len(d) > 9 && d[:9] == "ebb.rcpt."
}
