package rules

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"

	"github.com/encwatch/encwatch/ingest"
)

// DefaultCostLimit bounds the work of one custom rule on one event (CEL
// cost units), so a slow expression cannot stall the pipeline.
const DefaultCostLimit = 100000

// CustomRule is an organisation's own rule: a CEL expression over the
// normalised event, as the configuration's customRules and a rule test
// case write it. A missing severity is an error of the configuration.
type CustomRule struct {
	ID          string   `yaml:"id"`
	Severity    Severity `yaml:"severity"`
	Summary     string   `yaml:"summary"`
	Remediation string   `yaml:"remediation"`
	When        string   `yaml:"when"`
}

// Compiled is a custom rule ready to run.
type Compiled struct {
	CustomRule
	prg cel.Program
	kms bool // the expression names kms, so it judges KMS lifecycle events
}

// JudgesKMS reports whether the rule names `kms` and so also sees KMS
// lifecycle events.
func (c *Compiled) JudgesKMS() bool { return c.kms }

// ExprEvent is `event` in a custom rule. What a record lacks is "".
type ExprEvent struct {
	ID           string    `cel:"id"`
	Name         string    `cel:"name"`
	Source       string    `cel:"source"`
	Region       string    `cel:"region"`
	Account      string    `cel:"account"`
	ErrorCode    string    `cel:"errorCode"`
	ErrorMessage string    `cel:"errorMessage"`
	SourceIP     string    `cel:"sourceIP"`
	UserAgent    string    `cel:"userAgent"`
	Time         time.Time `cel:"time"`
	Actor        ExprActor `cel:"actor"`
}

// ExprActor is `event.actor`.
type ExprActor struct {
	Type             string `cel:"type"`
	ARN              string `cel:"arn"`
	AccountID        string `cel:"accountId"`
	SessionIssuerARN string `cel:"sessionIssuerArn"`
	PrincipalID      string `cel:"principalId"`
	InvokedBy        string `cel:"invokedBy"`
}

// ExprBucket is `bucket`.
type ExprBucket struct {
	Name    string `cel:"name"`
	Type    string `cel:"type"`
	Zone    string `cel:"zone"`
	ARN     string `cel:"arn"`
	Account string `cel:"account"`
	Region  string `cel:"region"`
}

// ExprEncryption is `encryption`: what a PutBucketEncryption set.
type ExprEncryption struct {
	Rules []ExprRule `cel:"rules"`
	// SSECBlocked: some rule lists SSE-C in BlockedEncryptionTypes.
	SSECBlocked bool `cel:"sseCBlocked"`
	// NamesBlocked: some rule names BlockedEncryptionTypes at all.
	NamesBlocked bool `cel:"namesBlocked"`
}

// ExprRule is one of `encryption.rules`.
type ExprRule struct {
	Algorithm        string `cel:"algorithm"`
	KMSKeyID         string `cel:"kmsKeyId"`
	BucketKeyEnabled bool   `cel:"bucketKeyEnabled"`
	// BlockedEncryptionTypes is what the rule's BlockedEncryptionTypes
	// names (SSE-C, NONE); empty when it names none.
	BlockedEncryptionTypes []string `cel:"blockedEncryptionTypes"`
	// KMSKeyAccount is the account the key belongs to when it is an ARN,
	// else "".
	KMSKeyAccount string `cel:"kmsKeyAccount"`
}

// ExprKMS is `kms` in a custom rule: the key of a KMS lifecycle event
// (event.name ScheduleKeyDeletion, DisableKey, DeleteKey, CancelKeyDeletion
// or EnableKey). Only rules that name `kms` see these events; every field
// is "" or 0 for the others.
type ExprKMS struct {
	KeyID               string `cel:"keyId"`
	KeyARN              string `cel:"keyArn"`
	KeyAccount          string `cel:"keyAccount"`
	KeyState            string `cel:"keyState"`
	DeletionDate        string `cel:"deletionDate"`
	PendingWindowInDays int    `cel:"pendingWindowInDays"`
}

// celEnv is built once: building it costs milliseconds, and reloads compile
// rules from another goroutine.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	str := func(f func(string) string) cel.OverloadOpt {
		return cel.UnaryBinding(func(v ref.Val) ref.Val { return types.String(f(string(v.(types.String)))) })
	}
	return cel.NewEnv(
		ext.NativeTypes(reflect.TypeOf(ExprEvent{}), reflect.TypeOf(ExprBucket{}), reflect.TypeOf(ExprEncryption{}), reflect.TypeOf(ExprKMS{}), types.ParseStructTags(true)),
		ext.Strings(),
		cel.Variable("event", cel.ObjectType("rules.ExprEvent")),
		cel.Variable("bucket", cel.ObjectType("rules.ExprBucket")),
		cel.Variable("encryption", cel.ObjectType("rules.ExprEncryption")),
		cel.Variable("kms", cel.ObjectType("rules.ExprKMS")),
		cel.Function("glob", cel.Overload("glob_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(func(s, p ref.Val) ref.Val {
				return types.Bool(Glob(string(p.(types.String)), string(s.(types.String))))
			}))),
		cel.Function("kmsKeyAccount", cel.Overload("kmsKeyAccount_string", []*cel.Type{cel.StringType}, cel.StringType, str(KeyAccount))),
		cel.Function("kmsKeyRegion", cel.Overload("kmsKeyRegion_string", []*cel.Type{cel.StringType}, cel.StringType, str(KeyRegion))),
		cel.Function("isAlias", cel.Overload("isAlias_string", []*cel.Type{cel.StringType}, cel.BoolType,
			cel.UnaryBinding(func(v ref.Val) ref.Val { return types.Bool(IsAlias(string(v.(types.String)))) }))),
	)
})

// CompileError is a custom rule that does not compile.
type CompileError struct {
	ID  string
	Msg string // CEL's message, with line and column in the expression
}

func (e *CompileError) Error() string { return "rule " + e.ID + ": " + e.Msg }

// Compile type-checks and plans a custom rule. The expression must be a
// bool; errors name the rule and the position in the expression.
func Compile(r CustomRule, costLimit uint64) (*Compiled, error) {
	if costLimit == 0 {
		costLimit = DefaultCostLimit
	}
	env, err := celEnv()
	if err != nil {
		return nil, fmt.Errorf("CEL environment: %w", err)
	}
	ast, iss := env.Compile(r.When)
	if iss.Err() != nil {
		return nil, &CompileError{ID: r.ID, Msg: strings.TrimSpace(iss.Err().Error())}
	}
	if ast.OutputType() != cel.BoolType {
		return nil, &CompileError{ID: r.ID, Msg: fmt.Sprintf("the expression gives %s; it must give bool", ast.OutputType())}
	}
	prg, err := env.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, &CompileError{ID: r.ID, Msg: err.Error()}
	}
	c := &Compiled{CustomRule: r, prg: prg}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name == "kms" {
			c.kms = true
		}
	}
	return c, nil
}

// ErrCostExceeded is returned (wrapped) when a rule ran past its cost limit.
var ErrCostExceeded = errors.New("cost limit exceeded")

// Match runs the rule on one event.
func (c *Compiled) Match(ev *ingest.Event) (bool, error) {
	out, _, err := c.prg.Eval(activation(ev))
	if err != nil {
		if strings.Contains(err.Error(), "cost limit") {
			return false, fmt.Errorf("rule %s: %w: %v", c.ID, ErrCostExceeded, err)
		}
		return false, fmt.Errorf("rule %s: %w", c.ID, err)
	}
	b, ok := out.Value().(bool)
	return ok && b, nil
}

func activation(ev *ingest.Event) map[string]any {
	enc := ExprEncryption{Rules: []ExprRule{}}
	for _, r := range ev.Encryption.Rules {
		blocked := r.BlockedEncryptionTypes
		if blocked == nil {
			blocked = []string{}
		}
		enc.Rules = append(enc.Rules, ExprRule{Algorithm: r.Algorithm, KMSKeyID: r.KMSKeyID, BucketKeyEnabled: r.BucketKeyEnabled,
			BlockedEncryptionTypes: blocked, KMSKeyAccount: KeyAccount(r.KMSKeyID)})
	}
	enc.SSECBlocked, enc.NamesBlocked = ev.Encryption.BlocksSSEC(), ev.Encryption.NamesBlocked()
	k := ev.KMS
	kms := ExprKMS{KeyID: k.KeyID, KeyARN: k.KeyARN, KeyAccount: KeyAccount(k.Key()), KeyState: k.KeyState, DeletionDate: k.DeletionDate,
		PendingWindowInDays: k.PendingWindowInDays}
	return map[string]any{
		"event": ExprEvent{ID: ev.ID, Name: ev.Name, Source: ev.Source, Region: ev.Region, Account: ev.Account, ErrorCode: ev.ErrorCode,
			ErrorMessage: ev.ErrorMsg, SourceIP: ev.SourceIP, UserAgent: ev.UserAgent, Time: ev.Time,
			Actor: ExprActor{Type: ev.Actor.Type, ARN: ev.Actor.ARN, AccountID: ev.Actor.AccountID, SessionIssuerARN: ev.Actor.IssuerARN,
				PrincipalID: ev.Actor.PrincipalID, InvokedBy: ev.Actor.InvokedBy}},
		"bucket": ExprBucket{Name: ev.Bucket.Name, Type: ev.Bucket.Type, Zone: ev.Bucket.Zone, ARN: ev.Bucket.ARN,
			Account: ev.Bucket.Account, Region: ev.Bucket.Region},
		"encryption": enc,
		"kms":        kms,
	}
}
