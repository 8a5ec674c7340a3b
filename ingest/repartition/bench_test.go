package repartition_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/repartition"
)

// BenchmarkPublish is what the repartition adds to each batch a source
// stores (a trail file's few encryption events): one produce acknowledged
// by every in-sync replica, on a loopback kfake broker. Compare with the
// same batch stored without it (the handler returns at once).
func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{4, 512} {
		b.Run(map[int]string{4: "events=4", 512: "events=512"}[n], func(b *testing.B) {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "repartition"))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			p, err := repartition.NewPublisher(ctx, options(c, nil))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			var evs []*ingest.Event
			for i := range n {
				evs = append(evs, put(accounts[i%len(accounts)], i))
			}
			h := p.Handler(func(context.Context, ingest.Batch) error { return nil })
			b.ResetTimer()
			for range b.N {
				if err := h(ctx, ingest.Batch{Source: "sqs", Events: evs}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkJudge is the judging side: events published beforehand, read
// by one task's Source until all were handed on.
func BenchmarkJudge(b *testing.B) {
	const total = 50000
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "repartition"), kfake.GroupMinSessionTimeout(100*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := repartition.NewPublisher(ctx, options(c, nil))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	h := p.Handler(func(context.Context, ingest.Batch) error { return nil })
	for i := 0; i < total; i += 500 {
		var evs []*ingest.Event
		for j := range 500 {
			evs = append(evs, put(accounts[j%len(accounts)], i+j))
		}
		if err := h(ctx, ingest.Batch{Events: evs}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		j := newJudge()
		o := options(c, j.cps)
		o.Group = "bench-" + string(rune('a'+i))
		src, _ := repartition.NewSource(o)
		var mu sync.Mutex
		var once sync.Once
		seen := 0
		done := make(chan struct{})
		count := func(_ context.Context, bt ingest.Batch) error {
			mu.Lock()
			defer mu.Unlock()
			if seen += len(bt.Events); seen >= total {
				once.Do(func() { close(done) })
			}
			return nil
		}
		jctx, stop := context.WithCancel(ctx)
		ran := make(chan struct{})
		go func() { defer close(ran); src.Run(jctx, count) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			b.Fatal("not all judged within a minute")
		}
		stop()
		<-ran
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "events/s")
}
