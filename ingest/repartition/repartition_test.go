package repartition_test

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/repartition"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// memCheckpoints is a task's checkpoints table.
type memCheckpoints struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memCheckpoints) Checkpoint(k string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k], nil
}

// judge is one task's pipeline: it keeps its batches and stores their
// checkpoints, as the pipeline does in the batch's transaction.
type judge struct {
	cps     *memCheckpoints
	mu      sync.Mutex
	batches []ingest.Batch
}

func newJudge() *judge { return &judge{cps: &memCheckpoints{m: map[string][]byte{}}} }

func (j *judge) handle(_ context.Context, b ingest.Batch) error {
	j.mu.Lock()
	j.batches = append(j.batches, b)
	j.mu.Unlock()
	j.cps.mu.Lock()
	for k, v := range b.Checkpoints {
		j.cps.m[k] = v
	}
	j.cps.mu.Unlock()
	return nil
}

// judged returns the ids of the events judged (not replayed), in order, by
// account, and the ids of KMS events each account's owner kept.
func (j *judge) judged() (events map[string][]string, replayed int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	events = map[string][]string{}
	for _, b := range j.batches {
		for _, ev := range b.Events {
			if b.Replay {
				replayed++
				continue
			}
			acct := ingest.PartitionAccount(ev)
			if ev.IsKMSEvent() {
				// Every partition gets the KMS event; Owns says for which
				// accounts' buckets this copy alerts.
				for _, a := range accounts {
					if b.Owns(a) {
						events[a] = append(events[a], ev.ID)
					}
				}
				continue
			}
			if !b.Owns(acct) {
				panic("an event judged on a partition that does not own its account")
			}
			events[acct] = append(events[acct], ev.ID)
		}
	}
	return events, replayed
}

var accounts = []string{"111111111111", "222222222222", "333333333333", "444444444444", "555555555555", "666666666666", "777777777777"}

func put(acct string, i int) *ingest.Event {
	return &ingest.Event{ID: fmt.Sprintf("%s-%03d", acct, i), Name: ingest.PutBucketEncryption, Source: ingest.SourceS3, Account: acct,
		Time:       time.Date(2026, 3, 1, 0, 0, i, 0, time.UTC),
		Bucket:     ingest.Bucket{Name: "b-" + acct, Account: acct, Type: ingest.BucketGeneralPurpose},
		Encryption: ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-east-1:" + acct + ":key/k"}}}}
}

func options(c *kfake.Cluster, cps ingest.Checkpoints) repartition.Options {
	return repartition.Options{Brokers: c.ListenAddrs(), Topic: "repartition", Group: "judges", Checkpoints: cps,
		SessionTimeout: time.Second, MaxWait: 20 * time.Millisecond, Logger: zerolog.Nop()}
}

// TestAccountsReachOneTaskInOrder: events of seven accounts published in
// batches by two publishers reach, through a five-partition topic, two
// judging tasks; each account's events are judged by one task, in the
// order published, each once; a KMS event reaches every partition and is
// kept, for each account, by exactly one task. Then one task stops: the
// other takes its partitions over, first reading them again as replay
// (state only), and judges what is published next.
func TestAccountsReachOneTaskInOrder(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(5, "repartition"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	judges := []*judge{newJudge(), newJudge()}
	runs := make([]context.CancelFunc, 2)
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	var wg sync.WaitGroup
	for i, j := range judges {
		o := options(c, j.cps)
		o.Metrics = repartition.NewMetrics(regs[i])
		src, err := repartition.NewSource(o)
		if err != nil {
			t.Fatal(err)
		}
		jctx, stop := context.WithCancel(ctx)
		runs[i] = stop
		wg.Add(1)
		go func() { defer wg.Done(); src.Run(jctx, j.handle) }()
	}
	defer func() { cancel(); wg.Wait() }()
	assigned := func(i int) float64 {
		return testkit.MetricValue(t, regs[i], "encwatch_repartition_partitions_assigned", "", "")
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return assigned(0) > 0 && assigned(1) > 0 && assigned(0)+assigned(1) == 5 },
		"both tasks given partitions")
	var pubs []*repartition.Publisher
	for range 2 {
		p, err := repartition.NewPublisher(ctx, options(c, nil))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		pubs = append(pubs, p)
	}
	var stored []ingest.Batch // what the publishing side stored itself
	local := func(_ context.Context, b ingest.Batch) error { stored = append(stored, b); return nil }
	want := map[string][]string{}
	n := 0
	publish := func(rounds int) {
		for r := range rounds {
			var evs []*ingest.Event
			for _, a := range accounts {
				evs = append(evs, put(a, n))
				want[a] = append(want[a], put(a, n).ID)
			}
			n++
			if r == 1 {
				kms := &ingest.Event{ID: fmt.Sprintf("kms-%d", n), Name: ingest.DisableKey, Source: ingest.SourceKMS, Account: accounts[0],
					KMS: ingest.KMSRequest{KeyID: "arn:aws:kms:us-east-1:" + accounts[0] + ":key/k"}}
				evs = append(evs, kms)
				for _, a := range accounts {
					want[a] = append(want[a], kms.ID)
				}
			}
			err := pubs[r%2].Handler(local)(ctx, ingest.Batch{Source: "sqs", Events: evs, Checkpoints: map[string][]byte{"k": []byte("v")}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(6)
	got := func() map[string][]string {
		all := map[string][]string{}
		for _, j := range judges {
			evs, _ := j.judged()
			for a, ids := range evs {
				all[a] = append(all[a], ids...)
			}
		}
		return all
	}
	testkit.Eventually(t, 20*time.Second, func() bool { return reflect.DeepEqual(got(), want) }, "every event judged once, in order")
	for _, b := range stored {
		if len(b.Events) != 0 || b.Checkpoints["k"] == nil {
			t.Fatalf("the publishing side stored %d events (want none) and checkpoints %v", len(b.Events), b.Checkpoints)
		}
	}
	for _, a := range accounts {
		owners := 0
		for _, j := range judges {
			if evs, _ := j.judged(); len(evs[a]) > 0 {
				owners++
			}
		}
		if owners != 1 {
			t.Errorf("account %s judged by %d tasks, want 1", a, owners)
		}
	}

	// The second task stops; the first takes over its partitions.
	runs[1]()
	before, _ := judges[0].judged()
	since := map[string]int{}
	for a, ids := range want {
		since[a] = len(ids)
	}
	publish(3)
	testkit.Eventually(t, 30*time.Second, func() bool {
		evs, _ := judges[0].judged()
		for _, a := range accounts {
			if len(evs[a]) == 0 || evs[a][len(evs[a])-1] != want[a][len(want[a])-1] {
				return false
			}
		}
		return true
	}, "the remaining task judges every account")
	after, replayed := judges[0].judged()
	if replayed == 0 {
		t.Error("the task that took partitions over did not rebuild their state")
	}
	for _, a := range accounts {
		if len(before[a]) > 0 {
			continue // its own account all along
		}
		// Taken over: the events published since, judged; those the other
		// task judged, replayed only.
		if !slices.Equal(after[a], want[a][since[a]:]) {
			t.Errorf("account %s taken over: judged %v, want %v", a, after[a], want[a][since[a]:])
		}
	}
	t.Logf("%d events replayed by the task that took partitions over", replayed)
}

// TestPlan: where a partition's reading starts and how far it only
// rebuilds state.
func TestPlan(t *testing.T) {
	for _, c := range []struct {
		local, committed, start, replayUntil int64
	}{
		{-1, -2, kafka.FirstOffset, -1}, // new group, new task: everything judged
		{40, -2, 40, -1},                // the group lost its offsets: go on from our own
		{-1, 100, kafka.FirstOffset, 100},
		{40, 100, 40, 100},  // we judged up to 40, another task to 100
		{100, 100, 100, -1}, // ours all along
		{120, 100, 120, -1}, // stored past the commit, killed before committing
	} {
		s, r := repartition.Plan(c.local, c.committed)
		if s != c.start || r != c.replayUntil {
			t.Errorf("plan(%d, %d) = %d, %d; want %d, %d", c.local, c.committed, s, r, c.start, c.replayUntil)
		}
	}
}

// TestPartitionOfMatchesKafkaGo: the partition the judges compute for an
// account is where kafka-go's Hash balancer puts its messages.
func TestPartitionOfMatchesKafkaGo(t *testing.T) {
	h := &kafka.Hash{}
	for _, n := range []int{1, 2, 5, 6, 64} {
		parts := make([]int, n)
		for i := range parts {
			parts[i] = i
		}
		for _, a := range append(accounts, "", "-", "000000000000") {
			k := a
			if k == "" {
				k = "-"
			}
			if got, want := repartition.PartitionOf(a, n), h.Balance(kafka.Message{Key: []byte(k)}, parts...); got != want {
				t.Errorf("PartitionOf(%q, %d) = %d, kafka-go %d", a, n, got, want)
			}
		}
	}
}

// TestPublishWaitsWhileKafkaIsDown: with the brokers gone, a source's
// batch is not stored (so not deleted upstream): the publish is retried,
// the topic is named as failing; once Kafka is back the events are
// published, then the checkpoints stored, and the report clears.
func TestPublishWaitsWhileKafkaIsDown(t *testing.T) {
	port := freePort(t)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, "repartition"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := repartition.NewPublisher(ctx, options(c, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c.Close()
	stored := make(chan ingest.Batch, 1)
	done := make(chan error, 1)
	go func() {
		done <- p.Handler(func(_ context.Context, b ingest.Batch) error { stored <- b; return nil })(ctx,
			ingest.Batch{Source: "sqs", Events: []*ingest.Event{put(accounts[0], 1)}, Checkpoints: map[string][]byte{"k": []byte("v")}})
	}()
	testkit.Eventually(t, 20*time.Second, func() bool {
		f := p.Failing()
		return len(f) == 1 && strings.HasPrefix(f[0], "kafka topic repartition: ")
	},
		"the topic is not named as failing: %v", p.Failing())
	select {
	case <-stored:
		t.Fatal("checkpoints stored while the events were not published")
	default:
	}
	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, "repartition"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the publish did not go through once Kafka was back")
	}
	if b := <-stored; b.Checkpoints["k"] == nil || len(b.Events) != 0 {
		t.Errorf("stored %+v after the publish", b)
	}
	if f := p.Failing(); len(f) != 0 {
		t.Errorf("still failing: %v", f)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
