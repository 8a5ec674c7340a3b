// Package s3sqs reads CloudTrail log files announced through SQS: CloudTrail's
// own SNS notifications and S3 event notifications, each object fetched with
// GetObject and streamed through the decoder. A message is deleted only
// after every finding of its files is stored, so a crash loses nothing;
// work is shared between replicas by SQS's visibility timeout.
package s3sqs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/encwatch/encwatch/ingest"
)

// Object is one S3 object a notification announces.
type Object struct{ Bucket, Key string }

// ErrTestEvent marks S3's s3:TestEvent, which is acknowledged and skipped.
var ErrTestEvent = errors.New("s3:TestEvent")

// ParseNotification returns the log files a message announces. It reads
// CloudTrail's notification ({"s3Bucket":...,"s3ObjectKey":[...]}), raw or
// inside an SNS envelope, and S3 event notifications (keys URL-encoded).
// Digest and Insights objects are left out. An s3:TestEvent gives
// ErrTestEvent; anything else unknown is an error.
func ParseNotification(body []byte) ([]Object, error) {
	var env struct {
		Type      string          `json:"Type"`
		Message   *string         `json:"Message"`
		S3Bucket  string          `json:"s3Bucket"`
		S3Keys    json.RawMessage `json:"s3ObjectKey"`
		Records   []s3Record      `json:"Records"`
		Event     string          `json:"Event"`
		EventName string          `json:"eventName"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("notification is not JSON: %w", err)
	}
	switch {
	case env.Message != nil && (env.Type == "Notification" || env.Type == ""):
		return ParseNotification([]byte(*env.Message))
	case env.Event == "s3:TestEvent":
		return nil, ErrTestEvent
	case env.S3Bucket != "":
		var keys []string
		if err := json.Unmarshal(env.S3Keys, &keys); err != nil {
			var one string
			if json.Unmarshal(env.S3Keys, &one) != nil {
				return nil, fmt.Errorf("CloudTrail notification: s3ObjectKey is neither a list nor a string")
			}
			keys = []string{one}
		}
		var out []Object
		for _, k := range keys {
			if k != "" && !ingest.SkipKey(k) {
				out = append(out, Object{Bucket: env.S3Bucket, Key: k})
			}
		}
		return out, nil
	case env.Records != nil:
		var out []Object
		for _, r := range env.Records {
			if r.EventSource != "aws:s3" || !strings.HasPrefix(r.EventName, "ObjectCreated:") {
				continue
			}
			key, err := url.QueryUnescape(r.S3.Object.Key)
			if err != nil {
				return nil, fmt.Errorf("S3 event: key %q: %w", r.S3.Object.Key, err)
			}
			if r.S3.Bucket.Name == "" || key == "" {
				return nil, errors.New("S3 event without a bucket name or object key")
			}
			if !ingest.SkipKey(key) {
				out = append(out, Object{Bucket: r.S3.Bucket.Name, Key: key})
			}
		}
		return out, nil
	}
	return nil, errors.New("unknown notification: neither CloudTrail's (s3Bucket, s3ObjectKey), an SNS envelope nor an S3 event")
}

type s3Record struct {
	EventSource string `json:"eventSource"`
	EventName   string `json:"eventName"`
	S3          struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key string `json:"key"`
		} `json:"object"`
	} `json:"s3"`
}
