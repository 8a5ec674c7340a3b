// Package lookup tails CloudTrail's LookupEvents API for the three
// encryption events, in every configured account and Region at once.
//
// LookupEvents shows events late (minutes, up to about 15) and not in
// eventTime order, so each poll re-reads an overlap window behind the
// checkpoint and skips the event IDs it has already handed on; the IDs are
// kept for the window only. Calls stay under the API's limit of 2 per
// second per account and Region, including retries, which back off with
// jitter on throttling and server errors.
package lookup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail/types"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/awserr"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// changeNames are looked up one per call: LookupEvents takes one attribute,
// and by event name it returns exactly the events we need on both S3 and S3
// Express, where by event source it would return every S3 call. A poll of
// the changes costs at least len(changeNames) calls.
//
// GetBucketEncryption (readNames) is polled on its own, at a lower
// priority: AWS Config, Macie and Security Hub read every bucket's
// encryption every day, so a window may hold thousands of Gets, and paging
// them must never delay a Put, a Delete or a KMS event.
var (
	changeNames = []string{ingest.PutBucketEncryption, ingest.DeleteBucketEncryption,
		ingest.ScheduleKeyDeletion, ingest.DisableKey, ingest.DeleteKey}
	readNames  = []string{ingest.GetBucketEncryption}
	eventNames = append(append([]string(nil), changeNames...), readNames...)
)

// maxLookback is how far back LookupEvents keeps events.
const maxLookback = 90 * 24 * time.Hour

// API is the part of the CloudTrail client the tailer uses.
type API interface {
	LookupEvents(ctx context.Context, in *cloudtrail.LookupEventsInput, opts ...func(*cloudtrail.Options)) (*cloudtrail.LookupEventsOutput, error)
}

// Target is one account and Region to poll.
type Target struct {
	// Account labels the account in checkpoints and logs: its ID for an
	// assumed role, "default" for the task's own credentials.
	Account string
	Region  string
	Client  API
	// Credentials, for an assumed role, is the cache its calls sign with:
	// dropped when a call says the session expired or was revoked, so the
	// next poll assumes the role again instead of waiting out the cached
	// credentials' expiry.
	Credentials *aws.CredentialsCache
}

// Defaults of the options, which the configuration's defaults are too.
const (
	DefaultInterval  = 30 * time.Second
	DefaultOverlap   = 20 * time.Minute
	DefaultStartFrom = 24 * time.Hour
)

// Options configures a Source.
type Options struct {
	Targets   []Target
	Interval  time.Duration // between polls (default 30s)
	Overlap   time.Duration // re-read window behind the checkpoint (default 20m)
	StartFrom time.Duration // how far back on a first start (default 24h)
	// Rate is the calls per second allowed per target (default 1.8, under
	// the API's 2).
	Rate float64
	// MinBackoff and MaxBackoff bound the retry delay (default 1s, 30s).
	MinBackoff, MaxBackoff time.Duration
	Checkpoints            ingest.Checkpoints
	// Limits bound each CloudTrailEvent as they bound a record of a file
	// (record size, nesting, invalid UTF-8): LookupEvents returns what
	// the caller of the API wrote.
	Limits ingest.Limits
	// Reads polls GetBucketEncryption too (for encryption-read-burst); off,
	// Gets are never paged.
	Reads bool
	// OnError receives each CloudTrailEvent that could not be read.
	OnError func(pos ingest.Position, err error)
	Logger  zerolog.Logger
	Metrics *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Source tails LookupEvents. Run it once.
type Source struct {
	o Options

	mu      sync.Mutex
	failing map[string]string // "account/region" -> why its polls fail
}

// Failing returns the targets whose polls fail, as "account/region: reason
// since TIME", sorted; nil when every target works.
func (s *Source) Failing() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, why := range s.failing {
		out = append(out, k+": "+why)
	}
	slices.Sort(out)
	return out
}

func (s *Source) setFailing(t Target, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing == nil {
		s.failing = map[string]string{}
	}
	k := t.Account + "/" + t.Region
	if why == "" {
		delete(s.failing, k)
	} else if _, ok := s.failing[k]; !ok {
		s.failing[k] = why
	}
}

// New checks the options and returns a Source.
func New(o Options) (*Source, error) {
	if len(o.Targets) == 0 {
		return nil, errors.New("lookup: no account and Region to poll")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Interval, DefaultInterval)
	def(&o.Overlap, DefaultOverlap)
	def(&o.StartFrom, DefaultStartFrom)
	def(&o.MinBackoff, time.Second)
	def(&o.MaxBackoff, 30*time.Second)
	if o.Rate <= 0 {
		o.Rate = 1.8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	return &Source{o: o}, nil
}

// Run polls every target until ctx ends; it returns nil then. It returns an
// error only when handle fails for a reason other than ctx.
func (s *Source) Run(ctx context.Context, handle ingest.Handler) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range s.o.Targets {
		s.o.Metrics.init(t.Region)
		// The limiter starts empty: the first call waits one interval, so a
		// quick restart cannot put a call right after the last one of the
		// previous process.
		lim := rate.NewLimiter(rate.Limit(s.o.Rate), 1)
		lim.Allow()
		shared := &prioLimiter{lim: lim}
		log := s.o.Logger.With().Str("account", t.Account).Str("region", t.Region).Logger()
		p := &poller{o: &s.o, src: s, t: t, handle: handle, limiter: shared, names: changeNames, key: Key(t.Account, t.Region), log: log}
		g.Go(func() error { return p.run(ctx) })
		if s.o.Reads {
			r := &poller{o: &s.o, src: s, t: t, handle: handle, limiter: shared, names: readNames, key: Key(t.Account, t.Region) + "/reads", low: true,
				log: log.With().Str("stream", "reads").Logger()}
			g.Go(func() error { return r.run(ctx) })
		}
	}
	err := g.Wait()
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

// Key returns the checkpoint key of a target.
func Key(account, region string) string { return "lookup/" + account + "/" + region }

// checkpoint is what a poller stores: the time up to which every visible
// event was handed on, and the IDs handed on within the overlap window.
type checkpoint struct {
	Until time.Time        `json:"until"`
	Seen  map[string]int64 `json:"seen"` // event ID -> eventTime (Unix seconds)
}

type poller struct {
	o       *Options
	src     *Source
	t       Target
	handle  ingest.Handler
	limiter *prioLimiter
	names   []string // the event names this stream looks up
	key     string   // its checkpoint
	low     bool     // calls give way to the other stream's
	behind  bool     // the clock is behind the checkpoint (logged once)
	log     zerolog.Logger
	cp      checkpoint
}

// prioLimiter is a target's call budget, shared by its two streams: a
// low-priority call waits while a high-priority one is waiting, so a
// change is delayed by at most the one read call in progress.
type prioLimiter struct {
	lim  *rate.Limiter
	high atomic.Int32
}

func (l *prioLimiter) Wait(ctx context.Context, low bool) error {
	if !low {
		l.high.Add(1)
		defer l.high.Add(-1)
		return l.lim.Wait(ctx)
	}
	for l.high.Load() > 0 {
		if !backoff.Sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	return l.lim.Wait(ctx)
}

// maxPollBackoff bounds how long a target whose polls keep failing (its
// permissions taken away, its role expired or revoked) waits between polls.
const maxPollBackoff = 10 * time.Minute

func (p *poller) run(ctx context.Context) error {
	if err := p.load(); err != nil {
		return err
	}
	p.o.Metrics.failing.WithLabelValues(p.t.Account, p.t.Region).Set(0)
	failures, logged := 0, time.Duration(0)
	for {
		err := p.poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := p.o.Interval
		switch {
		case err != nil && ingest.IsHandlerError(err):
			return err
		case err != nil:
			failures++
			reason := reasonOf(err)
			p.o.Metrics.pollFailures.WithLabelValues(p.t.Account, p.t.Region, reason).Inc()
			p.o.Metrics.failing.WithLabelValues(p.t.Account, p.t.Region).Set(1)
			p.src.setFailing(p.t, reason+" since "+p.o.Now().UTC().Format(time.RFC3339))
			if awserr.SessionExpired(err) && p.t.Credentials != nil {
				p.t.Credentials.Invalidate()
				p.log.Warn().Str("reason", reason).Msg("the role's session was rejected (expired or revoked); assuming the role again at the next poll")
			}
			if classify(err) == "permanent" {
				// Retrying at once cannot help; the other targets go on.
				wait = min(p.o.Interval<<min(failures-1, 20), maxPollBackoff)
			}
			if wait > logged {
				logged = wait // once, then each time the wait grows, then every maxPollBackoff
				p.log.Warn().Err(err).Str("reason", reason).Int("failures", failures).Dur("next_poll_in", wait).
					Msg("lookup poll failed; this account and Region wait, the others go on (check the role's cloudtrail:LookupEvents and sts:AssumeRole)")
			} else if wait == maxPollBackoff {
				p.log.Warn().Err(err).Str("reason", reason).Int("failures", failures).Msg("lookup polls still failing")
			}
		case failures > 0:
			p.log.Info().Int("failures", failures).Msg("lookup polls work again")
			p.o.Metrics.failing.WithLabelValues(p.t.Account, p.t.Region).Set(0)
			p.src.setFailing(p.t, "")
			failures, logged = 0, 0
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (p *poller) load() error {
	p.cp = checkpoint{Seen: map[string]int64{}}
	if p.o.Checkpoints == nil {
		return nil
	}
	raw, err := p.o.Checkpoints.Checkpoint(p.key)
	if err != nil {
		return fmt.Errorf("lookup %s/%s: reading checkpoint: %w", p.t.Account, p.t.Region, err)
	}
	if raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, &p.cp); err != nil {
		p.log.Warn().Err(err).Msg("checkpoint unreadable; starting from startFrom")
		p.cp = checkpoint{}
	}
	if p.cp.Seen == nil {
		p.cp.Seen = map[string]int64{}
	}
	p.log.Info().Time("until", p.cp.Until).Int("seen", len(p.cp.Seen)).Msg("resuming from checkpoint")
	return nil
}

// poll reads [until-overlap, now] for each event name, hands on the events
// not seen before page by page, then moves the checkpoint to now.
func (p *poller) poll(ctx context.Context) error {
	now := p.o.Now().UTC()
	if now.Before(p.cp.Until) {
		// The clock went back behind the checkpoint: nothing is skipped by
		// waiting until it passes the checkpoint again, and a window that
		// ends before it begins would only fail.
		if !p.behind {
			p.behind = true
			p.log.Warn().Time("clock", now).Time("checkpoint", p.cp.Until).Msg("the clock is behind the lookup checkpoint; polls wait until it passes it")
		}
		return nil
	}
	if p.behind {
		p.behind = false
		p.log.Info().Msg("the clock passed the lookup checkpoint again; polling")
	}
	start := now.Add(-p.o.StartFrom)
	if !p.cp.Until.IsZero() {
		start = p.cp.Until.Add(-p.o.Overlap)
	}
	if oldest := now.Add(-maxLookback + time.Minute); start.Before(oldest) {
		start = oldest
	}
	for _, name := range p.names {
		in := &cloudtrail.LookupEventsInput{
			LookupAttributes: []types.LookupAttribute{{AttributeKey: types.LookupAttributeKeyEventName, AttributeValue: aws.String(name)}},
			StartTime:        aws.Time(start), EndTime: aws.Time(now), MaxResults: aws.Int32(50),
		}
		for {
			out, err := p.call(ctx, in)
			if err != nil {
				return err
			}
			if err := p.page(ctx, out.Events); err != nil {
				return err
			}
			if out.NextToken == nil || *out.NextToken == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	p.cp.Until = now
	cutoff := now.Add(-p.o.Overlap).Unix()
	for id, t := range p.cp.Seen {
		if t < cutoff {
			delete(p.cp.Seen, id)
		}
	}
	if err := p.commit(ctx, nil); err != nil {
		return err
	}
	if !p.low {
		p.o.Metrics.checkpoint.WithLabelValues(p.t.Region).Set(float64(now.Unix()))
	}
	return nil
}

// page hands on the new events of one page with the checkpoint that
// includes them.
func (p *poller) page(ctx context.Context, events []types.Event) error {
	var batch []*ingest.Event
	for _, e := range events {
		id := aws.ToString(e.EventId)
		if _, seen := p.cp.Seen[id]; seen {
			continue
		}
		origin := "lookup/" + p.t.Account + "/" + p.t.Region + "/" + id
		ev, err := p.decode(origin, aws.ToString(e.CloudTrailEvent))
		t := aws.ToTime(e.EventTime)
		if ev != nil && !ev.Time.IsZero() {
			t = ev.Time
		}
		p.cp.Seen[id] = t.Unix()
		if err != nil {
			p.o.Metrics.decodeErrors.WithLabelValues(p.t.Region).Inc()
			if p.o.OnError != nil {
				p.o.OnError(ingest.Position{Source: origin}, err)
			} else {
				p.log.Error().Err(err).Str("event_id", id).Str("where", origin).Msg("CloudTrailEvent unreadable; skipped")
			}
			continue
		}
		if ev != nil && (ev.IsEncryptionEvent() || ev.IsKMSEvent()) {
			batch = append(batch, ev)
			p.o.Metrics.events.WithLabelValues(p.t.Region, ev.Name).Inc()
		}
	}
	if len(batch) == 0 {
		return nil
	}
	ingest.SortByTime(batch)
	return p.commit(ctx, batch)
}

// decode reads one CloudTrailEvent through the same decoder, and so the
// same limits, as a record of a trail file. It returns nil, nil for a
// record that is not an encryption event.
func (p *poller) decode(origin, raw string) (*ingest.Event, error) {
	var ev *ingest.Event
	var bad error
	dec := ingest.Decoder{Source: origin, Limits: p.o.Limits,
		OnEvent: func(e *ingest.Event) error { ev = e; return nil },
		OnError: func(_ ingest.Position, err error) {
			if bad == nil {
				bad = err
			}
		}}
	if _, err := dec.Decode(strings.NewReader(raw)); err != nil && bad == nil {
		bad = err
	}
	if ev != nil {
		ev.Origin = ingest.Position{Source: origin}
		return ev, nil
	}
	return nil, bad
}

func (p *poller) commit(ctx context.Context, events []*ingest.Event) error {
	raw, err := json.Marshal(p.cp)
	if err != nil {
		return err
	}
	b := ingest.Batch{Source: "lookup", Events: events, Checkpoints: map[string][]byte{p.key: raw}}
	if err := p.handle(ctx, b); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &ingest.HandlerError{Err: err}
	}
	return nil
}
