// Package webhook posts alerts to HTTP endpoints, signed with HMAC-SHA256
// so that receivers can check where they come from and that they were not
// changed on the way.
//
// Each request carries
//
//	X-Encwatch-Timestamp: <Unix seconds>
//	X-Encwatch-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
//	X-Encwatch-Alert-Id:  <alert id>   (an idempotency key: retries resend it)
//
// 2xx is accepted; 408, 429, 5xx and network errors are retried by the
// outbox (honouring Retry-After); any other 4xx is permanent. URLs are
// redacted (no query string, no user info) in every error.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/encwatch/encwatch/alert"
)

// Header names.
const (
	HeaderTimestamp = "X-Encwatch-Timestamp"
	HeaderSignature = "X-Encwatch-Signature"
	HeaderAlertID   = "X-Encwatch-Alert-Id"
)

// Options configures a Sink.
type Options struct {
	Name   string
	URL    string
	Secret []byte // HMAC key; empty sends no signature (Slack incoming webhooks)
	// Timeout bounds one request (default 10s).
	Timeout time.Duration
	// Format is "json" (the alert v1 object, default) or "slack".
	Format string
	Client *http.Client
	Now    func() time.Time
}

// Sink is one webhook.
type Sink struct {
	o        Options
	redacted string
}

// New returns a webhook sink.
func New(o Options) (*Sink, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook %s: the URL is not an http(s) URL", o.Name)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Format == "" {
		o.Format = "json"
	}
	return &Sink{o: o, redacted: Redact(o.URL)}, nil
}

// Redact returns a URL without user info, query or fragment, for logs.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

// Name implements alert.Sink: "webhook:" and the configured name.
func (s *Sink) Name() string { return "webhook:" + s.o.Name }

// Sign returns the signature header value for a timestamp and body.
func Sign(secret []byte, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is Verify's answer to a request that was not signed with
// the secret, or whose timestamp is out of the tolerated window.
var ErrBadSignature = errors.New("webhook signature does not verify")

// Verify checks a received webhook as a receiver should: the signature
// header against the HMAC of timestamp + "." + body, in constant time, and,
// with maxAge above zero, that the timestamp (Unix seconds) is no further
// than maxAge from now, so a captured request cannot be replayed later.
func Verify(secret []byte, timestamp string, body []byte, signature string, now time.Time, maxAge time.Duration) error {
	if !hmac.Equal([]byte(Sign(secret, timestamp, body)), []byte(signature)) {
		return ErrBadSignature
	}
	if maxAge > 0 {
		sec, err := strconv.ParseInt(timestamp, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: timestamp %q is not Unix seconds", ErrBadSignature, timestamp)
		}
		if d := now.Sub(time.Unix(sec, 0)); d > maxAge || d < -maxAge {
			return fmt.Errorf("%w: timestamp %s is %s from now", ErrBadSignature, timestamp, d.Round(time.Second))
		}
	}
	return nil
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Status     int
	Excerpt    string
	retryAfter time.Duration
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("HTTP %d", e.Status)
	if e.Excerpt != "" {
		s += ": " + e.Excerpt
	}
	return s
}

// RetryAfter implements alert.RetryAfter.
func (e *StatusError) RetryAfter() time.Duration { return e.retryAfter }

// Send implements alert.Sink.
func (s *Sink) Send(ctx context.Context, d alert.Delivery) error {
	body := d.Body
	contentType := "application/json"
	if s.o.Format == "slack" {
		body = Slack(d.Alert)
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.o.URL, bytes.NewReader(body))
	if err != nil {
		return alert.Permanent(fmt.Errorf("webhook %s: building the request for %s", s.o.Name, s.redacted))
	}
	ts := strconv.FormatInt(s.o.Now().Unix(), 10)
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "encwatch")
	req.Header.Set(HeaderAlertID, d.Alert.ID)
	req.Header.Set(HeaderTimestamp, ts)
	if len(s.o.Secret) > 0 {
		req.Header.Set(HeaderSignature, Sign(s.o.Secret, ts, body))
	}
	resp, err := s.o.Client.Do(req)
	if err != nil {
		// url.Error holds the whole URL, query string included: drop it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("POST %s: %w", s.redacted, err)
	}
	defer resp.Body.Close()
	if err := CheckResponse(resp, s.o.Now()); err != nil {
		if alert.IsPermanent(err) {
			return alert.Permanent(fmt.Errorf("POST %s: %w", s.redacted, err))
		}
		return fmt.Errorf("POST %s: %w", s.redacted, err)
	}
	return nil
}

// CheckResponse reads an HTTP answer to a delivery: nil for a 2xx; a
// *StatusError, with the server's Retry-After, for 408, 429 and 5xx, which
// are retried; the same wrapped as permanent for any other 4xx (a dead
// letter). It reads at most 1 MB of the body.
func CheckResponse(resp *http.Response, now time.Time) error {
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	se := &StatusError{Status: resp.StatusCode, Excerpt: strings.TrimSpace(strings.ToValidUTF8(string(excerpt), "?"))}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		se.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), now)
		return se
	default:
		return alert.Permanent(se)
	}
}

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func slackText(s string) string { return slackEscaper.Replace(alert.Printable(s)) }

func slackCode(s string) string { return strings.ReplaceAll(slackText(s), "`", "'") }

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Slack renders an alert as a Slack incoming-webhook message. What comes
// from a CloudTrail record is escaped as Slack asks (&, <, >), so that a
// hostile bucket name or caller cannot mention @channel or forge a link,
// and loses its backticks, so that it cannot leave its code span.
func Slack(a alert.Alert) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s* `%s` %s\n", strings.ToUpper(a.Severity), a.Rule, slackText(a.Summary))
	fmt.Fprintf(&b, "Bucket: `%s` (%s, %s %s)\n", slackCode(a.Bucket.Name), a.Bucket.Type, slackText(a.Bucket.Account), slackText(a.Bucket.Region))
	actor := a.Event.Actor.ARN
	if actor == "" {
		actor = a.Event.Actor.Type
	}
	fmt.Fprintf(&b, "Event: %s `%s` at %s by `%s`\n", slackText(a.Event.Name), slackCode(a.Event.ID), slackText(a.Event.Time), slackCode(actor))
	if a.Encryption != nil {
		fmt.Fprintf(&b, "Set: %s key `%s` Bucket Key %v\n", slackText(a.Encryption.Algorithm), slackCode(a.Encryption.KMSKeyID), a.Encryption.BucketKeyEnabled)
	}
	fmt.Fprintf(&b, "Remediation: %s", a.Remediation)
	out, _ := json.Marshal(map[string]string{"text": b.String()})
	return out
}
