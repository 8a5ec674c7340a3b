package inventory

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// DefaultInterval is the time between the starts of two scans of an
// account and Region.
const DefaultInterval = 6 * time.Hour

// Source is the daemon's inventory: it scans every account and Region at
// start, then every Interval, and hands the reads on in batches through the
// pipeline like events. Each account's and Region's last complete scan is
// a checkpoint stored with the scan's last batch, so a scan cut short (a
// kill, a deploy) is done again at the next start, and one that finished is
// not repeated before its interval; a read the pipeline already stored
// judges to nothing new when it is read again.
type Source struct {
	Scanner     *Scanner
	Interval    time.Duration
	Checkpoints ingest.Checkpoints
	// BatchSize bounds the reads per batch (default 256).
	BatchSize int
	Logger    zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time

	mu      sync.Mutex
	failing map[string]string
}

// checkpoint is what the inventory stores per account and Region.
type checkpoint struct {
	LastComplete time.Time `json:"lastComplete"` // when the last complete scan began
}

// CheckpointKey is the checkpoint of an account and Region.
func CheckpointKey(account, region string) string { return "inventory/" + account + "/" + region }

// Failing returns the accounts and Regions whose last scan failed, with
// why, for /readyz.
func (s *Source) Failing() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, v := range s.failing {
		out = append(out, k+": "+v)
	}
	return out
}

func (s *Source) setFailing(k, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing == nil {
		s.failing = map[string]string{}
	}
	if why == "" {
		delete(s.failing, k)
	} else {
		s.failing[k] = why
	}
}

// Run implements ingest.Source: one loop per account and Region.
func (s *Source) Run(ctx context.Context, h ingest.Handler) error {
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(s.Scanner.Accounts())*len(s.Scanner.Regions()))
	for _, a := range s.Scanner.Accounts() {
		for _, region := range s.Scanner.Regions() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.loop(ctx, a, region, h); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (s *Source) loop(ctx context.Context, a *Account, region string, h ingest.Handler) error {
	key := CheckpointKey(a.ID, region)
	log := s.Logger.With().Str("account", a.ID).Str("region", region).Logger()
	retry := backoff.Backoff{Min: 30 * time.Second, Max: 10 * time.Minute}
	m := s.Scanner.o.Metrics
	m.interval.WithLabelValues(a.ID, region).Set(s.Interval.Seconds())
	for first := true; ; first = false {
		var cp checkpoint
		if raw, err := s.Checkpoints.Checkpoint(key); err != nil {
			return err
		} else if raw != nil {
			_ = json.Unmarshal(raw, &cp)
		}
		if first {
			since := cp.LastComplete
			if since.IsZero() {
				since = s.Now() // staleness counts from the start until a scan completes
			}
			m.last.WithLabelValues(a.ID, region).Set(float64(since.Unix()))
		}
		if wait := cp.LastComplete.Add(s.Interval).Sub(s.Now()); wait > 0 && !cp.LastComplete.IsZero() {
			if !backoff.Sleep(ctx, wait) {
				return nil
			}
		}
		batcher := &ingest.Batcher{Source: ingest.InventorySource, Size: s.BatchSize, Handle: h}
		if batcher.Size <= 0 {
			batcher.Size = 256
		}
		var started time.Time
		res := s.Scanner.ScanTarget(ctx, a, region, func(ev *ingest.Event) error {
			if ev.Inventory.Complete {
				started = ev.Inventory.Started
			}
			return batcher.Add(ctx, ev)
		})
		if ctx.Err() != nil {
			return nil
		}
		if ingest.IsHandlerError(res.Err) {
			return res.Err
		}
		var cps map[string][]byte
		if !started.IsZero() {
			raw, _ := json.Marshal(checkpoint{LastComplete: started})
			cps = map[string][]byte{key: raw}
		}
		if err := batcher.Flush(ctx, ingest.Stats{}, cps); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		ev := log.Info()
		if res.Err != nil {
			ev = log.Warn().Err(res.Err)
		}
		ev.Int("general_purpose", res.Listed[ingest.BucketGeneralPurpose]).Int("directory", res.Listed[ingest.BucketDirectory]).
			Int("read", res.Read).Int("unreadable", res.Failed).Dur("took", res.Ended.Sub(res.Started)).Msg("inventory scan finished")
		if res.Err == nil && res.Denied != "" {
			// The scan finished, but a permission it needs is gone: say so
			// until a scan works again (the next is in Interval).
			log.Warn().Str("denied", res.Denied).Msg("inventory scan could not read what it needs; check the reader role's permissions")
			s.setFailing(a.ID+"/"+region, res.Denied+" (scan ended "+res.Ended.UTC().Format(time.RFC3339)+")")
			retry.Reset()
			continue
		}
		if res.Err == nil {
			s.setFailing(a.ID+"/"+region, "")
			retry.Reset()
			continue
		}
		s.setFailing(a.ID+"/"+region, res.Err.Error()+" since "+res.Ended.UTC().Format(time.RFC3339))
		if started.IsZero() { // nothing listed: try again after a backoff
			if !backoff.Sleep(ctx, retry.Next()) {
				return nil
			}
		}
	}
}
