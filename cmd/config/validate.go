package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/encwatch/encwatch/rules"
)

var regionRe = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)

// addFunc records one problem at a key path.
type addFunc func(path, format string, a ...any)

// validate checks what types cannot: required keys, known names, ranges.
// It reads the configuration and changes nothing; custom rules are
// compiled apart, by compileCustomRules.
func validate(c *Config) []rules.FieldError {
	var errs []rules.FieldError
	add := func(path, format string, a ...any) {
		errs = append(errs, rules.FieldError{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
	validateCore(c, add)
	validateSources(c, add)
	validateSinks(c, add)
	custom := validateCustomRules(c, add)
	for _, fe := range c.Policy.Validate(custom...) {
		add("policy."+fe.Path, "%s", fe.Msg)
	}
	return errs
}

// validateCore checks state, limits, http and log.
func validateCore(c *Config, add addFunc) {
	if c.State.Dir == "" {
		add("state.dir", "must not be empty")
	}
	if c.Limits.MaxRecordBytes < 64<<10 {
		add("limits.maxRecordBytes", "must be at least 65536 (CloudTrail records reach hundreds of KB)")
	}
	if c.Limits.MaxDecompressedBytes < 1<<20 {
		add("limits.maxDecompressedBytes", "must be at least 1 MiB")
	}
	if c.Limits.MaxNesting < 16 {
		add("limits.maxNesting", "must be at least 16")
	}
	if c.Limits.MaxRulesPerRequest < 1 {
		add("limits.maxRulesPerRequest", "must be at least 1")
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		add("http.listen", "want host:port, got %q", c.HTTP.Listen)
	}
	if (c.HTTP.TLS.CertFile == "") != (c.HTTP.TLS.KeyFile == "") {
		add("http.tls.certFile", "give both certFile and keyFile, or neither")
	}
	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		add("log.level", "unknown level %q (want debug, info, warn or error)", c.Log.Level)
	}
}

// validateTargets checks the Regions and assumed roles of a source that
// reads accounts (lookup, inventory).
func validateTargets(key string, regions []string, accounts []Account, missing string, add addFunc) {
	if len(regions) == 0 {
		add(key+".regions", "%s", missing)
	}
	for i, r := range regions {
		if !regionRe.MatchString(r) {
			add(fmt.Sprintf("%s.regions[%d]", key, i), "%q is not a Region name", r)
		}
	}
	for i, a := range accounts {
		if !strings.HasPrefix(a.RoleARN, "arn:") || !strings.Contains(a.RoleARN, ":role/") {
			add(fmt.Sprintf("%s.accounts[%d].roleArn", key, i), "want an IAM role ARN, got %q", a.RoleARN)
		}
	}
}

// validateSources checks the sources section.
func validateSources(c *Config, add addFunc) {
	if l := c.Sources.Lookup; l != nil {
		validateTargets("sources.lookup", l.Regions, l.Accounts, "missing: name at least one Region", add)
		if l.Interval.D() < time.Second {
			add("sources.lookup.interval", "must be at least 1s")
		}
		if l.StartFrom.D() > 90*24*time.Hour {
			add("sources.lookup.startFrom", "LookupEvents keeps 90 days; got %s", l.StartFrom.D())
		}
	}
	if inv := c.Sources.Inventory; inv != nil {
		validateTargets("sources.inventory", inv.Regions, inv.Accounts, "missing: name at least one Region (or set sources.lookup.regions)", add)
		if inv.Interval.D() < 10*time.Second {
			add("sources.inventory.interval", "must be at least 10s; a scan reads every bucket (6h is the default)")
		}
		if inv.Rate < 0.1 || inv.Rate > 1000 {
			add("sources.inventory.rate", "must be between 0.1 and 1000 calls per second, got %v", inv.Rate)
		}
	}
	if s := c.Sources.SQS; s != nil {
		if !strings.HasPrefix(s.QueueURL, "http") {
			add("sources.sqs.queueURL", "want the queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
		}
		if s.Workers < 1 || s.Workers > 64 {
			add("sources.sqs.workers", "must be between 1 and 64")
		}
		if s.Visibility.D() < 2*time.Second || s.Visibility.D() > 12*time.Hour {
			add("sources.sqs.visibility", "must be between 2s and 12h (SQS's limits)")
		}
		if s.WaitTime.D() > 20*time.Second {
			add("sources.sqs.waitTime", "SQS long-polls for 20s at most")
		}
	}
	if k := c.Sources.Kafka; k != nil {
		kafkaCommon(add, "sources.kafka", k.Brokers, k.Topic, k.SASL)
		sessionTimeout(add, "sources.kafka", k.SessionTimeout.D())
	}
	if r := c.Pipeline.Repartition; r != nil {
		if r.Kafka == nil {
			add("pipeline.repartition.kafka", "missing: name the brokers and topic of the repartition")
		} else {
			kafkaCommon(add, "pipeline.repartition.kafka", r.Kafka.Brokers, r.Kafka.Topic, r.Kafka.SASL)
			sessionTimeout(add, "pipeline.repartition.kafka", r.Kafka.SessionTimeout.D())
			if k := c.Sources.Kafka; k != nil && k.Topic == r.Kafka.Topic {
				add("pipeline.repartition.kafka.topic", "must not be sources.kafka's topic %q: that one holds CloudTrail records", k.Topic)
			}
		}
	}
	if f := c.Sources.Files; f != nil && len(f.Paths) == 0 {
		add("sources.files.paths", "missing: name at least one file or folder")
	}
}

// validateSinks checks the sinks section.
func validateSinks(c *Config, add addFunc) {
	if k := c.Sinks.Kafka; k != nil {
		kafkaCommon(add, "sinks.kafka", k.Brokers, k.Topic, k.SASL)
		if !slices.Contains([]string{"", "v1", "ocsf"}, k.Format) {
			add("sinks.kafka.format", "unknown format %q (want v1 or ocsf)", k.Format)
		}
	}
	if o := c.Sinks.Stdout; o != nil && !slices.Contains([]string{"", "v1", "ocsf"}, o.Format) {
		add("sinks.stdout.format", "unknown format %q (want v1 or ocsf)", o.Format)
	}
	if r := c.Sinks.Remediate; r != nil {
		validateRemediate(r, add)
	}
	amNames := map[string]bool{}
	for i, a := range c.Sinks.Alertmanager {
		p := fmt.Sprintf("sinks.alertmanager[%d]", i)
		switch {
		case a.Name == "":
			add(p+".name", "missing")
		case amNames[a.Name]:
			add(p+".name", "duplicate name %q", a.Name)
		}
		amNames[a.Name] = true
		if u, err := url.Parse(a.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(p+".url", "want Alertmanager's http(s) URL, got %q", a.URL)
		}
		if _, err := rules.ParseSeverity(a.MinSeverity); err != nil {
			add(p+".minSeverity", "%v", err)
		}
		if a.ResolveAfter.D() < time.Minute {
			add(p+".resolveAfter", "must be at least 1m")
		}
		if (a.BasicAuth.Username != "") && a.BasicAuth.PasswordFile == "" && a.BasicAuth.PasswordEnv == "" {
			add(p+".basicAuth", "give passwordFile or passwordEnv with the username")
		}
		if a.BasicAuth.Username != "" && (a.BearerTokenFile != "" || a.BearerTokenEnv != "") {
			add(p+".bearerTokenFile", "basic auth or a bearer token, not both")
		}
	}
	if u := c.HTTP.ExternalURL; u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		add("http.externalURL", "want an http(s) URL, got %q", u)
	}
	names := map[string]bool{}
	for i, w := range c.Sinks.Webhooks {
		p := fmt.Sprintf("sinks.webhooks[%d]", i)
		if w.Name == "" {
			add(p+".name", "missing")
		} else if names[w.Name] {
			add(p+".name", "duplicate webhook name %q", w.Name)
		}
		names[w.Name] = true
		if (w.URL == "") == (w.URLFile == "") {
			add(p+".url", "give exactly one of url and urlFile")
		}
		if _, err := rules.ParseSeverity(w.MinSeverity); err != nil {
			add(p+".minSeverity", "%v", err)
		}
		if w.Concurrency < 1 || w.Concurrency > 64 {
			add(p+".concurrency", "must be between 1 and 64")
		}
		if !slices.Contains([]string{"", "json", "v1", "ocsf", "slack"}, w.Format) {
			add(p+".format", "unknown format %q (want v1, ocsf or slack)", w.Format)
		}
		if w.SecretFile == "" && w.SecretEnv == "" && w.Format != "slack" {
			add(p+".secretFile", "missing: webhooks are signed; give secretFile or secretEnv (format: slack may go unsigned)")
		}
		for j, r := range w.Rules {
			if rules.Lookup(r) == nil && !slices.ContainsFunc(c.CustomRules, func(cr rules.CustomRule) bool { return cr.ID == r }) {
				add(fmt.Sprintf("%s.rules[%d]", p, j), "unknown rule id %q", r)
			}
		}
	}
}

// validateCustomRules checks the custom rules' ids, severities and
// expressions' presence, and returns their ids.
func validateCustomRules(c *Config, add addFunc) []string {
	custom := make([]string, 0, len(c.CustomRules))
	for i, r := range c.CustomRules {
		p := fmt.Sprintf("customRules[%d]", i)
		if r.ID == "" {
			add(p+".id", "missing")
		} else if rules.Lookup(r.ID) != nil || slices.Contains(custom, r.ID) {
			add(p+".id", "duplicate rule id %q", r.ID)
		}
		custom = append(custom, r.ID)
		if r.Severity == 0 {
			add(p+".severity", "missing (info, low, medium, high or critical)")
		}
		if strings.TrimSpace(r.When) == "" {
			add(p+".when", "missing CEL expression")
		}
	}
	return custom
}

func sessionTimeout(add addFunc, p string, d time.Duration) {
	if d != 0 && (d < time.Second || d > 30*time.Minute) {
		add(p+".sessionTimeout", "must be between 1s and 30m, got %s", d)
	}
}

func kafkaCommon(add addFunc, p string, brokers []string, topic string, s SASL) {
	if len(brokers) == 0 {
		add(p+".brokers", "missing: name at least one broker host:port")
	}
	for i, b := range brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			add(fmt.Sprintf("%s.brokers[%d]", p, i), "want host:port, got %q", b)
		}
	}
	if topic == "" {
		add(p+".topic", "missing")
	}
	if s.Mechanism != "" && !slices.Contains([]string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "AWS_MSK_IAM"}, s.Mechanism) {
		add(p+".sasl.mechanism", "unknown mechanism %q (want PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM)", s.Mechanism)
	}
	if s.Mechanism == "PLAIN" || strings.HasPrefix(s.Mechanism, "SCRAM") {
		if s.Username == "" {
			add(p+".sasl.username", "missing for %s", s.Mechanism)
		}
		if (s.PasswordFile == "") == (s.PasswordEnv == "") {
			add(p+".sasl.passwordFile", "give exactly one of passwordFile and passwordEnv")
		}
	}
}

// remediable are the findings the remediate sink knows how to answer.
var remediable = []string{rules.EncryptionDeleted, rules.AlgorithmNotAllowed, rules.KMSAWSManagedKey, rules.SSECUnblocked,
	rules.BucketKeyDisabled, rules.KMSKeyNotAllowed, rules.KMSKeyForeignAccount}

func validateRemediate(r *Remediate, add addFunc) {
	for i, id := range r.Rules {
		if !slices.Contains(remediable, id) {
			add(fmt.Sprintf("sinks.remediate.rules[%d]", i), "%q is not a finding remediation answers (it answers %s)", id, strings.Join(remediable, ", "))
		}
	}
	if r.Rate < 0.1 || r.Rate > 50 {
		add("sinks.remediate.rate", "must be between 0.1 and 50 calls per second, got %v", r.Rate)
	}
	if r.RoleName != "" && !roleNameRe.MatchString(r.RoleName) {
		add("sinks.remediate.roleName", "%q is not an IAM role name", r.RoleName)
	}
	if !r.IsDryRun() && r.RoleName == "" && len(r.OwnRoleARNs) == 0 {
		add("sinks.remediate.roleName", "set it (a role only the sink uses) or ownRoleArns before dryRun: false, so the sink knows its own changes in the trail and cannot answer them")
	}
}

var roleNameRe = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
