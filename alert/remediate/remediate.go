// Package remediate is the opt-in sink that puts a general purpose bucket
// back on its last compliant default encryption (DESIGN 5b). It reads the
// bucket's configuration first and changes only what the finding is about,
// so BlockedEncryptionTypes, the Bucket Key and other settings are kept;
// it never touches a directory bucket, never follows a finding the
// bucket's newer events superseded, and never answers its own changes, so
// it cannot loop. Every action, dry or real, is an alert of rule
// remediation-applied or remediation-skipped.
package remediate

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/awserr"
	"github.com/encwatch/encwatch/rules"
)

// The rules of the alerts the sink raises.
const (
	Applied = "remediation-applied"
	Skipped = "remediation-skipped"
)

// DefaultRules are the findings the sink answers by default.
var DefaultRules = []string{rules.EncryptionDeleted, rules.AlgorithmNotAllowed, rules.KMSAWSManagedKey, rules.SSECUnblocked, rules.BucketKeyDisabled}

// Metric result labels.
const (
	resultApplied    = "applied"
	resultDryRun     = "dry-run"
	resultInPlace    = "in-place"
	resultSkipped    = "skipped"
	resultFailed     = "failed"
	resultOwnChange  = "own-change"
	resultOutOfScope = "out-of-scope"
)

// S3API is the part of the S3 client the sink uses.
type S3API interface {
	GetBucketEncryption(context.Context, *s3.GetBucketEncryptionInput, ...func(*s3.Options)) (*s3.GetBucketEncryptionOutput, error)
	PutBucketEncryption(context.Context, *s3.PutBucketEncryptionInput, ...func(*s3.Options)) (*s3.PutBucketEncryptionOutput, error)
}

// Options configures the sink.
type Options struct {
	// DryRun reads and says what it would write, and writes nothing.
	DryRun bool
	Rules  []string // findings answered (default DefaultRules)
	// Buckets are the bucket-name globs the sink may touch (default "*").
	Buckets []string
	// Rate is the PutBucketEncryption and GetBucketEncryption calls per
	// second per account, at most (default 1).
	Rate float64
	// RoleName, when set, is the role the sink acts as in the bucket's
	// account (arn:aws:iam::ACCOUNT:role/RoleName); its changes come back
	// through the trail under that role and are never answered. Without
	// it the sink acts with its own credentials, and OwnARNs must name
	// them.
	RoleName string
	// OwnARNs are more role ARN globs whose changes are the sink's own.
	OwnARNs []string
	// Client returns the S3 client for a bucket's account and Region.
	Client func(ctx context.Context, account, region string) (S3API, error)
	// State reads the bucket state the daemon keeps.
	State func(key string) (rules.BucketState, bool, error)
	// Emit stores the sink's own alerts in the outbox, for the other sinks.
	Emit    func(ctx context.Context, a alert.Alert) error
	Metrics *Metrics
	Logger  zerolog.Logger
	Now     func() time.Time
}

// Sink is the remediate sink.
type Sink struct {
	o        Options
	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

// New returns the sink.
func New(o Options) *Sink {
	if len(o.Rules) == 0 {
		o.Rules = DefaultRules
	}
	if len(o.Buckets) == 0 {
		o.Buckets = []string{"*"}
	}
	if o.Rate <= 0 {
		o.Rate = 1
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Sink{o: o, limiters: map[string]*rate.Limiter{}}
}

// Name implements alert.Sink.
func (s *Sink) Name() string { return "remediate" }

// Accept is the outbox filter: the findings the sink answers, on buckets
// it may touch; never its own alerts.
func (s *Sink) Accept(a alert.Alert) bool {
	return slices.Contains(s.o.Rules, a.Rule) && slices.ContainsFunc(s.o.Buckets, func(g string) bool { return rules.Glob(g, a.Bucket.Name) })
}

// Metrics are the sink's metrics.
type Metrics struct{ total *prometheus.CounterVec }

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{total: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "encwatch_remediations_total",
		Help: "Findings the remediate sink answered, by rule and result (applied, dry-run, in-place, skipped, failed, own-change, out-of-scope)."},
		[]string{"rule", "result"})}
	if reg != nil {
		reg.MustRegister(m.total)
	}
	return m
}

// Init creates the series of the rules answered at zero.
func (m *Metrics) Init(rs []string) {
	for _, r := range rs {
		for _, res := range []string{resultApplied, resultDryRun, resultInPlace, resultSkipped, resultFailed} {
			m.total.WithLabelValues(r, res)
		}
	}
}

// Send implements alert.Sink: it answers one finding. An error is
// returned only for what a retry can fix (throttling, 5xx, the network,
// the outbox); every other outcome is an alert.
func (s *Sink) Send(ctx context.Context, d alert.Delivery) error {
	a := d.Alert
	switch {
	case !s.Accept(a):
		s.count(a.Rule, resultOutOfScope)
		return nil
	case s.own(a):
		s.count(a.Rule, resultOwnChange)
		s.o.Logger.Debug().Str("alert", a.ID).Str("bucket", a.Bucket.Name).Msg("the finding is of the sink's own change; not answered")
		return nil
	case a.Bucket.Type == ingest.BucketDirectory:
		return s.skip(ctx, a, "a directory bucket: encwatch never changes its configuration (one KMS key for the bucket's lifetime)", nil)
	case a.Bucket.Account == "" || a.Bucket.Name == "":
		return s.skip(ctx, a, "the finding names no bucket account", nil)
	}
	st, known, err := s.o.State(rules.StateKey(ingest.NewBucket(a.Bucket.Name, a.Bucket.Account, a.Bucket.Region)))
	if err != nil {
		return fmt.Errorf("bucket state: %w", err)
	}
	if at, perr := time.Parse(time.RFC3339, a.Event.Time); perr == nil && known && st.LastChange.After(at.Add(time.Second)) {
		return s.skip(ctx, a, fmt.Sprintf("superseded: the bucket changed after the finding (%s at %s)", st.LastEvent, st.LastChange.UTC().Format(time.RFC3339)), nil)
	}
	client, err := s.o.Client(ctx, a.Bucket.Account, a.Bucket.Region)
	if err != nil {
		return s.skip(ctx, a, "no S3 client for the bucket's account", err)
	}
	current, err := s.read(ctx, client, a)
	if err != nil {
		if awserr.Retryable(err) {
			return err
		}
		return s.skip(ctx, a, "GetBucketEncryption failed", err)
	}
	want, restores, why := fix(a.Rule, current, st.LastCompliant)
	if why != "" {
		return s.skip(ctx, a, why, nil)
	}
	act := &alert.Action{Finding: a.ID, Rule: a.Rule, DryRun: s.o.DryRun, Read: toAlert(current), Written: toAlert(want), Restores: restores}
	if equal(current, want) {
		f := false
		act.Changed = &f
		s.count(a.Rule, resultInPlace)
		return s.emit(ctx, a, Applied, "the configuration to write back is already in place on "+desc(a), act)
	}
	if s.o.DryRun {
		s.count(a.Rule, resultDryRun)
		return s.emit(ctx, a, Applied, "dry run: would write "+describe(want)+" on "+desc(a)+" (read "+describe(current)+")", act)
	}
	if err := s.write(ctx, client, a, want); err != nil {
		if awserr.Retryable(err) {
			return err
		}
		return s.skip(ctx, a, "PutBucketEncryption failed", err)
	}
	t := true
	act.Changed = &t
	s.count(a.Rule, resultApplied)
	return s.emit(ctx, a, Applied, "wrote "+describe(want)+" on "+desc(a)+" (was "+describe(current)+")", act)
}

// own reports whether the finding is of a change the sink itself made.
func (s *Sink) own(a alert.Alert) bool {
	arns := []string{a.Event.Actor.SessionIssuerARN, a.Event.Actor.ARN}
	globs := s.o.OwnARNs
	if s.o.RoleName != "" {
		globs = append(slices.Clone(globs), "arn:aws*:iam::*:role/"+s.o.RoleName, "arn:aws*:iam::*:role/*/"+s.o.RoleName,
			"arn:aws*:sts::*:assumed-role/"+s.o.RoleName+"/*")
	}
	for _, g := range globs {
		for _, arn := range arns {
			if arn != "" && rules.Glob(g, arn) {
				return true
			}
		}
	}
	return false
}

func (s *Sink) limiter(account string) *rate.Limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[account]
	if !ok {
		l = rate.NewLimiter(rate.Limit(s.o.Rate), 1)
		s.limiters[account] = l
	}
	return l
}

func (s *Sink) read(ctx context.Context, c S3API, a alert.Alert) ([]ingest.EncryptionRule, error) {
	if err := s.limiter(a.Bucket.Account).Wait(ctx); err != nil {
		return nil, err
	}
	out, err := c.GetBucketEncryption(ctx, &s3.GetBucketEncryptionInput{Bucket: aws.String(a.Bucket.Name), ExpectedBucketOwner: aws.String(a.Bucket.Account)})
	if awserr.Code(err) == "ServerSideEncryptionConfigurationNotFoundError" {
		return []ingest.EncryptionRule{{Algorithm: rules.AlgAES256}}, nil
	}
	if err != nil {
		return nil, err
	}
	var rs []ingest.EncryptionRule
	for _, r := range out.ServerSideEncryptionConfiguration.Rules {
		var er ingest.EncryptionRule
		if d := r.ApplyServerSideEncryptionByDefault; d != nil {
			er.Algorithm, er.KMSKeyID = string(d.SSEAlgorithm), aws.ToString(d.KMSMasterKeyID)
		}
		if r.BucketKeyEnabled != nil {
			er.BucketKeySet, er.BucketKeyEnabled = true, *r.BucketKeyEnabled
		}
		if r.BlockedEncryptionTypes != nil {
			er.BlockedEncryptionTypes = []string{}
			for _, t := range r.BlockedEncryptionTypes.EncryptionType {
				er.BlockedEncryptionTypes = append(er.BlockedEncryptionTypes, string(t))
			}
		}
		rs = append(rs, er)
	}
	if len(rs) == 0 {
		rs = []ingest.EncryptionRule{{Algorithm: rules.AlgAES256}}
	}
	return rs, nil
}

func (s *Sink) write(ctx context.Context, c S3API, a alert.Alert, want []ingest.EncryptionRule) error {
	if err := s.limiter(a.Bucket.Account).Wait(ctx); err != nil {
		return err
	}
	cfg := &types.ServerSideEncryptionConfiguration{}
	for _, r := range want {
		rule := types.ServerSideEncryptionRule{ApplyServerSideEncryptionByDefault: &types.ServerSideEncryptionByDefault{SSEAlgorithm: types.ServerSideEncryption(r.Algorithm)}}
		if r.KMSKeyID != "" {
			rule.ApplyServerSideEncryptionByDefault.KMSMasterKeyID = aws.String(r.KMSKeyID)
		}
		if r.BucketKeySet {
			rule.BucketKeyEnabled = aws.Bool(r.BucketKeyEnabled)
		}
		if r.BlockedEncryptionTypes != nil {
			bt := &types.BlockedEncryptionTypes{}
			for _, t := range r.BlockedEncryptionTypes {
				bt.EncryptionType = append(bt.EncryptionType, types.EncryptionType(t))
			}
			rule.BlockedEncryptionTypes = bt
		}
		cfg.Rules = append(cfg.Rules, rule)
	}
	_, err := c.PutBucketEncryption(ctx, &s3.PutBucketEncryptionInput{Bucket: aws.String(a.Bucket.Name), ExpectedBucketOwner: aws.String(a.Bucket.Account),
		ServerSideEncryptionConfiguration: cfg})
	return err
}

// fix returns the configuration that answers a finding, built from what
// was read so that only what the finding is about changes, and where the
// restored part comes from; or why there is none.
func fix(rule string, current []ingest.EncryptionRule, last *rules.KnownConfig) ([]ingest.EncryptionRule, string, string) {
	want := slices.Clone(current)
	for i := range want {
		want[i].BlockedEncryptionTypes = slices.Clone(current[i].BlockedEncryptionTypes)
	}
	switch rule {
	case rules.SSECUnblocked:
		for i := range want {
			want[i].BlockedEncryptionTypes = []string{"SSE-C"}
		}
		return want, "", ""
	case rules.BucketKeyDisabled:
		for i := range want {
			if want[i].Algorithm == rules.AlgKMS {
				want[i].BucketKeySet, want[i].BucketKeyEnabled = true, true
			}
		}
		return want, "", ""
	}
	// The algorithm and key: the last compliant ones.
	if last == nil || last.Algorithm == "" {
		return nil, "", "no compliant configuration of the bucket is known (from an event or the inventory): nothing to write back"
	}
	for i := range want {
		want[i].Algorithm, want[i].KMSKeyID = last.Algorithm, last.KMSKeyID
		if rule == rules.EncryptionDeleted && !want[i].BucketKeySet {
			// A delete dropped the Bucket Key with the rest: restore it too.
			want[i].BucketKeySet, want[i].BucketKeyEnabled = last.BucketKeyEnabled, last.BucketKeyEnabled
		}
	}
	return want, firstOr(last.EventID, last.Basis) + " at " + last.At.UTC().Format(time.RFC3339), ""
}

func firstOr(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func equal(a, b []ingest.EncryptionRule) bool {
	return slices.EqualFunc(a, b, func(x, y ingest.EncryptionRule) bool {
		return x.Algorithm == y.Algorithm && x.KMSKeyID == y.KMSKeyID && x.BucketKeyEnabled == y.BucketKeyEnabled &&
			slices.Equal(x.BlockedEncryptionTypes, y.BlockedEncryptionTypes)
	})
}

func toAlert(rs []ingest.EncryptionRule) []alert.Rule {
	out := make([]alert.Rule, len(rs))
	for i, r := range rs {
		out[i] = alert.Rule{Algorithm: r.Algorithm, KMSKeyID: r.KMSKeyID, BucketKeyEnabled: r.BucketKeyEnabled, BlockedEncryptionTypes: r.BlockedEncryptionTypes}
	}
	return out
}

func describe(rs []ingest.EncryptionRule) string {
	var parts []string
	for _, r := range rs {
		p := r.Algorithm
		if r.KMSKeyID != "" {
			p += " with key " + r.KMSKeyID
		}
		if r.BucketKeyEnabled {
			p += ", Bucket Key on"
		}
		if r.BlockedEncryptionTypes != nil {
			p += ", blocked " + firstOr(strings.Join(r.BlockedEncryptionTypes, "+"), "nothing")
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}

func desc(a alert.Alert) string {
	return a.Bucket.Type + " bucket " + a.Bucket.Name + " (account " + a.Bucket.Account + ")"
}

func (s *Sink) skip(ctx context.Context, a alert.Alert, why string, err error) error {
	res := resultSkipped
	act := &alert.Action{Finding: a.ID, Rule: a.Rule, DryRun: s.o.DryRun, Reason: why}
	summary := "not remediated: " + why + " (" + desc(a) + ", finding " + a.Rule + ")"
	if err != nil {
		res = resultFailed
		act.Error = awserr.Code(err)
		if act.Error == "" {
			act.Error = err.Error()
		}
		summary += ": " + act.Error
	}
	s.count(a.Rule, res)
	return s.emit(ctx, a, Skipped, summary, act)
}

// emit raises the sink's alert for a finding. Its id derives from the
// finding's, so an answer sent again after a restart has the same id.
func (s *Sink) emit(ctx context.Context, f alert.Alert, rule, summary string, act *alert.Action) error {
	a := alert.Alert{Schema: alert.Schema, ID: alert.ID(rule, f.Bucket.Account, "remediation|"+f.ID), Rule: rule, Severity: rules.Info.String(),
		Summary: summary, DetectedAt: s.o.Now().UTC(), Bucket: f.Bucket, Event: f.Event, Basis: f.Basis, Origin: f.Origin, Action: act,
		Remediation: "Review what encwatch wrote (or would write, in a dry run) and why; turn dryRun off only once the dry-run alerts say what you want."}
	s.o.Logger.Info().Str("rule", rule).Str("finding", f.ID).Str("bucket", f.Bucket.Name).Str("summary", summary).Msg("remediation")
	return s.o.Emit(ctx, a)
}

func (s *Sink) count(rule, result string) { s.o.Metrics.total.WithLabelValues(rule, result).Inc() }
