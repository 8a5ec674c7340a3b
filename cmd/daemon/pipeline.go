package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/backoff"
	"github.com/encwatch/encwatch/rules"
)

// pipeline judges batches and stores their findings, bucket state and
// checkpoints in one transaction: the source may advance once it returns.
type pipeline struct {
	db      *bolt.DB
	engine  atomic.Pointer[rules.Engine]
	outbox  *outbox.Outbox
	now     func() time.Time
	metrics *pipelineMetrics
	state   *stateCollector
	// faults, when set, makes a batch whose store fails for the state's
	// reasons (not the batch's) wait and retry instead of failing.
	faults *stateFault
	log    zerolog.Logger
	// recent keeps the latest alerts for the web page (nil: none).
	recent *recentAlerts
}

// timerSource names the batches the pipeline sends itself to close the
// windows of grouped rules.
const timerSource = "timer"

// windowSlack is how long past its end a window stays open for late events.
const windowSlack = 15 * time.Minute

// expireLoop closes ended windows every interval until ctx ends.
func (p *pipeline) expireLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.handle(ctx, ingest.Batch{Source: timerSource}); err != nil && ctx.Err() == nil {
				// The windows stay stored; the next tick tries again.
				p.log.Error().Err(err).Msg("closing ended data-event windows failed")
			}
		}
	}
}

// storeAttempts is how often a batch whose judging or storing fails is
// tried before it is set aside.
const storeAttempts = 3

// judgeError is a failure inside the transaction that judges and stores a
// batch: it comes from the batch's content (a rule, a finding, a key that
// cannot be stored), so trying again gives the same result and the batch
// is set aside after storeAttempts. A failure to commit is the state's and
// is not a judgeError.
type judgeError struct {
	err   error
	stack []byte
}

func (e *judgeError) Error() string { return e.err.Error() }

func (e *judgeError) Unwrap() error { return e.err }

// handle is the ingest.Handler every source calls.
func (p *pipeline) handle(ctx context.Context, b ingest.Batch) error {
	if err := p.outbox.Wait(ctx); err != nil {
		return err
	}
	return p.process(ctx, b, nil)
}

// process judges a batch and stores its findings, bucket state and
// checkpoints in one transaction; done, when set, runs inside it too. A
// batch that cannot be judged or stored after storeAttempts is set aside
// in the quarantine with its checkpoints, so the source moves on; only a
// state that cannot be written at all stops it.
func (p *pipeline) process(ctx context.Context, b ingest.Batch, done func(*bolt.Tx) error) error {
	start := time.Now()
	var mark []byte
	if len(b.Events) > 0 {
		err := p.write(ctx, func() (err error) { mark, err = markInflight(p.db, b, p.now()); return err })
		if err != nil {
			return fmt.Errorf("storing a batch of %d events from %s: %w", len(b.Events), b.Source, err)
		}
	}
	var res stored
	var err error
	for attempt := 1; ; attempt++ {
		err = p.write(ctx, func() (err error) {
			res, err = p.store(b, mark, done)
			var je *judgeError
			if errors.As(err, &je) {
				return &batchFault{err} // the batch's fault, not the state's
			}
			return err
		})
		var bf *batchFault
		if errors.As(err, &bf) {
			err = bf.err
		}
		var je *judgeError
		if err == nil || !errors.As(err, &je) || b.Source == timerSource || attempt == storeAttempts || ctx.Err() != nil {
			break
		}
		p.log.Warn().Err(err).Str("source", b.Source).Str("origin", batchOrigin(b.Events)).Int("attempt", attempt).
			Msg("judging or storing a batch failed; trying again")
		backoff.Sleep(ctx, time.Duration(attempt)*100*time.Millisecond)
	}
	var je *judgeError
	if errors.As(err, &je) && b.Source != timerSource {
		var id uint64
		qerr := p.write(ctx, func() (err error) { id, err = p.setAside(b, mark, done, reasonStoreFailed, je); return err })
		if qerr != nil {
			return fmt.Errorf("storing a batch of %d events from %s: %w (and setting it aside failed: %v)", len(b.Events), b.Source, err, qerr)
		}
		p.quarantined(b.Source, id, reasonStoreFailed, b.Events, err, je.stack)
		res, err = stored{checkpointed: len(b.Checkpoints) > 0}, nil
	}
	if err != nil {
		return fmt.Errorf("storing a batch of %d events from %s: %w", len(b.Events), b.Source, err)
	}
	if len(res.aside) > 0 {
		p.quarantined(b.Source, res.asideID, reasonCrashed, res.aside, errors.New("in flight at two crashes of encwatch"), nil)
	}
	p.metrics.storeSeconds.Observe(time.Since(start).Seconds())
	p.metrics.skipped.WithLabelValues(b.Source).Add(float64(b.Stats.Records - b.Stats.Candidates))
	var newest time.Time
	for _, ev := range res.judged {
		p.metrics.events.WithLabelValues(b.Source, ev.Name).Inc()
		if ev.Time.After(newest) {
			newest = ev.Time
		}
	}
	if !newest.IsZero() {
		p.metrics.lag.WithLabelValues(b.Source).Set(float64(newest.Unix()))
	}
	if p.state != nil {
		p.state.observe(b.Source, newest, res.checkpointed)
	}
	stored := p.now()
	for _, f := range res.found {
		p.metrics.findings.WithLabelValues(f.Rule, f.Severity.String()).Inc()
		if f.Event != nil && !f.Event.Time.IsZero() && b.Source != timerSource {
			p.metrics.eventToAlert.WithLabelValues(b.Source).Observe(max(stored.Sub(f.Event.Time).Seconds(), 0))
		}
	}
	p.recent.add(res.alerts)
	return nil
}

// batchFault carries a judgeError through write, which retries only the
// state's failures.
type batchFault struct{ err error }

func (e *batchFault) Error() string { return e.err.Error() }

// write runs a write of the state. With faults set, a failure that is not
// the batch's (a full disk) is retried with backoff until ctx ends.
func (p *pipeline) write(ctx context.Context, fn func() error) error {
	if p.faults == nil {
		return fn()
	}
	var kept error
	err := p.faults.retry(ctx, func() error {
		err := fn()
		var bf *batchFault
		if errors.As(err, &bf) {
			kept = err
			return nil
		}
		return err
	})
	if kept != nil {
		return kept
	}
	return err
}

// stored is what one transaction of process stored.
type stored struct {
	found        []rules.Finding
	alerts       []alert.Alert
	judged       []*ingest.Event
	aside        []*ingest.Event // suspects set aside instead of judged
	asideID      uint64
	checkpointed bool
}

// store is one try at judging and storing a batch.
func (p *pipeline) store(b ingest.Batch, mark []byte, done func(*bolt.Tx) error) (stored, error) {
	now := p.now()
	engine := p.engine.Load() // one policy for the whole batch, even during a reload
	var res stored
	err := p.db.Update(func(tx *bolt.Tx) (err error) {
		res = stored{}
		defer func() {
			if r := recover(); r != nil {
				err = &judgeError{err: fmt.Errorf("panic: %v", r), stack: debug.Stack()}
			} else if err != nil {
				err = &judgeError{err: err}
			}
		}()
		st := rules.TxState{Tx: tx}
		put := func(fs []rules.Finding) error {
			if b.Replay {
				return nil // judged and alerted by another task
			}
			if b.Owns != nil {
				fs = slices.DeleteFunc(slices.Clone(fs), func(f rules.Finding) bool { return !b.Owns(findingAccount(f)) })
			}
			for _, f := range fs {
				a := alert.New(f, now)
				if _, err := p.outbox.Put(tx, a); err != nil {
					return fmt.Errorf("outbox: %w", err)
				}
				res.alerts = append(res.alerts, a)
			}
			res.found = append(res.found, fs...)
			return nil
		}
		if b.Source == timerSource {
			// Close the windows of grouped rules that a quiet stream left
			// open; the slack lets late events still join their window.
			fs, err := engine.Expire(st, now.Add(-windowSlack))
			if err != nil {
				return err
			}
			if err := put(fs); err != nil {
				return err
			}
		}
		crashes := crashCounts(tx, b.Events)
		for _, ev := range b.Events {
			if crashes[ev.Digest] >= maxCrashes {
				res.aside = append(res.aside, ev)
				continue
			}
			fs, err := engine.EvaluateIn(st, ev)
			if err != nil {
				return err
			}
			if err := put(fs); err != nil {
				return err
			}
			res.judged = append(res.judged, ev)
		}
		if len(res.aside) > 0 {
			id, err := putQuarantine(tx, Quarantined{Source: b.Source, Origin: batchOrigin(res.aside), Reason: reasonCrashed,
				Error: "in flight at two crashes of encwatch", At: now.UTC(), Events: res.aside})
			if err != nil {
				return err
			}
			res.asideID = id
		}
		if crashes != nil {
			if err := clearSuspects(tx, b.Events); err != nil {
				return err
			}
		}
		if err := finish(tx, mark, done); err != nil {
			return err
		}
		res.checkpointed = len(b.Checkpoints) > 0
		return ingest.PutCheckpoints(tx, b.Checkpoints)
	})
	return res, err
}

// findingAccount is the account of the bucket a finding is about.
func findingAccount(f rules.Finding) string {
	if f.Bucket != nil && f.Bucket.Account != "" {
		return f.Bucket.Account
	}
	if f.Event != nil {
		return ingest.PartitionAccount(f.Event)
	}
	return ""
}

// finish removes a batch's inflight mark and runs the caller's step, in the
// transaction that stores the batch.
func finish(tx *bolt.Tx, mark []byte, done func(*bolt.Tx) error) error {
	if mark != nil {
		if bk := tx.Bucket(inflightTable); bk != nil {
			if err := bk.Delete(mark); err != nil {
				return err
			}
		}
	}
	if done != nil {
		return done(tx)
	}
	return nil
}

// setAside stores a batch that could not be judged in the quarantine, with
// its checkpoints, so that its source moves on.
func (p *pipeline) setAside(b ingest.Batch, mark []byte, done func(*bolt.Tx) error, reason string, cause error) (uint64, error) {
	var id uint64
	err := p.db.Update(func(tx *bolt.Tx) error {
		var err error
		id, err = putQuarantine(tx, Quarantined{Source: b.Source, Origin: batchOrigin(b.Events), Reason: reason, Error: cause.Error(),
			At: p.now().UTC(), Events: b.Events})
		if err != nil {
			return err
		}
		if err := finish(tx, mark, done); err != nil {
			return err
		}
		return ingest.PutCheckpoints(tx, b.Checkpoints)
	})
	return id, err
}

// quarantined counts and logs events set aside.
func (p *pipeline) quarantined(source string, id uint64, reason string, evs []*ingest.Event, cause error, stack []byte) {
	p.metrics.quarantined.WithLabelValues(source).Inc()
	l := p.log.Error().Str("source", source).Str("quarantine_id", idString(id)).Str("reason", reason).
		Str("origin", batchOrigin(evs)).Int("events", len(evs)).Str("error", cause.Error())
	if stack != nil {
		l = l.Bytes("stack", stack)
	}
	l.Msg("batch set aside in the quarantine; the source moves on (encwatch quarantine list|retry|drop)")
}

// retryQuarantined judges again, once, the quarantined batches an operator
// marked with `encwatch quarantine retry`. Each leaves the quarantine in
// the transaction that stores it; one that fails again goes back to it.
func (p *pipeline) retryQuarantined(ctx context.Context) error {
	qs, err := retries(p.db)
	if err != nil {
		return fmt.Errorf("reading the quarantine: %w", err)
	}
	for _, q := range qs {
		if ctx.Err() != nil {
			return nil
		}
		key := seqKey(q.ID)
		done := func(tx *bolt.Tx) error {
			if bk := tx.Bucket(quarantineTable); bk != nil {
				return bk.Delete(key)
			}
			return nil
		}
		p.log.Info().Str("quarantine_id", idString(q.ID)).Int("events", len(q.Events)).Str("origin", q.Origin).Msg("judging a quarantined batch again")
		if err := p.process(ctx, ingest.Batch{Source: quarantineSource, Events: q.Events}, done); err != nil {
			return err
		}
	}
	return nil
}
