package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "ENCWATCH_"

// Problem is one error in a configuration: where it is and what is wrong.
type Problem struct {
	File string
	Line int    // 0 when the value came from the environment or the key is absent
	Env  string // the environment variable the value came from, if any
	Key  string // dotted key path, e.g. sources.lookup.regions[1]
	Msg  string
}

func (p Problem) String() string {
	where := p.File
	switch {
	case p.Env != "":
		where = "environment variable " + p.Env
	case p.Line > 0:
		where = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Key != "" {
		return fmt.Sprintf("%s: %s: %s", where, p.Key, p.Msg)
	}
	return fmt.Sprintf("%s: %s", where, p.Msg)
}

// Error lists every problem found in a configuration.
type Error struct{ Problems []Problem }

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads a configuration file, applies ENCWATCH_* overrides from env
// (nil means none) and defaults, and validates it. An empty path means no
// file: defaults and the environment only. Problems come back as *Error.
func Load(path string, env []string) (Config, error) {
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return Config{}, err
		}
	}
	return Parse(path, data, env)
}

// Parse is Load on bytes already read; name is used in messages.
func Parse(name string, data []byte, env []string) (Config, error) {
	cfg := Default()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return cfg, &Error{[]Problem{{File: name, Line: yamlLine(err.Error()), Msg: strings.TrimPrefix(err.Error(), "yaml: ")}}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	if root.Kind == 0 { // empty file
		root = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	if root.Kind != yaml.MappingNode {
		return cfg, &Error{[]Problem{{File: name, Line: root.Line, Msg: "the configuration must be a mapping of sections"}}}
	}
	envNames, err := applyEnv(root, env)
	if err != nil {
		return cfg, &Error{[]Problem{{File: name, Msg: err.Error()}}}
	}
	idx := indexNodes(root)
	var probs []Problem
	if err := decodeNode(root, &cfg); err != nil {
		probs = append(probs, typeProblems(name, err, idx, envNames)...)
	}
	for _, sec := range []string{"sinks.stdout"} {
		if _, ok := idx.byPath[sec]; ok && cfg.Sinks.Stdout == nil {
			cfg.Sinks.Stdout = &Stdout{}
		}
	}
	applySectionDefaults(&cfg)
	// Validate even after decode errors, so one run names every problem,
	// but say nothing more about keys that already failed to decode.
	reported := map[string]bool{}
	for _, p := range probs {
		reported[p.Key] = true
	}
	for _, fe := range validate(&cfg) {
		if !coveredBy(fe.Path, reported) {
			probs = append(probs, idx.problem(name, fe.Path, fe.Msg, envNames))
		}
	}
	if len(probs) > 0 {
		return cfg, &Error{probs}
	}
	return cfg, nil
}

// decodeNode decodes n into v rejecting unknown keys. yaml.v3 checks
// unknown keys only through a Decoder, so the node is checked first.
func decodeNode(n *yaml.Node, v any) error {
	var errs []string
	checkKnown(n, reflect.TypeOf(v).Elem(), &errs)
	if err := n.Decode(v); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			errs = append(errs, te.Errors...)
		} else {
			return err
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

// checkKnown reports mapping keys that no field of t takes.
func checkKnown(n *yaml.Node, t reflect.Type, errs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				fields[tag] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, k.Value, t.Name()))
				continue
			}
			checkKnown(val, ft, errs)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for _, c := range n.Content {
			checkKnown(c, t.Elem(), errs)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 1; i < len(n.Content); i += 2 {
			checkKnown(n.Content[i], t.Elem(), errs)
		}
	}
}

var lineRe = regexp.MustCompile(`line (-?\d+): `)

func yamlLine(msg string) int {
	if m := lineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

var unknownRe = regexp.MustCompile(`field (\S+) not found in type (\S+)`)

// typeProblems turns the decoder's messages into problems with keys.
func typeProblems(file string, err error, idx *nodeIndex, envNames map[int]string) []Problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var out []Problem
	for _, m := range msgs {
		line := yamlLine(m)
		msg := lineRe.ReplaceAllString(m, "")
		var key string
		if u := unknownRe.FindStringSubmatch(msg); u != nil {
			key = idx.keyOnLine(line, u[1], "")
			msg = "unknown key " + strconv.Quote(u[1])
			if isSecretName(u[1]) {
				msg += ": secrets are not allowed in the configuration file; give a file (…File) or an environment variable (…Env) instead"
			}
		} else {
			key = idx.keyOnLine(line, "", valueIn(msg))
			msg = strings.Replace(msg, "cannot unmarshal", "wrong type: cannot read", 1)
		}
		p := Problem{File: file, Line: line, Key: key, Msg: msg}
		if line < 0 {
			p.Line, p.Env = 0, envNames[line]
		}
		out = append(out, p)
	}
	return out
}

func isSecretName(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}

// nodeIndex maps key paths to their lines and back.
type nodeIndex struct {
	byPath  map[string]*yaml.Node // path -> key node (or item node for sequences)
	valueOf map[string]*yaml.Node // path -> value node
	paths   []string
}

func indexNodes(root *yaml.Node) *nodeIndex {
	idx := &nodeIndex{byPath: map[string]*yaml.Node{}, valueOf: map[string]*yaml.Node{}}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				idx.byPath[p] = n.Content[i]
				idx.valueOf[p] = n.Content[i+1]
				idx.paths = append(idx.paths, p)
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				idx.byPath[p] = c
				idx.valueOf[p] = c
				idx.paths = append(idx.paths, p)
				walk(c, p)
			}
		}
	}
	walk(root, "")
	sort.Strings(idx.paths)
	return idx
}

// keyOnLine returns the key path an error on a line is about: the key
// named name if given; else the key whose value is the quoted value (flow
// mappings put several keys on one line); else the deepest key there.
func (idx *nodeIndex) keyOnLine(line int, name, value string) string {
	best, byValue := "", ""
	for _, p := range idx.paths {
		if idx.byPath[p].Line != line {
			continue
		}
		if name != "" && (p == name || strings.HasSuffix(p, "."+name)) {
			return p
		}
		if v := idx.valueOf[p]; value != "" && v != nil && v.Kind == yaml.ScalarNode && v.Value == value && byValue == "" {
			byValue = p
		}
		if len(p) > len(best) {
			best = p
		}
	}
	if byValue != "" {
		return byValue
	}
	return best
}

var quotedValue = regexp.MustCompile("`([^`]*)`" + `|"([^"]*)"`)

// valueIn returns the value an error message quotes, if any.
func valueIn(msg string) string {
	m := quotedValue.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	return m[1] + m[2]
}

// problem locates a validation problem at a key path, or at its nearest
// ancestor present in the file.
func (idx *nodeIndex) problem(file, path, msg string, envNames map[int]string) Problem {
	p := Problem{File: file, Key: path, Msg: msg}
	for q := path; q != ""; q = parent(q) {
		if n, ok := idx.byPath[q]; ok {
			if n.Line < 0 {
				p.Env = envNames[n.Line]
			} else {
				p.Line = n.Line
			}
			break
		}
	}
	return p
}

func parent(path string) string {
	i := max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['))
	if i < 0 {
		return ""
	}
	return path[:i]
}

func applySectionDefaults(c *Config) {
	if l := c.Sources.Lookup; l != nil {
		setDur(&l.Interval, 30*time.Second)
		setDur(&l.Overlap, 20*time.Minute)
		setDur(&l.StartFrom, 24*time.Hour)
	}
	if s := c.Sources.SQS; s != nil {
		if s.Workers == 0 {
			s.Workers = 4
		}
		if s.MaxReceives == 0 {
			s.MaxReceives = 5
		}
		setDur(&s.Visibility, 60*time.Second)
		setDur(&s.WaitTime, 20*time.Second)
	}
	if f := c.Sources.Files; f != nil {
		setDur(&f.Interval, 5*time.Second)
	}
	setDur(&c.Reload.Interval, 5*time.Second)
	if c.Limits.CustomRuleCost == 0 {
		c.Limits.CustomRuleCost = rules.DefaultCostLimit
	}
	if c.Limits.MaxRecordBytes == 0 {
		c.Limits.MaxRecordBytes = ingest.DefaultMaxRecordBytes
	}
	if c.Limits.MaxDecompressedBytes == 0 {
		c.Limits.MaxDecompressedBytes = ingest.DefaultMaxInputBytes
	}
	if c.Limits.MaxNesting == 0 {
		c.Limits.MaxNesting = ingest.DefaultMaxNesting
	}
	if c.Limits.MaxRulesPerRequest == 0 {
		c.Limits.MaxRulesPerRequest = ingest.DefaultMaxRules
	}
	if k := c.Sources.Kafka; k != nil && k.Group == "" {
		k.Group = "encwatch"
	}
	for i := range c.Sinks.Webhooks {
		w := &c.Sinks.Webhooks[i]
		setDur(&w.Timeout, 10*time.Second)
		if w.MinSeverity == "" {
			w.MinSeverity = "info"
		}
	}
}

func setDur(d *rules.Duration, v time.Duration) {
	if *d == 0 {
		*d = rules.Duration(v)
	}
}

var regionRe = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-\d+$`)

// validate checks what types cannot: required keys, known names, ranges.
func validate(c *Config) []rules.FieldError {
	var errs []rules.FieldError
	add := func(path, format string, a ...any) {
		errs = append(errs, rules.FieldError{Path: path, Msg: fmt.Sprintf(format, a...)})
	}
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
	if l := c.Sources.Lookup; l != nil {
		if len(l.Regions) == 0 {
			add("sources.lookup.regions", "missing: name at least one Region")
		}
		for i, r := range l.Regions {
			if !regionRe.MatchString(r) {
				add(fmt.Sprintf("sources.lookup.regions[%d]", i), "%q is not a Region name", r)
			}
		}
		if l.Interval.D() < time.Second {
			add("sources.lookup.interval", "must be at least 1s")
		}
		if l.StartFrom.D() > 90*24*time.Hour {
			add("sources.lookup.startFrom", "LookupEvents keeps 90 days; got %s", l.StartFrom.D())
		}
		for i, a := range l.Accounts {
			if !strings.HasPrefix(a.RoleARN, "arn:") || !strings.Contains(a.RoleARN, ":role/") {
				add(fmt.Sprintf("sources.lookup.accounts[%d].roleArn", i), "want an IAM role ARN, got %q", a.RoleARN)
			}
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
	}
	if f := c.Sources.Files; f != nil && len(f.Paths) == 0 {
		add("sources.files.paths", "missing: name at least one file or folder")
	}
	if k := c.Sinks.Kafka; k != nil {
		kafkaCommon(add, "sinks.kafka", k.Brokers, k.Topic, k.SASL)
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
		if !slices.Contains([]string{"", "json", "slack"}, w.Format) {
			add(p+".format", "unknown format %q (want json or slack)", w.Format)
		}
		if w.SecretFile == "" && w.SecretEnv == "" && w.Format != "slack" {
			add(p+".secretFile", "missing: webhooks are signed; give secretFile or secretEnv (format: slack may go unsigned)")
		}
		for j, r := range w.Rules {
			if rules.Lookup(r) == nil && !slices.ContainsFunc(c.CustomRules, func(cr CustomRule) bool { return cr.ID == r }) {
				add(fmt.Sprintf("%s.rules[%d]", p, j), "unknown rule id %q", r)
			}
		}
	}
	custom := make([]string, 0, len(c.CustomRules))
	for i, r := range c.CustomRules {
		p := fmt.Sprintf("customRules[%d]", i)
		if r.ID == "" {
			add(p+".id", "missing")
		} else if rules.Lookup(r.ID) != nil || slices.Contains(custom, r.ID) {
			add(p+".id", "duplicate rule id %q", r.ID)
		}
		custom = append(custom, r.ID)
		sev, err := rules.ParseSeverity(r.Severity)
		if err != nil {
			add(p+".severity", "%v", err)
		}
		if strings.TrimSpace(r.When) == "" {
			add(p+".when", "missing CEL expression")
			continue
		}
		compiled, err := rules.Compile(rules.CustomRule{ID: r.ID, Severity: sev, Summary: r.Summary, Remediation: r.Remediation, When: r.When}, c.Limits.CustomRuleCost)
		if err != nil {
			add(p+".when", "%s", strings.ReplaceAll(err.Error(), "<input>:", "expression "))
			continue
		}
		c.Compiled = append(c.Compiled, compiled)
	}
	for _, fe := range c.Policy.Validate(custom...) {
		add("policy."+fe.Path, "%s", fe.Msg)
	}
	return errs
}

func kafkaCommon(add func(string, string, ...any), p string, brokers []string, topic string, s SASL) {
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

// coveredBy reports whether path or one of its ancestors was reported.
func coveredBy(path string, reported map[string]bool) bool {
	for q := path; q != ""; q = parent(q) {
		if reported[q] {
			return true
		}
	}
	return false
}
