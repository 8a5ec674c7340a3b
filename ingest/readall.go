package ingest

import (
	"context"
	"runtime"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"
)

// ReadOptions configures ReadAll.
type ReadOptions struct {
	// Workers is how many inputs are decoded at once; 0 means GOMAXPROCS.
	Workers int
	// DataEvents also reads the data events the data-event rules judge.
	DataEvents bool
	// Limits bound hostile input.
	Limits Limits
	// OnError receives every unreadable record or input. Calls are
	// serialised.
	OnError func(pos Position, err error)
	// OnInputDone is called once per input after its last batch was handed
	// on, from the goroutine that calls fn. err is the input's own failure
	// (open error, truncated gzip), already reported through OnError.
	OnInputDone func(in Input, st Stats, err error)
}

type result struct {
	events []*Event
	stats  Stats
	err    error
	final  bool
}

type job struct {
	in  Input
	out chan result
}

// ReadAll decodes the inputs in parallel and calls fn with their encryption
// events: inputs in the order given, and within each batch sorted by
// eventTime (records in a CloudTrail file are in no order). fn is called
// from one goroutine; its error stops the read. A failing input is
// reported and the others go on. ReadAll returns the summed stats.
func ReadAll(ctx context.Context, inputs []Input, opts ReadOptions, fn func([]*Event) error) (Stats, error) {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var errMu sync.Mutex
	onError := func(pos Position, err error) {
		if opts.OnError == nil {
			return
		}
		errMu.Lock()
		defer errMu.Unlock()
		opts.OnError(pos, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	ordered := make(chan *job, workers*2)
	work := make(chan *job)
	g.Go(func() error {
		defer close(work)
		defer close(ordered)
		for _, in := range inputs {
			j := &job{in: in, out: make(chan result, 64)}
			select {
			case ordered <- j:
			case <-ctx.Done():
				return nil
			}
			select {
			case work <- j:
			case <-ctx.Done():
				return nil
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for j := range work {
				readOne(ctx, j, opts, onError)
			}
			return nil
		})
	}
	var total Stats
	g.Go(func() error {
		for j := range ordered {
			for r := range j.out {
				if len(r.events) > 0 {
					if err := fn(r.events); err != nil {
						return err
					}
				}
				if r.final {
					total.Add(r.stats)
					if opts.OnInputDone != nil {
						opts.OnInputDone(j.in, r.stats, r.err)
					}
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	err := g.Wait()
	return total, err
}

// readOne decodes one input into batches on j.out and closes it.
func readOne(ctx context.Context, j *job, opts ReadOptions, onError func(Position, error)) {
	defer close(j.out)
	send := func(r result) bool {
		select {
		case j.out <- r:
			return true
		case <-ctx.Done():
			return false
		}
	}
	rc, err := Open(j.in)
	if err != nil {
		onError(Position{Source: j.in.Path}, err)
		send(result{stats: Stats{Errors: 1}, err: err, final: true})
		return
	}
	defer rc.Close()
	b := &Batcher{Source: j.in.Path, Handle: func(ctx context.Context, b Batch) error {
		if !send(result{events: b.Events}) {
			return ctx.Err()
		}
		return nil
	}}
	dec := Decoder{
		Source:     j.in.Path,
		Limits:     opts.Limits,
		DataEvents: opts.DataEvents,
		OnError:    onError,
		OnEvent:    func(ev *Event) error { return b.Add(ctx, ev) },
	}
	st, err := dec.Decode(rc)
	if err != nil && ctx.Err() == nil {
		onError(Position{Source: j.in.Path, Offset: st.Bytes, Index: int(st.Records)}, err)
	}
	send(result{events: b.Take(), stats: st, err: err, final: true})
}

// SortByTime orders events by eventTime, keeping stream order for equal
// times.
func SortByTime(evs []*Event) {
	sort.SliceStable(evs, func(i, k int) bool { return evs[i].Time.Before(evs[k].Time) })
}
