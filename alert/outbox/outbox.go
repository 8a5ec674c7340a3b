// Package outbox keeps alerts durable between the rules engine and the
// sinks. Findings are put in the outbox in the same bbolt transaction as the
// source checkpoint that produced them; a worker per sink sends the oldest
// alert and deletes it only once the sink accepted it, so a crash at any
// moment loses nothing and at worst sends an alert again, with the same id.
package outbox

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// The outbox's tables in the state: one sub-table per sink in each.
var (
	QueueTable      = []byte("outbox")
	DeadLetterTable = []byte("deadletter")
)

// Queue is one sink and the alerts it takes.
type Queue struct {
	Sink alert.Sink
	// Accept filters alerts for this sink (minimum severity, rules); nil
	// takes every alert.
	Accept func(alert.Alert) bool
	// Concurrency is how many alerts of a sink without SendBatch are sent
	// at once (default 1: in outbox order).
	Concurrency int
}

// Options configures an Outbox.
type Options struct {
	DB     *bolt.DB
	Queues []Queue
	// MaxPending bounds the alerts waiting per sink (default 100000). When a
	// queue is full, Wait blocks the pipeline, so sources stop advancing and
	// nothing is dropped.
	MaxPending int
	// MinBackoff and MaxBackoff bound the retry delay (default 500ms, 1m).
	MinBackoff, MaxBackoff time.Duration
	// SendTimeout bounds one Send (default 30s).
	SendTimeout time.Duration
	// BatchSize bounds the alerts read, sent and deleted together (default
	// 256): a burst moves in batches, each deleted in one transaction once
	// its sink acknowledged it.
	BatchSize int
	Logger    zerolog.Logger
	Metrics   *Metrics
	Now       func() time.Time
}

// Entry is an alert waiting in the outbox or in the dead letters.
type Entry struct {
	Seq      uint64          `json:"-"`
	Sink     string          `json:"-"`
	Alert    json.RawMessage `json:"alert"`
	Enqueued time.Time       `json:"enqueued"`
	Attempts int             `json:"attempts,omitempty"`
	Reason   string          `json:"reason,omitempty"` // why it was dead-lettered
	Failed   time.Time       `json:"failed,omitzero"`
}

// Outbox is the durable queue of alerts per sink.
type Outbox struct {
	o       Options
	mu      sync.Mutex
	depth   map[string]int
	wake    map[string]chan struct{}
	room    chan struct{}
	full    map[string]bool
	queues  map[string]Queue
	orphans []QueueInfo
}

// New opens the outbox's buckets in the database and counts what waits.
func New(o Options) (*Outbox, error) {
	if o.MaxPending <= 0 {
		o.MaxPending = 100000
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Minute
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.SendTimeout <= 0 {
		o.SendTimeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	ob := &Outbox{o: o, depth: map[string]int{}, wake: map[string]chan struct{}{}, room: make(chan struct{}), full: map[string]bool{}, queues: map[string]Queue{}}
	err := o.DB.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{QueueTable, DeadLetterTable} {
			root, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			for _, q := range o.Queues {
				if _, err := root.CreateBucketIfNotExists([]byte(q.Sink.Name())); err != nil {
					return err
				}
			}
		}
		for _, q := range o.Queues {
			n := q.Sink.Name()
			if _, dup := ob.queues[n]; dup {
				return fmt.Errorf("two sinks named %q", n)
			}
			ob.queues[n] = q
			ob.depth[n] = count(tx.Bucket(QueueTable).Bucket([]byte(n)))
			ob.wake[n] = make(chan struct{}, 1)
			o.Metrics.init(n)
			o.Metrics.depth.WithLabelValues(n).Set(float64(ob.depth[n]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	if err := ob.reportOrphans(); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	return ob, nil
}

// reportOrphans warns of every queue that holds alerts but belongs to no
// configured sink (a sink renamed or removed): nobody would send them, so
// they are named at each start and in encwatch_outbox_orphaned until
// `encwatch outbox move` or `drop` deals with them.
func (ob *Outbox) reportOrphans() error {
	qs, err := ListQueues(ob.o.DB)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if _, ok := ob.queues[q.Name]; ok || q.Pending == 0 {
			continue
		}
		ob.orphans = append(ob.orphans, q)
		ob.o.Metrics.orphaned.WithLabelValues(q.Name).Set(float64(q.Pending))
		ob.o.Logger.Warn().Str("queue", q.Name).Int("pending", q.Pending).Int("dead_letters", q.DeadLetters).
			Msg("outbox queue of a sink that is no longer configured: its alerts are not sent; " +
				"stop the daemon and run `encwatch outbox move --from " + q.Name + " --to SINK` (or `encwatch outbox drop --queue " + q.Name + "`)")
	}
	return nil
}

// Orphans returns the queues found at start that hold alerts and belong to
// no configured sink.
func (ob *Outbox) Orphans() []QueueInfo { return slices.Clone(ob.orphans) }

// Wait blocks while any sink's queue is full. It logs once when a queue
// fills, so that operators see why sources stopped advancing.
func (ob *Outbox) Wait(ctx context.Context) error {
	for {
		ob.mu.Lock()
		var fullSink string
		for n, d := range ob.depth {
			if d >= ob.o.MaxPending {
				fullSink = n
				if !ob.full[n] {
					ob.full[n] = true
					ob.o.Metrics.full.WithLabelValues(n).Set(1)
					ob.o.Logger.Warn().Str("sink", n).Int("pending", d).Msg("outbox full: sources wait until the sink takes alerts again")
				}
				break
			}
		}
		room := ob.room
		ob.mu.Unlock()
		if fullSink == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-room:
		}
	}
}

// Put adds an alert to the queue of every sink that accepts it, inside the
// caller's transaction. Call Notify after the transaction committed. It
// returns how many queues took the alert.
func (ob *Outbox) Put(tx *bolt.Tx, a alert.Alert) (int, error) {
	body, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	raw, err := encodeEntry(body, ob.o.Now().UTC())
	if err != nil {
		return 0, err
	}
	n := 0
	for name, q := range ob.queues {
		if q.Accept != nil && !q.Accept(a) {
			continue
		}
		b := tx.Bucket(QueueTable).Bucket([]byte(name))
		seq, err := b.NextSequence()
		if err != nil {
			return n, err
		}
		if err := b.Put(key(seq), raw); err != nil {
			return n, err
		}
		n++
		tx.OnCommit(func() { ob.added(name, 1) })
	}
	return n, nil
}

func (ob *Outbox) added(name string, n int) {
	ob.mu.Lock()
	ob.depth[name] += n
	d := ob.depth[name]
	ob.mu.Unlock()
	ob.o.Metrics.depth.WithLabelValues(name).Set(float64(d))
	select {
	case ob.wake[name] <- struct{}{}:
	default:
	}
}

func (ob *Outbox) removed(name string) {
	ob.mu.Lock()
	ob.depth[name]--
	d := ob.depth[name]
	if ob.full[name] && d < ob.o.MaxPending {
		ob.full[name] = false
		ob.o.Metrics.full.WithLabelValues(name).Set(0)
		ob.o.Logger.Info().Str("sink", name).Int("pending", d).Msg("outbox has room again")
	}
	close(ob.room)
	ob.room = make(chan struct{})
	ob.mu.Unlock()
	ob.o.Metrics.depth.WithLabelValues(name).Set(float64(d))
}

// Depth returns the alerts waiting for a sink.
func (ob *Outbox) Depth(sink string) int {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.depth[sink]
}

func key(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// Run delivers alerts to every sink until ctx ends, then goes on for up to
// drain to send what is waiting, and returns.
func (ob *Outbox) Run(ctx context.Context, drain time.Duration) error {
	var wg sync.WaitGroup
	for name := range ob.queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ob.deliver(ctx, name, drain)
		}()
	}
	wg.Wait()
	return nil
}

// deliver is the worker of one sink: the oldest alerts, up to BatchSize,
// are tried once (as one batch to a BatchSink, else Concurrency at a time,
// or in order one after another); those accepted are deleted and those
// rejected for good moved to the dead letters at once, and those that
// failed otherwise stay first in the queue for the next round, after a
// backoff with jitter (or the server's Retry-After). So a failing alert
// never holds back the deletion of the ones around it, and a kill loses at
// most one round's acknowledgements (sent again, same ids).
func (ob *Outbox) deliver(ctx context.Context, name string, drain time.Duration) {
	log := ob.o.Logger.With().Str("sink", name).Logger()
	work, stop := drainContext(ctx, drain)
	defer stop()
	wait := backoff.Backoff{Min: ob.o.MinBackoff, Max: ob.o.MaxBackoff}
	// next is the round after the one being sent, read and decoded
	// meanwhile (a burst drains round after round; reading and decoding
	// were two thirds of a round). It is used only when the round before
	// it left nothing to retry, which goes first.
	var next chan round
	defer func() {
		if next != nil {
			<-next
		}
	}()
	for work.Err() == nil {
		var r round
		if next != nil {
			r, next = <-next, nil
		} else {
			r = ob.readRound(name, 0)
		}
		es, err := r.es, r.err
		if err != nil {
			log.Error().Err(err).Msg("reading the outbox")
			backoff.Sleep(work, time.Second)
			continue
		}
		if len(es) == 0 {
			if ctx.Err() != nil {
				return // stopping and nothing left
			}
			ob.o.Metrics.oldest.WithLabelValues(name).Set(0)
			select {
			case <-ob.wake[name]:
			case <-ctx.Done():
			}
			continue
		}
		ob.o.Metrics.oldest.WithLabelValues(name).Set(ob.o.Now().Sub(es[0].Enqueued).Seconds())
		if len(es) == ob.o.BatchSize {
			next = make(chan round, 1)
			from := es[len(es)-1].Seq + 1
			go func() { next <- ob.readRound(name, from) }()
		}
		sent, failed, last := ob.sendBatch(work, name, r, log)
		if sent > 0 {
			wait.Reset() // progress: a failure now waits the shortest backoff
		}
		if failed == 0 || work.Err() != nil {
			continue
		}
		if next != nil {
			<-next // read again after the backoff, from the oldest
			next = nil
		}
		d := wait.Next()
		if ra, ok := alert.RetryAfterOf(last); ok && ra > d {
			d = min(ra, ob.o.MaxBackoff)
		}
		ob.o.Metrics.retries.WithLabelValues(name).Add(float64(failed))
		log.Warn().Err(last).Int("alerts", failed).Dur("retry_in", d).Msg("sink did not take alerts; retrying them")
		backoff.Sleep(work, d)
	}
	if n := ob.Depth(name); n > 0 {
		log.Warn().Int("pending", n).Msg("stopping with alerts still in the outbox; they are sent after the restart")
	}
}

// errNotTried marks the alerts of an ordered sink after one that failed:
// they wait for it.
var errNotTried = errors.New("not tried: an earlier alert failed")

// sendBatch tries entries once and records what became of each; it
// returns how many were sent, how many failed in a way a retry may fix,
// and the last such error.
func (ob *Outbox) sendBatch(ctx context.Context, name string, r round, log zerolog.Logger) (int, int, error) {
	es := r.es
	ds := make([]alert.Delivery, 0, len(es))
	sendable := make([]Entry, 0, len(es))
	for i, e := range es {
		if r.errs[i] != nil {
			ob.deadLetter(ctx, e, fmt.Sprintf("stored alert unreadable: %v", r.errs[i]), log)
			continue
		}
		ds = append(ds, alert.Delivery{Alert: r.alerts[i], Body: e.Alert})
		sendable = append(sendable, e)
	}
	results := ob.send(ctx, name, ds)
	var sent []Entry
	failed := 0
	var last error
	for i, err := range results {
		e := sendable[i]
		switch {
		case err == nil:
			sent = append(sent, e)
		case alert.IsPermanent(err):
			e.Attempts++
			ob.deadLetter(ctx, e, err.Error(), log)
		case errors.Is(err, errNotTried):
		default:
			failed, last = failed+1, err
		}
	}
	if len(sent) > 0 {
		ob.deleteSent(ctx, name, sent, log)
		now := ob.o.Now()
		ob.o.Metrics.sent.WithLabelValues(name).Add(float64(len(sent)))
		for _, e := range sent {
			ob.o.Metrics.latency.WithLabelValues(name).Observe(now.Sub(e.Enqueued).Seconds())
		}
	}
	if ctx.Err() != nil {
		return len(sent), 0, nil // stopping: what was not sent waits for the restart
	}
	return len(sent), failed, last
}

// send tries each delivery once, each try bounded by SendTimeout: one
// batch to a BatchSink; else Concurrency at a time; else in order,
// stopping at the first that fails for now. It returns one result per
// delivery.
func (ob *Outbox) send(ctx context.Context, name string, ds []alert.Delivery) []error {
	q := ob.queues[name]
	sink := instrumented{next: q.Sink, m: ob.o.Metrics}
	try := func(d alert.Delivery) error {
		tctx, cancel := context.WithTimeout(ctx, ob.o.SendTimeout)
		defer cancel()
		return sink.Send(tctx, d)
	}
	results := make([]error, len(ds))
	if bs, ok := q.Sink.(alert.BatchSink); ok && len(ds) > 1 {
		tctx, cancel := context.WithTimeout(ctx, ob.o.SendTimeout)
		defer cancel()
		errs := bs.SendBatch(tctx, ds)
		for i := range results {
			if errs != nil {
				results[i] = errs[i]
			}
			sink.count(tctx, results[i])
		}
		return results
	}
	conc := max(q.Concurrency, 1)
	if conc == 1 {
		for i, d := range ds {
			results[i] = try(d)
			if results[i] != nil && !alert.IsPermanent(results[i]) {
				for j := i + 1; j < len(ds); j++ {
					results[j] = errNotTried
				}
				break
			}
		}
		return results
	}
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, d := range ds {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = try(d)
		}()
	}
	wg.Wait()
	return results
}

// drainContext returns a context that ends drain after ctx does, so a
// stopping worker keeps delivering for a while; stop releases it.
func drainContext(ctx context.Context, drain time.Duration) (context.Context, func()) {
	work, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-ctx.Done():
		case <-work.Done():
			return
		}
		t := time.NewTimer(drain)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-work.Done(): // the worker finished first
		}
	}()
	return work, cancel
}

// round is one batch of a queue as read and decoded: the entries, their
// alerts, and for each the error that makes it unreadable.
type round struct {
	es     []Entry
	alerts []alert.Alert
	errs   []error
	err    error // reading the queue failed
}

// readRound reads up to BatchSize of the oldest entries of a queue from
// the sequence number from on, and decodes their alerts.
func (ob *Outbox) readRound(name string, from uint64) round {
	es, err := ob.oldestN(name, from, ob.o.BatchSize)
	r := round{es: es, err: err, alerts: make([]alert.Alert, len(es)), errs: make([]error, len(es))}
	for i := range es {
		r.errs[i] = json.Unmarshal(es[i].Alert, &r.alerts[i])
	}
	return r
}

// oldestN reads up to n of the oldest entries of a queue whose sequence
// number is at least from.
func (ob *Outbox) oldestN(name string, from uint64, n int) ([]Entry, error) {
	var out []Entry
	err := ob.o.DB.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(QueueTable).Bucket([]byte(name)).Cursor()
		for k, v := c.Seek(key(from)); k != nil && len(out) < n; k, v = c.Next() {
			e := Entry{Seq: binary.BigEndian.Uint64(k), Sink: name}
			if err := decodeEntry(v, &e); err != nil {
				e.Alert = append(json.RawMessage(nil), v...) // dead-lettered as unreadable
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

func (ob *Outbox) delete(name string, es []Entry) error {
	err := ob.o.DB.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(QueueTable).Bucket([]byte(name))
		for _, e := range es {
			if err := b.Delete(key(e.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for range es {
			ob.removed(name)
		}
	}
	return err
}

// An entry waiting in a queue is stored as json.Marshal writes
// Entry{Alert, Enqueued}: {"alert":BODY,"enqueued":"TIME"}. encodeEntry
// and decodeEntry write and read that layout directly: encoding/json
// scanned each alert twice more on the way in (a RawMessage is compacted)
// and twice on the way out (validated, then copied), a third of a
// round's reading in a burst. The alert itself is still decoded by
// encoding/json, which rejects a body that is not JSON.
const entryHead, entryTime = `{"alert":`, `,"enqueued":`

// encodeEntry returns json.Marshal(Entry{Alert: body, Enqueued: t}) for a
// body that json.Marshal wrote (compact, HTML escaped).
func encodeEntry(body []byte, t time.Time) ([]byte, error) {
	ts, err := t.MarshalJSON()
	if err != nil {
		return nil, err
	}
	raw := make([]byte, 0, len(entryHead)+len(body)+len(entryTime)+len(ts)+1)
	raw = append(raw, entryHead...)
	raw = append(raw, body...)
	raw = append(raw, entryTime...)
	raw = append(raw, ts...)
	return append(raw, '}'), nil
}

// decodeEntry reads an entry into e: the layout encodeEntry writes
// directly, anything else (dead letters, attempts, entries of other
// versions) with encoding/json.
func decodeEntry(v []byte, e *Entry) error {
	if bytes.HasPrefix(v, []byte(entryHead)) && bytes.HasSuffix(v, []byte(`"}`)) {
		// The time, the last value, holds no quote: the last entryTime is
		// the one after the body.
		if i := bytes.LastIndex(v, []byte(entryTime)); i > len(entryHead) {
			var t time.Time
			if ts := v[i+len(entryTime) : len(v)-1]; len(ts) > 2 && ts[0] == '"' && bytes.IndexByte(ts[1:len(ts)-1], '"') < 0 &&
				t.UnmarshalJSON(ts) == nil {
				e.Alert = append(json.RawMessage(nil), v[len(entryHead):i]...)
				e.Enqueued = t
				return nil
			}
		}
	}
	return json.Unmarshal(v, e)
}
