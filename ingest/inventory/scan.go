// Package inventory reads the current default encryption of every general
// purpose and directory bucket of the configured accounts and Regions
// (ListBuckets, ListDirectoryBuckets, GetBucketEncryption and
// kms:DescribeKey once per distinct key), and hands each bucket's
// configuration on as an event with basis "inventory" (see
// ingest.InventoryRead), which the rules judge as a configuration rather
// than as an act. The scan stays under a rate per account, S3 and KMS
// calls together, backs off on SlowDown, throttling and server errors, and
// never stops for one bucket, Region or account it cannot read.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/awserr"
	"github.com/encwatch/encwatch/ingest/backoff"
)

// Defaults of the options, which the configuration's defaults are too.
const (
	DefaultRate     = 20
	DefaultPageSize = 1000
	DefaultAttempts = 8
	// maxRules bounds the rules of one configuration that are judged (S3
	// allows one; a hostile or broken answer may hold more).
	maxRules = 16
	// maxField bounds a key or algorithm as read.
	maxField = 2048
)

// Options configures a Scanner.
type Options struct {
	Accounts []*Account
	Regions  []string
	// Rate is the S3 and KMS calls per second per account, at most,
	// retries included, over all its Regions (default 20).
	Rate float64
	// PageSize is the buckets asked for per List call (default 1000).
	PageSize int32
	// MinBackoff and MaxBackoff bound the retry delay (default 1s, 30s);
	// Attempts bounds the tries of one call (default 8).
	MinBackoff, MaxBackoff time.Duration
	Attempts               int
	Metrics                *Metrics
	Logger                 zerolog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Scanner scans accounts and Regions. It is safe for concurrent use; each
// account has one rate limiter, whichever scans use it.
type Scanner struct {
	o        Options
	limiters map[string]*rate.Limiter
	progress map[string]*Progress
	creds    map[string]*aws.CredentialsCache // by account; nil for own credentials
}

// Progress counts what a scan of one account did so far.
type Progress struct {
	Listed, Read, Failed atomic.Int64
}

// New returns a Scanner.
func New(o Options) *Scanner {
	if o.Rate <= 0 {
		o.Rate = DefaultRate
	}
	if o.PageSize <= 0 {
		o.PageSize = DefaultPageSize
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Scanner{o: o, limiters: map[string]*rate.Limiter{}, progress: map[string]*Progress{}, creds: map[string]*aws.CredentialsCache{}}
	for _, a := range o.Accounts {
		s.creds[a.ID] = a.Credentials
		// Burst 1 and no tokens at start: never more than Rate calls in
		// any second, also right after a restart.
		// The limiter runs at 95% of Rate, so that network jitter (two
		// calls that leave apart and arrive close) cannot push AWS's count
		// for a second over it.
		l := rate.NewLimiter(rate.Limit(o.Rate*0.95), 1)
		l.AllowN(time.Now(), 1)
		s.limiters[a.ID] = l
		s.progress[a.ID] = &Progress{}
	}
	return s
}

// Progress returns the counters of an account's scans.
func (s *Scanner) Progress(account string) *Progress { return s.progress[account] }

// Accounts returns the accounts scanned.
func (s *Scanner) Accounts() []*Account { return s.o.Accounts }

// Regions returns the Regions scanned.
func (s *Scanner) Regions() []string { return s.o.Regions }

// Result is what the scan of one account and Region did.
type Result struct {
	Account, Region string
	Started, Ended  time.Time
	Listed          map[string]int // buckets listed, by type
	Read, Failed    int            // configurations read, buckets that could not be read
	// Keys and KeysFailed count the distinct keys described and those
	// DescribeKey refused.
	Keys, KeysFailed int
	// Denied, when set, says that a permission the scan needs is gone:
	// every configuration read, or every DescribeKey, failed for good.
	Denied string
	// Err is set when a listing failed (the other type's may have
	// finished: the completion marker names only the listings that did).
	Err error
}

// Emit receives the events of one account's and Region's scan, one at a
// time: a bucket's configuration or, last, the completion marker. An error
// stops that scan.
type Emit func(ev *ingest.Event) error

// Scan scans every account and Region at once. emit is called from several
// goroutines (one per account and Region); the results are in the order of
// Accounts × Regions.
func (s *Scanner) Scan(ctx context.Context, emit Emit) []Result {
	res := make([]Result, len(s.o.Accounts)*len(s.o.Regions))
	var wg sync.WaitGroup
	for i, a := range s.o.Accounts {
		for j, region := range s.o.Regions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i*len(s.o.Regions)+j] = s.ScanTarget(ctx, a, region, emit)
			}()
		}
	}
	wg.Wait()
	return res
}

// listed is one bucket a listing found.
type listed struct{ name, region string }

// ScanTarget scans one account and Region: lists both bucket types, reads
// every configuration, resolves each distinct key once, and emits one
// event per bucket, then the completion marker.
func (s *Scanner) ScanTarget(ctx context.Context, a *Account, region string, emit Emit) Result {
	res := Result{Account: a.ID, Region: region, Started: s.o.Now(), Listed: map[string]int{}}
	log := s.o.Logger.With().Str("account", a.ID).Str("region", region).Logger()
	t := &target{s: s, a: a, region: region, keys: map[string]*keyEntry{}}
	names := make(chan listed, 2*int(s.o.PageSize))
	events := make(chan *ingest.Event, 64)
	workers := max(2, min(16, int(s.o.Rate/10)+1))
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	var listedTypes []string
	var listErrs []error
	g.Go(func() error {
		defer close(names)
		for _, typ := range []string{ingest.BucketGeneralPurpose, ingest.BucketDirectory} {
			n, err := t.list(gctx, typ, names)
			res.Listed[typ] = n
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				s.countError(a.ID, region, err)
				log.Warn().Err(err).Str("type", typ).Msg("listing buckets failed; the scan goes on with what it can read")
				listErrs = append(listErrs, fmt.Errorf("listing %s buckets: %w", typ, err))
				continue
			}
			listedTypes = append(listedTypes, typ)
		}
		return nil
	})
	var readers sync.WaitGroup
	for range workers {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			for b := range names {
				ev, err := t.read(gctx, b)
				if err != nil {
					return err
				}
				if ev == nil {
					continue
				}
				select {
				case events <- ev:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { readers.Wait(); close(events) }()
	var emitErr error
	readReasons := map[string]int{}
	for ev := range events {
		if ev.Inventory.ErrorCode != "" {
			res.Failed++
			readReasons[ev.Inventory.ErrorCode]++
		} else {
			res.Read++
		}
		if emitErr == nil {
			if emitErr = emit(ev); emitErr != nil {
				stop() // no use reading what cannot be handed on
			}
		}
	}
	err := g.Wait()
	res.Ended = s.o.Now()
	switch {
	case emitErr != nil:
		res.Err = emitErr
	case err != nil:
		res.Err = err
	default:
		res.Err = errors.Join(listErrs...)
		if len(listedTypes) > 0 {
			done := ingest.NewScanComplete(a.ID, region, listedTypes, res.Started, res.Ended)
			if err := emit(done); err != nil {
				res.Err = err
			}
		}
	}
	keyReasons := map[string]int{}
	for _, e := range t.keys {
		res.Keys++
		if e.info.Error != "" {
			res.KeysFailed++
			keyReasons[e.info.Error]++
		}
	}
	res.Denied = denied(res, readReasons, keyReasons)
	if res.Err == nil {
		s.o.Metrics.duration.WithLabelValues(a.ID, region).Set(res.Ended.Sub(res.Started).Seconds())
		s.o.Metrics.last.WithLabelValues(a.ID, region).Set(float64(res.Started.Unix()))
	}
	return res
}

// denied names a permission the scan lost: every configuration read (or
// every DescribeKey) failed, mostly for a permission error. One
// bucket whose policy denies the reader is normal and not this.
func denied(res Result, reads, keys map[string]int) string {
	var out []string
	top := func(m map[string]int) string {
		best := ""
		for r, n := range m {
			if best == "" || n > m[best] || n == m[best] && r < best {
				best = r
			}
		}
		return best
	}
	if r := top(reads); res.Read == 0 && res.Failed > 0 && awserr.PermissionCode(r) {
		out = append(out, fmt.Sprintf("s3:GetEncryptionConfiguration refused for all %d buckets (%s)", res.Failed, r))
	}
	if r := top(keys); res.Keys > 0 && res.KeysFailed == res.Keys && awserr.PermissionCode(r) {
		out = append(out, fmt.Sprintf("kms:DescribeKey refused for all %d keys (%s)", res.Keys, r))
	}
	return strings.Join(out, "; ")
}

// target is the scan of one account and Region.
type target struct {
	s      *Scanner
	a      *Account
	region string
	mu     sync.Mutex
	keys   map[string]*keyEntry
}

type keyEntry struct {
	once sync.Once
	info ingest.KeyInfo
}

// list pages through one bucket type's listing and sends each bucket on.
func (t *target) list(ctx context.Context, typ string, out chan<- listed) (int, error) {
	n := 0
	var token *string
	c := t.a.S3(t.region)
	for {
		var page []listed
		var next *string
		if typ == ingest.BucketGeneralPurpose {
			var o *s3.ListBucketsOutput
			err := t.s.call(ctx, t.a.ID, "ListBuckets", func() (err error) {
				o, err = c.ListBuckets(ctx, &s3.ListBucketsInput{BucketRegion: aws.String(t.region), MaxBuckets: aws.Int32(t.s.o.PageSize), ContinuationToken: token})
				return err
			})
			if err != nil {
				return n, err
			}
			for _, b := range o.Buckets {
				page = append(page, listed{aws.ToString(b.Name), aws.ToString(b.BucketRegion)})
			}
			next = o.ContinuationToken
		} else {
			var o *s3.ListDirectoryBucketsOutput
			err := t.s.call(ctx, t.a.ID, "ListDirectoryBuckets", func() (err error) {
				o, err = c.ListDirectoryBuckets(ctx, &s3.ListDirectoryBucketsInput{MaxDirectoryBuckets: aws.Int32(t.s.o.PageSize), ContinuationToken: token})
				return err
			})
			if err != nil {
				return n, err
			}
			for _, b := range o.Buckets {
				page = append(page, listed{aws.ToString(b.Name), aws.ToString(b.BucketRegion)})
			}
			next = o.ContinuationToken
		}
		for _, b := range page {
			if b.name == "" || len(b.name) > 255 {
				continue // no bucket has such a name; a broken answer
			}
			if b.region == "" {
				b.region = t.region
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return n, ctx.Err()
			}
			n++
			t.s.progress[t.a.ID].Listed.Add(1)
		}
		if next == nil || *next == "" || (token != nil && *next == *token) {
			return n, nil
		}
		token = next
	}
}

// read reads one bucket's configuration and the key it names. A bucket
// that cannot be read gives an event with the error; one that went away
// since the listing gives none.
func (t *target) read(ctx context.Context, l listed) (*ingest.Event, error) {
	b := ingest.NewBucket(l.name, t.a.ID, l.region)
	c := t.a.S3(t.region)
	var out *s3.GetBucketEncryptionOutput
	err := t.s.call(ctx, t.a.ID, "GetBucketEncryption", func() (err error) {
		out, err = c.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: aws.String(l.name)})
		return err
	})
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	at := t.s.o.Now()
	where := ingest.InventoryOrigin(t.a.ID, t.region)
	prog := t.s.progress[t.a.ID]
	var enc ingest.Encryption
	switch code := awserr.Code(err); {
	case err == nil:
		enc = encryptionOf(out)
	case code == "ServerSideEncryptionConfigurationNotFoundError":
		// No configuration: S3 encrypts new objects with SSE-S3, as
		// after DeleteBucketEncryption.
		enc = ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "AES256"}}}
	case code == "NoSuchBucket":
		return nil, nil // deleted since the listing; the next scan drops it
	default:
		t.s.countError(t.a.ID, t.region, err)
		prog.Failed.Add(1)
		return ingest.NewInventoryError(b, awserr.Reason(err), bound(err.Error(), 512), at, where), nil
	}
	t.s.o.Metrics.read.WithLabelValues(t.a.ID, t.region, b.Type).Inc()
	prog.Read.Add(1)
	var key ingest.KeyInfo
	for _, r := range enc.Rules {
		if r.KMSKeyID != "" {
			key = t.describe(ctx, r.KMSKeyID)
			break
		}
	}
	return ingest.NewInventoryRead(b, enc, key, at, where), nil
}

// describe resolves a key as the configuration names it, once per scan of
// the account and Region. A key ARN is asked of its own Region.
func (t *target) describe(ctx context.Context, key string) ingest.KeyInfo {
	t.mu.Lock()
	e, ok := t.keys[key]
	if !ok {
		e = &keyEntry{}
		t.keys[key] = e
	}
	t.mu.Unlock()
	e.once.Do(func() {
		region := t.region
		if r := keyRegion(key); r != "" {
			region = r
		}
		var out *kms.DescribeKeyOutput
		err := t.s.call(ctx, t.a.ID, "DescribeKey", func() (err error) {
			out, err = t.a.KMS(region).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
			return err
		})
		if err != nil {
			t.s.countError(t.a.ID, t.region, err)
			e.info.Error = awserr.Reason(err)
			return
		}
		if m := out.KeyMetadata; m != nil {
			e.info = ingest.KeyInfo{ARN: bound(aws.ToString(m.Arn), maxField), Manager: string(m.KeyManager), State: string(m.KeyState)}
		}
	})
	return e.info
}

func keyRegion(key string) string {
	parts := strings.SplitN(key, ":", 6)
	if len(parts) == 6 && parts[0] == "arn" && parts[2] == "kms" {
		return parts[3]
	}
	return ""
}

// encryptionOf turns a GetBucketEncryption answer into the configuration a
// Put would set, bounded like a decoded record.
func encryptionOf(out *s3.GetBucketEncryptionOutput) ingest.Encryption {
	enc := ingest.Encryption{Present: true}
	if out == nil || out.ServerSideEncryptionConfiguration == nil {
		return enc
	}
	for i, r := range out.ServerSideEncryptionConfiguration.Rules {
		if i == maxRules {
			enc.Dropped = len(out.ServerSideEncryptionConfiguration.Rules) - maxRules
			break
		}
		var er ingest.EncryptionRule
		if d := r.ApplyServerSideEncryptionByDefault; d != nil {
			er.Algorithm, er.KMSKeyID = bound(string(d.SSEAlgorithm), maxField), bound(aws.ToString(d.KMSMasterKeyID), maxField)
		}
		if r.BucketKeyEnabled != nil {
			er.BucketKeySet, er.BucketKeyEnabled = true, *r.BucketKeyEnabled
		}
		if bt := r.BlockedEncryptionTypes; bt != nil {
			er.BlockedEncryptionTypes = []string{}
			for j, typ := range bt.EncryptionType {
				if j == maxRules {
					break
				}
				er.BlockedEncryptionTypes = append(er.BlockedEncryptionTypes, bound(string(typ), 64))
			}
		}
		enc.Rules = append(enc.Rules, er)
	}
	return enc
}

func bound(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// call makes one S3 or KMS call through the account's rate limiter,
// retrying SlowDown, throttling, server and network errors with backoff and
// jitter, at most Attempts times.
func (s *Scanner) call(ctx context.Context, account, api string, fn func() error) error {
	wait := backoff.Backoff{Min: s.o.MinBackoff, Max: s.o.MaxBackoff}
	renewed := false
	for attempt := 1; ; attempt++ {
		if err := s.limiters[account].Wait(ctx); err != nil {
			return err
		}
		s.o.Metrics.calls.WithLabelValues(account, api).Inc()
		err := fn()
		if err != nil && !renewed && awserr.SessionExpired(err) {
			// The role's session expired or was revoked: assume it again,
			// once, rather than fail every call until the cache expires.
			if c := s.creds[account]; c != nil {
				c.Invalidate()
				renewed = true
				continue
			}
		}
		if err == nil || ctx.Err() != nil || !awserr.Retryable(err) || attempt >= s.o.Attempts {
			return err
		}
		s.o.Metrics.throttles.WithLabelValues(account).Inc()
		if !backoff.Sleep(ctx, wait.Next()) {
			return ctx.Err()
		}
	}
}

func (s *Scanner) countError(account, region string, err error) {
	s.o.Metrics.errors.WithLabelValues(account, region, awserr.Reason(err)).Inc()
}
