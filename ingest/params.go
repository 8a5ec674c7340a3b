package ingest

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
)

type params struct {
	bucketName string
	host       string
	encryption Encryption
	object     ObjectRequest
}

// parseParams reads requestParameters. Keys are matched case-insensitively
// because older records write "host" as an array where newer ones write
// "Host" as a string.
func parseParams(raw json.RawMessage, maxRules int) params {
	var p params
	if len(raw) == 0 || raw[0] != '{' {
		return p
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return p
	}
	// Keys that differ only in case are distinct map entries, iterated in
	// no order: what decides between two of them must not depend on it.
	var sse, sseC string
	var objEnc json.RawMessage
	for k, v := range m {
		switch strings.ToLower(k) {
		case "bucketname":
			p.bucketName = scalar(v)
		case "host":
			p.host = scalar(v)
		case "serversideencryptionconfiguration":
			p.encryption = parseSSEConfig(v, maxRules)
		case "key":
			p.object.Key = scalar(v)
		case "x-amz-server-side-encryption":
			sse = scalar(v)
		case "x-amz-server-side-encryption-customer-algorithm":
			if scalar(v) != "" {
				sseC = "SSE-C"
			}
		case "x-amz-server-side-encryption-aws-kms-key-id":
			p.object.KMSKeyID = scalar(v)
		case "x-amz-server-side-encryption-bucket-key-enabled":
			p.object.BucketKeyEnabled = scalar(v)
		case "objectencryption":
			objEnc = v
		case "x-amz-copy-source":
			p.object.CopySourceBucket = copySourceBucket(scalar(v))
		}
	}
	// A customer-provided key wins over a named algorithm (the request is
	// SSE-C whatever else it says).
	p.object.Requested = firstNonEmpty(sseC, sse)
	if objEnc != nil {
		// UpdateObjectEncryption: {"SSE-KMS": {"KMSKeyArn": ..., "BucketKeyEnabled": ...}}
		var oe map[string]json.RawMessage
		if json.Unmarshal(objEnc, &oe) == nil {
			for alg, body := range oe {
				if !strings.EqualFold(alg, "SSE-KMS") {
					continue
				}
				var kms map[string]json.RawMessage
				if json.Unmarshal(body, &kms) != nil {
					continue
				}
				p.object.Requested = "aws:kms"
				for k, kv := range kms {
					switch strings.ToLower(k) {
					case "kmskeyarn":
						p.object.KMSKeyID = scalar(kv)
					case "bucketkeyenabled":
						p.object.BucketKeyEnabled = scalar(kv)
					}
				}
			}
		}
	}
	return p
}

// copySourceBucket reads the bucket of x-amz-copy-source
// (/BUCKET/KEY, URL-encoded).
func copySourceBucket(v string) string {
	src, _ := url.PathUnescape(strings.TrimPrefix(v, "/"))
	b, _, _ := strings.Cut(src, "/")
	return b
}

// scalar reads a JSON string, or the first string of an array of strings.
func scalar(v json.RawMessage) string {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '[' {
		var a []text
		if json.Unmarshal(v, &a) == nil && len(a) > 0 {
			return string(a[0])
		}
		return ""
	}
	var t text
	if json.Unmarshal(v, &t) != nil {
		return ""
	}
	return string(t)
}

type rawSSERule struct {
	Default *struct {
		SSEAlgorithm   text `json:"SSEAlgorithm"`
		KMSMasterKeyID text `json:"KMSMasterKeyID"`
	} `json:"ApplyServerSideEncryptionByDefault"`
	BucketKeyEnabled       json.RawMessage `json:"BucketKeyEnabled"`
	BlockedEncryptionTypes json.RawMessage `json:"BlockedEncryptionTypes"`
}

// parseSSEConfig reads ServerSideEncryptionConfiguration. Rule is an object
// for one rule and an array for several; anything unreadable leaves a rule
// without an algorithm, which the rules engine reports.
func parseSSEConfig(v json.RawMessage, maxRules int) Encryption {
	enc := Encryption{Present: true}
	var cfg struct {
		Rule json.RawMessage `json:"Rule"`
	}
	if json.Unmarshal(v, &cfg) != nil {
		return enc
	}
	rule := bytes.TrimSpace(cfg.Rule)
	var rules []json.RawMessage
	switch {
	case len(rule) == 0:
	case rule[0] == '[':
		_ = json.Unmarshal(rule, &rules)
	case rule[0] == '{':
		rules = []json.RawMessage{rule}
	}
	if len(rules) > maxRules {
		enc.Dropped = len(rules) - maxRules
		rules = rules[:maxRules]
	}
	for _, rr := range rules {
		var r rawSSERule
		if json.Unmarshal(rr, &r) != nil {
			enc.Rules = append(enc.Rules, EncryptionRule{})
			continue
		}
		var out EncryptionRule
		if r.Default != nil {
			out.Algorithm = strings.TrimSpace(string(r.Default.SSEAlgorithm))
			out.KMSKeyID = strings.TrimSpace(string(r.Default.KMSMasterKeyID))
		}
		out.BucketKeyEnabled, out.BucketKeySet = parseBool(r.BucketKeyEnabled)
		out.BlockedEncryptionTypes = parseBlocked(r.BlockedEncryptionTypes)
		enc.Rules = append(enc.Rules, out)
	}
	return enc
}

// parseBlocked reads a rule's BlockedEncryptionTypes as CloudTrail renders
// the XML: {"EncryptionType": "SSE-C"} for one value, an array for several,
// and, leniently, an array of such objects or the values themselves. It
// returns nil when the rule names none, and a non-nil (maybe empty) list
// when it names the element at all, so "named, but nothing readable" and
// "not named" stay apart.
func parseBlocked(v json.RawMessage) []string {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return nil
	}
	out := []string{}
	var walk func(v json.RawMessage, depth int)
	walk = func(v json.RawMessage, depth int) {
		v = bytes.TrimSpace(v)
		if len(v) == 0 || depth > 3 || len(out) >= 16 {
			return
		}
		switch v[0] {
		case '"':
			var s string
			if json.Unmarshal(v, &s) == nil && strings.TrimSpace(s) != "" {
				out = append(out, strings.TrimSpace(s))
			}
		case '[':
			var items []json.RawMessage
			if json.Unmarshal(v, &items) == nil {
				for _, it := range items {
					walk(it, depth+1)
				}
			}
		case '{':
			var obj struct {
				EncryptionType json.RawMessage `json:"EncryptionType"`
			}
			if json.Unmarshal(v, &obj) == nil {
				walk(obj.EncryptionType, depth+1)
			}
		}
	}
	walk(v, 0)
	return out
}

// parseBool reads BucketKeyEnabled: a JSON boolean or a string. Only JSON
// true and the exact string "true" count as on (DESIGN.md section 5): a
// request whose value S3 would not read as true must not silence
// bucket-key-disabled, so "TRUE", "1" or " true" are off.
func parseBool(v json.RawMessage) (value, set bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || string(v) == "null" {
		return false, false
	}
	if string(v) == "true" {
		return true, true
	}
	var str string
	return v[0] == '"' && json.Unmarshal(v, &str) == nil && str == "true", true
}

// objectRequest completes a data event's request with what S3 answered
// and what it applied.
func objectRequest(p params, response, additional json.RawMessage) ObjectRequest {
	o := p.object
	if len(response) > 0 && response[0] == '{' {
		var m map[string]json.RawMessage
		if json.Unmarshal(response, &m) == nil {
			for k, v := range m {
				if strings.EqualFold(k, "x-amz-server-side-encryption") {
					o.ResponseSSE = scalar(v)
				}
			}
		}
	}
	if len(additional) > 0 && additional[0] == '{' {
		var a struct {
			SSEApplied text `json:"SSEApplied"`
		}
		_ = json.Unmarshal(additional, &a)
		o.SSEApplied = string(a.SSEApplied)
	}
	return o
}

// kmsRequest reads the key of a KMS lifecycle event.
func kmsRequest(r *rawRecord) KMSRequest {
	var k KMSRequest
	var req struct {
		KeyID               text            `json:"keyId"`
		PendingWindowInDays json.RawMessage `json:"pendingWindowInDays"`
	}
	if len(r.RequestParameters) > 0 && json.Unmarshal(r.RequestParameters, &req) == nil {
		k.KeyID = strings.TrimSpace(string(req.KeyID))
		var n json.Number
		if json.Unmarshal(req.PendingWindowInDays, &n) == nil {
			if v, err := n.Int64(); err == nil && v > 0 && v < 1<<16 {
				k.PendingWindowInDays = int(v)
			}
		}
	}
	var resp struct {
		KeyID        text `json:"keyId"`
		KeyState     text `json:"keyState"`
		DeletionDate text `json:"deletionDate"`
	}
	if len(r.ResponseElements) > 0 && json.Unmarshal(r.ResponseElements, &resp) == nil {
		k.KeyARN, k.KeyState, k.DeletionDate = strings.TrimSpace(string(resp.KeyID)), string(resp.KeyState), string(resp.DeletionDate)
	}
	if !strings.HasPrefix(k.KeyARN, "arn:") {
		k.KeyARN = ""
		for _, res := range r.Resources {
			if string(res.Type) == "AWS::KMS::Key" && strings.HasPrefix(string(res.ARN), "arn:") {
				k.KeyARN = string(res.ARN)
				break
			}
		}
	}
	return k
}
