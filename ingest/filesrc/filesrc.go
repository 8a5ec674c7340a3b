// Package filesrc is the daemon's files source: it replays files and
// folders of CloudTrail data and, with Watch, picks up new files.
package filesrc

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
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

// round reads the inputs of one listing through ingest.ReadAll, as
// replay does: Workers files decoded at once, their events handed on in
// listing order, each file's checkpoint with its last batch.
func (s *Source) round(ctx context.Context, inputs []ingest.Input, handle ingest.Handler) error {
	var todo []ingest.Input
	marks := map[string][]byte{}
	for _, in := range inputs {
		mark, ok, err := s.pending(in)
		if err != nil {
			return err
		}
		if ok {
			todo, marks[in.Path] = append(todo, in), mark
		}
	}
	if len(todo) == 0 {
		return nil
	}
	b := &ingest.Batcher{Source: "files", Handle: handle}
	var herr error // the pipeline's failure: ReadAll stops at the next batch
	_, err := ingest.ReadAll(ctx, todo, ingest.ReadOptions{Workers: s.Workers, DataEvents: s.DataEvents, Limits: s.Limits, OnError: s.report,
		OnInputDone: func(in ingest.Input, st ingest.Stats, _ error) {
			if herr == nil {
				herr = b.Flush(ctx, st, map[string][]byte{Key(in.Path): marks[in.Path]})
			}
			s.Logger.Debug().Str("file", in.Path).Int64("records", st.Records).Int64("events", st.Events).Msg("file read")
		}},
		func(evs []*ingest.Event) error {
			for _, ev := range evs {
				if herr == nil {
					herr = b.Add(ctx, ev)
				}
			}
			return herr
		})
	if herr != nil {
		return herr
	}
	return err
}

// pending reports whether an input is to be read, with the checkpoint that
// marks it done: not when its checkpoint says it is, or, watching, while
// it is still being written.
func (s *Source) pending(in ingest.Input) ([]byte, bool, error) {
	if in.Path == ingest.Stdin {
		return nil, false, errors.New("the files source cannot read standard input")
	}
	info, err := os.Stat(in.Path)
	if err != nil {
		s.Logger.Warn().Err(err).Str("file", in.Path).Msg("file vanished")
		return nil, false, nil
	}
	if s.Watch && time.Since(info.ModTime()) < s.Settle {
		return nil, false, nil // still being written; next round
	}
	if s.Checkpoints != nil {
		raw, err := s.Checkpoints.Checkpoint(Key(in.Path))
		if err != nil || raw != nil {
			return nil, false, err
		}
	}
	mark, _ := json.Marshal(fileMark{Size: info.Size(), MTime: info.ModTime().UTC(), Done: time.Now().UTC()})
	return mark, true, nil
}

func (s *Source) report(pos ingest.Position, err error) {
	s.Logger.Warn().Err(err).Str("where", pos.String()).Msg("bad input skipped")
	if s.OnError != nil {
		s.OnError(pos, err)
	}
}
