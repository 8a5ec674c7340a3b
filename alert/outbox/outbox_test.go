package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
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

// alertIDs returns n ids in queue order: a-0000, a-0001, ...
func alertIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("a-%04d", i)
	}
	return ids
}

// runUntilEmpty runs ob until the sink's queue is empty, then stops it.
func runUntilEmpty(t *testing.T, ob *Outbox, sink string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ob.Run(ctx, time.Second); close(done) }()
	waitFor(t, "delivery", func() bool { return ob.Depth(sink) == 0 })
	cancel()
	<-done
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
	runUntilEmpty(t, ob, "scripted")
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

// batching is a scripted sink that takes batches: it records each batch's
// size and answers per alert as scripted does.
type batching struct {
	scripted
	sizes []int
}

func (b *batching) SendBatch(ctx context.Context, ds []alert.Delivery) []error {
	b.mu.Lock()
	b.sizes = append(b.sizes, len(ds))
	b.mu.Unlock()
	errs := make([]error, len(ds))
	for i, d := range ds {
		errs[i] = b.scripted.Send(ctx, d)
	}
	return errs
}

// TestBatches: a burst goes to a BatchSink in batches of BatchSize; an
// alert the sink refuses for a while is sent again alone, one it rejects
// for good is dead-lettered, and every other one is delivered once.
func TestBatches(t *testing.T) {
	db := openDB(t)
	sink := &batching{scripted: scripted{failures: map[string]int{"a-0007": 2}, reject: map[string]bool{"a-0042": true}}}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, BatchSize: 100, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ids := alertIDs(1000)
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if _, err := ob.Put(tx, alert.Alert{Schema: alert.Schema, ID: id}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	runUntilEmpty(t, ob, "scripted")
	got := sink.delivered()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	if len(got) != 999 || len(seen) != 999 || seen["a-0042"] != 0 || seen["a-0007"] != 1 {
		t.Errorf("%d delivered (%d distinct); a-0007 %d times, a-0042 %d", len(got), len(seen), seen["a-0007"], seen["a-0042"])
	}
	if sink.sizes[0] != 100 || len(sink.sizes) > 14 {
		t.Errorf("batch sizes %v: want batches of 100 (and the retries alone)", sink.sizes)
	}
	if dl, _ := DeadLetters(db, ""); len(dl) != 1 {
		t.Errorf("dead letters %v", dl)
	}
}

// slowSink takes each alert after a delay and records how many it was
// sent at once.
type slowSink struct {
	mu            sync.Mutex
	inFlight, max int
	n             int
}

func (s *slowSink) Name() string { return "slow" }

func (s *slowSink) Send(_ context.Context, _ alert.Delivery) error {
	s.mu.Lock()
	s.inFlight++
	s.max = max(s.max, s.inFlight)
	s.mu.Unlock()
	time.Sleep(5 * time.Millisecond)
	s.mu.Lock()
	s.inFlight--
	s.n++
	s.mu.Unlock()
	return nil
}

// TestConcurrency: a sink without batches is sent Concurrency alerts at
// once, never more.
func TestConcurrency(t *testing.T) {
	db := openDB(t)
	sink := &slowSink{}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink, Concurrency: 4}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		put(t, db, ob, fmt.Sprint("c-", i))
	}
	runUntilEmpty(t, ob, "slow")
	if sink.n != 200 || sink.max != 4 {
		t.Errorf("%d sent, at most %d at once; want 200 and 4", sink.n, sink.max)
	}
}

// TestRoundsInOrder: an ordered sink gets a burst round after round (the
// next round read while one is sent) in the order of the queue, also when
// an alert of a later round fails and the round read ahead is dropped.
func TestRoundsInOrder(t *testing.T) {
	db := openDB(t)
	sink := &scripted{failures: map[string]int{"a-0250": 2, "a-0399": 1}}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, BatchSize: 100, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	ids := alertIDs(1000)
	put(t, db, ob, ids...)
	runUntilEmpty(t, ob, "scripted")
	got := sink.delivered()
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("delivered %d alerts, not the %d queued in their order", len(got), len(ids))
		for i := range min(len(got), len(ids)) {
			if got[i] != ids[i] {
				t.Fatalf("first difference at %d: %s, want %s", i, got[i], ids[i])
			}
		}
	}
}

// TestEntryLayout: entries are written as json.Marshal writes them and read
// as json.Unmarshal reads them, whatever the alert holds.
func TestEntryLayout(t *testing.T) {
	at := time.Date(2026, 12, 2, 7, 8, 9, 123456789, time.UTC)
	alerts := []alert.Alert{
		{Schema: alert.Schema, ID: "plain"},
		{Schema: alert.Schema, ID: `quote " and <script>&</script> \u2028`, Summary: `,"enqueued":"2020-01-01T00:00:00Z"}`},
		{Schema: alert.Schema, ID: "é ü 日本"},
	}
	for _, a := range alerts {
		body, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(Entry{Alert: body, Enqueued: at})
		got, err := encodeEntry(body, at)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("encodeEntry:\n got %s\nwant %s", got, want)
		}
		var fast, std Entry
		ferr, serr := decodeEntry(got, &fast), json.Unmarshal(got, &std)
		if ferr != nil || serr != nil || !bytes.Equal(fast.Alert, std.Alert) || !fast.Enqueued.Equal(std.Enqueued) {
			t.Errorf("decodeEntry %q: %v / %v", got, ferr, serr)
		}
	}
	// Other layouts (a dead letter's fields, damaged values) read as
	// encoding/json reads them.
	for _, v := range []string{
		`{"alert":{"id":"x"},"enqueued":"2026-12-02T07:08:09Z","attempts":3,"reason":"no"}`,
		`{"alert":{"id":"x"},"enqueued":"not a time"}`,
		`{"alert":{"id":"x"},"enqueued":"2026-12-02T07:08:09Z"`,
		`{"alert":{"id":"x"},"enqueued":""}`,
		`{"alert":{"id":"x"},"enqueued":"2026-12-02T07:08"09Z"}`,
		`not json`,
	} {
		var fast, std Entry
		ferr, serr := decodeEntry([]byte(v), &fast), json.Unmarshal([]byte(v), &std)
		if (ferr == nil) != (serr == nil) || ferr == nil && (!bytes.Equal(fast.Alert, std.Alert) || fast.Attempts != std.Attempts || !fast.Enqueued.Equal(std.Enqueued)) {
			t.Errorf("decodeEntry %q: %+v %v, encoding/json %+v %v", v, fast, ferr, std, serr)
		}
	}
}

// TestDamagedEntryKept: an entry whose alert is not JSON goes to the dead
// letters with its bytes, and the alerts after it are delivered.
func TestDamagedEntryKept(t *testing.T) {
	db := openDB(t)
	sink := &scripted{}
	ob, err := New(Options{DB: db, Queues: []Queue{{Sink: sink}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	put(t, db, ob, "a")
	if err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(QueueTable).Bucket([]byte("scripted"))
		seq, _ := b.NextSequence()
		ob.added("scripted", 1)
		return b.Put(key(seq), []byte(`{"alert":{"id":"torn`))
	}); err != nil {
		t.Fatal(err)
	}
	put(t, db, ob, "b")
	runUntilEmpty(t, ob, "scripted")
	if got := sink.delivered(); fmt.Sprint(got) != "[a b]" {
		t.Errorf("delivered %v, want [a b]", got)
	}
	dl, err := DeadLetters(db, "scripted")
	if err != nil || len(dl) != 1 || !bytes.Contains(dl[0].Alert, []byte("torn")) || !strings.Contains(dl[0].Reason, "unreadable") {
		t.Fatalf("dead letters %+v %v: want the damaged entry with its bytes", dl, err)
	}
}

// FuzzDecodeEntry: whatever bytes a damaged or hostile state file holds,
// decodeEntry reads them as encoding/json does (same error or none, same
// alert bytes and times), and what encodeEntry writes reads back.
func FuzzDecodeEntry(f *testing.F) {
	at := time.Date(2026, 12, 2, 7, 8, 9, 123456789, time.UTC)
	for _, body := range []string{`{"id":"a"}`, `{"summary":",\"enqueued\":\"x\"}"}`, `1`, `"s"`} {
		raw, _ := encodeEntry([]byte(body), at)
		f.Add(raw)
	}
	f.Add([]byte(`{"alert":{"id":"x"},"enqueued":"2026-12-02T07:08:09Z","attempts":3}`))
	f.Add([]byte(`{"alert":x,"enqueued":"2026-12-02T07:08:09Z"}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		var fast, std Entry
		ferr, serr := decodeEntry(v, &fast), json.Unmarshal(v, &std)
		if serr != nil {
			if ferr == nil && json.Valid(fast.Alert) {
				t.Fatalf("decodeEntry took %q that encoding/json refuses (%v), and its alert is JSON", v, serr)
			}
			return
		}
		if ferr != nil || !bytes.Equal(fast.Alert, std.Alert) || !fast.Enqueued.Equal(std.Enqueued) || fast.Attempts != std.Attempts {
			t.Fatalf("%q: decodeEntry %+v %v, encoding/json %+v", v, fast, ferr, std)
		}
	})
}
