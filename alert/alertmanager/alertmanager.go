// Package alertmanager is the sink that posts each finding to Prometheus
// Alertmanager's API v2 (POST /api/v2/alerts) as one alert, so that the
// routes, silences and inhibitions security teams already run apply to
// encwatch's findings. Labels carry alert_id, so a resend deduplicates in
// Alertmanager and two findings never merge.
package alertmanager

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/webhook"
)

// DefaultResolveAfter is how long after detection an alert ends
// (endsAt) unless the configuration says otherwise.
const DefaultResolveAfter = time.Hour

// maxValue bounds a label or annotation value: whoever writes a CloudTrail
// record chooses most of them.
const maxValue = 4096

// Options configures a sink.
type Options struct {
	Name string
	URL  string // Alertmanager's base URL, e.g. http://alertmanager:9093
	// ResolveAfter sets endsAt = startsAt + ResolveAfter (default 1h).
	ResolveAfter time.Duration
	// ExternalURL is the daemon's own address for people (http.externalURL);
	// when set, generatorURL links to the bucket on its web page.
	ExternalURL string
	// Username and Password for basic auth, or BearerToken.
	Username, Password, BearerToken string
	TLS                             *tls.Config
	Timeout                         time.Duration // one POST (default 10s)
	Client                          *http.Client
	Now                             func() time.Time
}

// Sink posts alerts to one Alertmanager.
type Sink struct {
	o        Options
	endpoint string
	redacted string
}

// New returns a sink.
func New(o Options) (*Sink, error) {
	u, err := url.Parse(strings.TrimRight(o.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("alertmanager %s: want an http(s) URL, got %q", o.Name, o.URL)
	}
	if o.ResolveAfter <= 0 {
		o.ResolveAfter = DefaultResolveAfter
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: o.TLS, Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 4}}
	}
	red := *u
	red.User, red.RawQuery = nil, ""
	return &Sink{o: o, endpoint: u.String() + "/api/v2/alerts", redacted: red.String()}, nil
}

// Name implements alert.Sink: the outbox queue is alertmanager:NAME.
func (s *Sink) Name() string { return "alertmanager:" + s.o.Name }

// Posted is one alert as Alertmanager's API v2 takes it.
type Posted struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func bound(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxValue {
		s = s[:maxValue]
	}
	return s
}

// Alert maps a finding to an Alertmanager alert (DESIGN section 4).
func (s *Sink) Alert(a alert.Alert) Posted {
	actor := a.Event.Actor.ARN
	if actor == "" {
		actor = a.Event.Actor.Type
	}
	p := Posted{
		Labels: map[string]string{"alertname": a.Rule, "severity": a.Severity, "bucket": bound(a.Bucket.Name), "bucket_type": a.Bucket.Type,
			"account": bound(a.Bucket.Account), "region": bound(a.Bucket.Region), "alert_id": a.ID},
		Annotations: map[string]string{"summary": bound(a.Summary), "remediation": bound(a.Remediation), "event_id": bound(a.Event.ID),
			"event_time": bound(a.Event.Time), "actor": bound(actor)},
		StartsAt: a.DetectedAt.UTC(), EndsAt: a.DetectedAt.UTC().Add(s.o.ResolveAfter),
	}
	for k, v := range p.Labels {
		if v == "" {
			delete(p.Labels, k) // Alertmanager drops empty labels anyway
		}
	}
	if s.o.ExternalURL != "" {
		p.GeneratorURL = strings.TrimRight(s.o.ExternalURL, "/") + "/?bucket=" + url.QueryEscape(a.Bucket.ARN)
	}
	return p
}

// Send implements alert.Sink: 2xx is acceptance; 408, 429 and 5xx are
// retried; another 4xx is a dead letter.
func (s *Sink) Send(ctx context.Context, d alert.Delivery) error {
	return s.post(ctx, []alert.Delivery{d})
}

// SendBatch implements alert.BatchSink: the alerts go in one POST, which
// Alertmanager accepts or refuses as a whole.
func (s *Sink) SendBatch(ctx context.Context, ds []alert.Delivery) []error {
	errs := make([]error, len(ds))
	if err := s.post(ctx, ds); err != nil {
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

func (s *Sink) post(ctx context.Context, ds []alert.Delivery) error {
	ps := make([]Posted, len(ds))
	for i, d := range ds {
		ps[i] = s.Alert(d.Alert)
	}
	body, err := json.Marshal(ps)
	if err != nil {
		return alert.Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(body))
	if err != nil {
		return alert.Permanent(fmt.Errorf("alertmanager %s: building the request for %s", s.o.Name, s.redacted))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "encwatch")
	switch {
	case s.o.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+s.o.BearerToken)
	case s.o.Username != "":
		req.SetBasicAuth(s.o.Username, s.o.Password)
	}
	resp, err := s.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL may hold credentials
		}
		return fmt.Errorf("POST %s: %w", s.redacted, err)
	}
	defer resp.Body.Close()
	if err := webhook.CheckResponse(resp, s.o.Now()); err != nil {
		if alert.IsPermanent(err) {
			return alert.Permanent(fmt.Errorf("POST %s: %w", s.redacted, err))
		}
		return fmt.Errorf("POST %s: %w", s.redacted, err)
	}
	return nil
}

// Check implements alert.Checker: Alertmanager's readiness endpoint.
func (s *Sink) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.endpoint, "/api/v2/alerts")+"/-/ready", nil)
	if err != nil {
		return err
	}
	resp, err := s.o.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("alertmanager %s: %w", s.o.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("alertmanager %s: /-/ready answered HTTP %d", s.o.Name, resp.StatusCode)
	}
	return nil
}
