package kafkasrc_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/kafkasrc"
)

func record(id string) string {
	return string(testkit.Record{ID: id, Name: "DeleteBucketEncryption", Bucket: "b-" + id, Account: "1"}.Build())
}

// TestGroupSurvivesAConsumerDying: two consumers share a four-partition
// topic; one dies with a batch it never stored; every record's event is
// still stored, by the other.
func TestGroupSurvivesAConsumerDying(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "cloudtrail"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("cloudtrail"), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	want := map[string]bool{}
	for i := range 200 {
		var value string
		if i%5 == 0 { // some messages hold a log file's {"Records":[...]}
			a, b := fmt.Sprintf("e%03d-a", i), fmt.Sprintf("e%03d-b", i)
			value = `{"Records":[` + record(a) + `,` + record(b) + `]}`
			want[a], want[b] = true, true
		} else {
			id := fmt.Sprintf("e%03d", i)
			value = record(id)
			want[id] = true
		}
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte(value)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	stored := map[string]int{}
	store := func(b ingest.Batch) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range b.Events {
			stored[e.ID]++
		}
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(stored) }
	newSource := func() *kafkasrc.Source {
		s, err := kafkasrc.New(kafkasrc.Options{Brokers: c.ListenAddrs(), Topic: "cloudtrail", Group: "encwatch", MaxBatch: 10,
			SessionTimeout: 2 * time.Second, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Consumer A stores two batches, then dies holding its third.
	ctxA, killA := context.WithCancel(context.Background())
	batchesA := 0
	doneA := make(chan error, 1)
	go func() {
		doneA <- newSource().Run(ctxA, func(ctx context.Context, b ingest.Batch) error {
			batchesA++
			if batchesA > 2 {
				killA()
				return errors.New("crashed")
			}
			store(b)
			return nil
		})
	}()
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		doneB <- newSource().Run(ctxB, func(ctx context.Context, b ingest.Batch) error { store(b); return nil })
	}()
	deadline := time.Now().Add(60 * time.Second)
	for count() < len(want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopB()
	<-doneA
	<-doneB
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for id := range want {
		if stored[id] == 0 {
			missing++
		}
	}
	if missing > 0 || batchesA < 3 {
		t.Errorf("%d of %d events never stored (consumer A handled %d batches)", missing, len(want), batchesA)
	}
}

// TestBrokenMessageReported: a message whose gzip stream is cut short is
// reported with where it came from (it used to vanish without a word), and
// the next message goes through; the batch's stats count the records read
// for the skipped metric.
func TestBrokenMessageReported(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "cloudtrail"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic("cloudtrail"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"Records":[` + record("before-cut") + `,` + record("after-cut") + `]}`))
	zw.Close()
	cut := gz.Bytes()[:gz.Len()-12] // the trailer and the end of the stream
	for _, v := range [][]byte{cut, []byte(record("next"))} {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var reported []string
	got := map[string]bool{}
	var records int64
	src, err := kafkasrc.New(kafkasrc.Options{Brokers: c.ListenAddrs(), Topic: "cloudtrail", Group: "g", Logger: zerolog.Nop(),
		OnError: func(pos ingest.Position, err error) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, pos.Source+": "+ingest.ErrorReason(err))
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src.Run(ctx, func(_ context.Context, b ingest.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range b.Events {
			got[e.ID] = true
		}
		records += b.Stats.Records
		if got["next"] {
			cancel()
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !got["next"] {
		t.Fatalf("the message after the broken one was not read: %v", got)
	}
	if len(reported) != 1 || !strings.HasPrefix(reported[0], "kafka://cloudtrail/0/0") {
		t.Errorf("reported %v, want the broken message at kafka://cloudtrail/0/0", reported)
	}
	if records < 1 {
		t.Errorf("batch stats counted %d records", records)
	}
}
