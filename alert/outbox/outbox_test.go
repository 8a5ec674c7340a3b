package outbox

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
)

// scripted is a sink whose answers a test sets: it fails each alert id the
// given number of times, permanently for ids listed as rejected.
type scripted struct {
	mu       sync.Mutex
	failures map[string]int
	reject   map[string]bool
	got      []string
	attempts int
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Send(_ context.Context, d alert.Delivery) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.reject[d.Alert.ID] {
		return alert.Permanent(errors.New("400 Bad Request: no such channel"))
	}
	if s.failures[d.Alert.ID] > 0 {
		s.failures[d.Alert.ID]--
		return errors.New("503 Service Unavailable")
	}
	s.got = append(s.got, d.Alert.ID)
	return nil
}

func (s *scripted) delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func openDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func put(t *testing.T, db *bolt.DB, ob *Outbox, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := db.Update(func(tx *bolt.Tx) error { _, err := ob.Put(tx, alert.Alert{Schema: alert.Schema, ID: id}); return err }); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestRetriesInOrderAndDeadLetters(t *testing.T) {
	db := openDB(t)
	sink := &scripted{failures: map[string]int{"b": 3}, reject: map[string]bool{"c": true}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: zerolog.Nop(), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, ob, "a", "b", "c", "d")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ob.Run(ctx, time.Second); close(done) }()
	waitFor(t, "delivery", func() bool { return ob.Depth("scripted") == 0 })
	cancel()
	<-done
	if got := sink.delivered(); len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "d" {
		t.Errorf("delivered %v, want a b d in order", got)
	}
	if r := testutil.ToFloat64(m.retries.WithLabelValues("scripted")); r != 3 {
		t.Errorf("retries metric %v, want 3", r)
	}
	if d := testutil.ToFloat64(m.deadLetters.WithLabelValues("scripted")); d != 1 {
		t.Errorf("dead letters metric %v, want 1", d)
	}
	dl, err := DeadLetters(db, "")
	if err != nil || len(dl) != 1 || dl[0].Sink != "scripted" || dl[0].Reason == "" {
		t.Fatalf("dead letters %+v %v", dl, err)
	}
	// Requeued, the alert goes out once the sink takes it.
	sink.mu.Lock()
	sink.reject = nil
	sink.mu.Unlock()
	if n, err := Requeue(db, "scripted", 0); n != 1 || err != nil {
		t.Fatalf("requeue %d %v", n, err)
	}
	ob2, _ := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, Logger: zerolog.Nop()})
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { ob2.Run(ctx2, time.Second); close(done2) }()
	defer func() { cancel2(); <-done2 }()
	waitFor(t, "the requeued alert", func() bool { return len(sink.delivered()) == 4 })
	if dl, _ := DeadLetters(db, ""); len(dl) != 0 {
		t.Errorf("dead letters left after retry: %v", dl)
	}
}

// TestBackPressure: a full queue makes Wait block until the sink drains it.
func TestBackPressure(t *testing.T) {
	db := openDB(t)
	sink := &scripted{failures: map[string]int{"1": 1 << 30}}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, MaxPending: 2, MinBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, ob, "1", "2")
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { ob.Run(ctx, 0); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	waited := make(chan error, 1)
	go func() { waited <- ob.Wait(context.Background()) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned %v while the queue was full", err)
	case <-time.After(200 * time.Millisecond):
	}
	sink.mu.Lock()
	sink.failures["1"] = 0 // the sink recovers
	sink.mu.Unlock()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the sink drained the queue")
	}
}

// TestStopWhileDeadLetteringFails: when moving an alert to the dead letters
// fails (here the sink's dead-letter bucket cannot be opened), the worker
// retries after a pause that ends with the worker's context, so a stop is
// not held up by it; and it panics on nothing.
func TestStopWhileDeadLetteringFails(t *testing.T) {
	db := openDB(t)
	sink := &scripted{reject: map[string]bool{"1": true}}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	// A key where the sink's dead-letter bucket belongs: every move fails.
	if err := db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(DeadLetterTable)
		if err := root.DeleteBucket([]byte("scripted")); err != nil {
			return err
		}
		return root.Put([]byte("scripted"), []byte("x"))
	}); err != nil {
		t.Fatal(err)
	}
	put(t, db, ob, "1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ob.Run(ctx, 0); close(done) }()
	testkit.Eventually(t, 5*time.Second, func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.attempts >= 1
	}, "the sink was never tried")
	time.Sleep(20 * time.Millisecond) // the worker is in its pause now
	stopped := time.Now()
	cancel()
	<-done
	// The pause is a second; a worker that waits it out ignored its context.
	if d := time.Since(stopped); d > 700*time.Millisecond {
		t.Errorf("Run took %s to stop while dead-lettering failed", d)
	}
	if ob.Depth("scripted") != 1 {
		t.Errorf("the alert left the outbox without reaching the dead letters")
	}
}
