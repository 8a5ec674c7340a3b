package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/ingest/backoff"
)

// stateFault tracks failures to write the state (a full disk, a volume
// gone read-only, an I/O error). While writes fail the sources wait: a
// batch that cannot be stored is tried again with backoff, up to a minute
// apart, and never dropped, and the process does not exit, so ECS does not
// restart it in a loop. /readyz fails with the reason meanwhile. The log
// says what is wrong and what to do once, then at most every logEvery, and
// once more when writes succeed again.
type stateFault struct {
	dir      string
	log      zerolog.Logger
	errors   prometheus.Counter
	logEvery time.Duration

	mu       sync.Mutex
	err      error
	since    time.Time
	lastLog  time.Time
	failures int
	// recoveryLogged: the recovery of the current episode was logged.
	recoveryLogged bool
}

func newStateFault(dir string, log zerolog.Logger, reg prometheus.Registerer) *stateFault {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "encwatch_state_write_errors_total",
		Help: "Failed writes of the state (full disk, read-only or failing volume); the sources wait and retry."})
	reg.MustRegister(c)
	return &stateFault{dir: dir, log: log, errors: c, logEvery: time.Minute}
}

// failed records a failed write.
func (f *stateFault) failed(err error) {
	f.errors.Inc()
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.err == nil {
		f.since = now
	}
	if f.lastLog.IsZero() {
		f.recoveryLogged = false
	}
	f.err = err
	f.failures++
	if f.lastLog.IsZero() || now.Sub(f.lastLog) >= f.logEvery {
		f.lastLog = now
		f.log.Error().Err(err).Str("state_dir", f.dir).Int("failures", f.failures).Time("since", f.since).
			Msg("the state cannot be written: sources wait and retry, nothing is dropped; free space on (or fix) the state volume and encwatch goes on by itself")
	}
}

// recovered records a write that succeeded after failures.
func (f *stateFault) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		return
	}
	// A nearly full volume flaps between failing and working writes: the
	// log is rate-limited across both messages, the metric counts all.
	if now := time.Now(); !f.recoveryLogged || now.Sub(f.lastLog) >= f.logEvery {
		f.lastLog, f.recoveryLogged = now, true
		f.log.Info().Str("state_dir", f.dir).Int("failures", f.failures).Dur("after", now.Sub(f.since).Round(time.Second)).
			Msg("the state is writable again; sources go on")
	}
	f.err, f.failures = nil, 0
}

// current returns the last write error while writes fail, else nil.
func (f *stateFault) current() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// retry runs write until it succeeds or ctx ends, backing off between
// tries; it reports each failure and the recovery.
func (f *stateFault) retry(ctx context.Context, write func() error) error {
	wait := backoff.Backoff{Min: 200 * time.Millisecond, Max: time.Minute}
	for {
		err := write()
		if err == nil {
			f.recovered()
			return nil
		}
		f.failed(err)
		if !backoff.Sleep(ctx, wait.Next()) {
			return err
		}
	}
}
