// Package filesrc is the daemon's files source: it replays files and
// folders of CloudTrail data and, with Watch, picks up new files.
package filesrc

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/ingest"
)

// Source reads files and folders for the daemon: it replays them, and
// with Watch it keeps looking for new files. Each file is marked done in
// its checkpoint together with the findings of its last batch, so a
// restart neither repeats a finished file nor skips one; a file cut short
// by a crash is read again (at-least-once, same alert ids).
type Source struct {
	Paths []string
	Watch bool
	// PollInterval is how often a watched tree is listed (default 5s).
	PollInterval time.Duration
	// Settle is how long a file must be unchanged before it is read, so
	// that files still being written are left for later (default 2s; only
	// when watching).
	Settle      time.Duration
	DataEvents  bool
	Limits      ingest.Limits
	Checkpoints ingest.Checkpoints
	Logger      zerolog.Logger
	// OnError receives unreadable records and files (for metrics).
	OnError func(pos ingest.Position, err error)
	// Workers decode that many files at once (default: the number of
	// CPUs); the files are still handed on one after another, in order.
	Workers int
}

// DefaultPollInterval is how often a watched tree is listed by default.
const DefaultPollInterval = 5 * time.Second

// fileMark is the checkpoint of a finished file.
type fileMark struct {
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
	Done  time.Time `json:"done"`
}

// Key returns the checkpoint key of a file.
func Key(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return "files/" + path
}

// Run replays the paths, then, when watching, polls for new files until
// ctx ends. A path that does not exist is an error at start; later listing
// errors are logged and retried.
func (s *Source) Run(ctx context.Context, handle ingest.Handler) error {
	if s.PollInterval <= 0 {
		s.PollInterval = DefaultPollInterval
	}
	if s.Settle <= 0 {
		s.Settle = 2 * time.Second
	}
	first := true
	for {
		inputs, err := ingest.Expand(s.Paths)
		if err != nil {
			if first {
				return err
			}
			s.Logger.Warn().Err(err).Msg("listing watched paths")
		}
		if err := s.round(ctx, inputs, handle); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		first = false
		if !s.Watch {
			s.Logger.Info().Int("files", len(inputs)).Msg("files replayed; not watching")
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.PollInterval):
		}
	}
}

// decoded is one file read ahead: its events, stats and checkpoint.
type decoded struct {
	skip   bool // unchanged since done, or still being written
	events []*ingest.Event
	st     ingest.Stats
	done   map[string][]byte
	err    error // the checkpoint could not be read
}

// round reads the inputs of one listing: Workers files are decoded at
// once, and each is handed on, with its checkpoint, in listing order once
// the ones before it were. At most 2 x Workers files are held decoded.
func (s *Source) round(ctx context.Context, inputs []ingest.Input, handle ingest.Handler) error {
	workers := s.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan decoded, len(inputs))
	for i := range results {
		results[i] = make(chan decoded, 1)
	}
	ahead := make(chan struct{}, 2*workers)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results[i] <- s.decode(ctx, inputs[i])
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := range inputs {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }() // the workers stop before round returns
	for i := range inputs {
		var d decoded
		select {
		case d = <-results[i]:
		case <-ctx.Done():
			return nil
		}
		<-ahead
		if d.err != nil {
			return d.err
		}
		if d.skip {
			continue
		}
		b := &ingest.Batcher{Source: "files", Handle: handle}
		for _, ev := range d.events {
			if err := b.Add(ctx, ev); err != nil {
				return err
			}
		}
		if err := b.Flush(ctx, d.st, d.done); err != nil {
			return err
		}
	}
	return nil
}

// decode reads one input unless its checkpoint says it is done.
func (s *Source) decode(ctx context.Context, in ingest.Input) decoded {
	if in.Path == ingest.Stdin {
		return decoded{err: errors.New("the files source cannot read standard input")}
	}
	info, err := os.Stat(in.Path)
	if err != nil {
		s.Logger.Warn().Err(err).Str("file", in.Path).Msg("file vanished")
		return decoded{skip: true}
	}
	if s.Watch && time.Since(info.ModTime()) < s.Settle {
		return decoded{skip: true} // still being written; next round
	}
	key := Key(in.Path)
	if s.Checkpoints != nil {
		raw, err := s.Checkpoints.Checkpoint(key)
		if err != nil {
			return decoded{err: err}
		}
		if raw != nil {
			return decoded{skip: true}
		}
	}
	mark, _ := json.Marshal(fileMark{Size: info.Size(), MTime: info.ModTime().UTC(), Done: time.Now().UTC()})
	d := decoded{done: map[string][]byte{key: mark}}
	rc, err := ingest.Open(in)
	if err != nil {
		s.report(ingest.Position{Source: in.Path}, err)
		d.st = ingest.Stats{Errors: 1}
		return d
	}
	defer rc.Close()
	dec := ingest.Decoder{Source: in.Path, DataEvents: s.DataEvents, Limits: s.Limits, OnError: s.report,
		OnEvent: func(ev *ingest.Event) error {
			d.events = append(d.events, ev)
			return ctx.Err()
		}}
	st, err := dec.Decode(rc)
	if err != nil && ctx.Err() == nil {
		s.report(ingest.Position{Source: in.Path, Offset: st.Bytes}, err)
	}
	s.Logger.Debug().Str("file", in.Path).Int64("records", st.Records).Int64("events", st.Events).Msg("file read")
	d.st = st
	return d
}

func (s *Source) report(pos ingest.Position, err error) {
	s.Logger.Warn().Err(err).Str("where", pos.String()).Msg("bad input skipped")
	if s.OnError != nil {
		s.OnError(pos, err)
	}
}
