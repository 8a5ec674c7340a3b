package deploy_test

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"go.yaml.in/yaml/v3"

	"github.com/encwatch/encwatch/cmd/config"
)

// No person can run CloudFormation here: these tests are the strongest
// check that runs. Each template is parsed by goformation (every resource
// type known, every property of its schema, with the right types), its
// references resolve, its parameters are described and constrained, its
// IAM statements are least privilege and the same as deploy/iam's, the
// task definition matches deploy/ecs's, and the configuration the stack
// builds is one encwatch accepts.

var templates = []string{"cloudformation/encwatch.yaml", "cloudformation/member-role.yaml"}

func rawTemplate(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func section(m map[string]any, name string) map[string]any {
	s, _ := m[name].(map[string]any)
	return s
}

func TestTemplatesParse(t *testing.T) {
	all := cloudformation.AllResources()
	for _, path := range templates {
		tpl, err := goformation.Open(path)
		if err != nil {
			t.Fatalf("%s: goformation: %v", path, err)
		}
		raw := rawTemplate(t, path)
		resources := section(raw, "Resources")
		if len(tpl.Resources) != len(resources) || len(resources) == 0 {
			t.Errorf("%s: goformation read %d resources of %d", path, len(tpl.Resources), len(resources))
		}
		for name, r := range resources {
			res := r.(map[string]any)
			typ, _ := res["Type"].(string)
			proto, ok := all[typ]
			if !ok {
				t.Errorf("%s: %s: unknown resource type %q", path, name, typ)
				continue
			}
			// encoding/json matches property names without regard to
			// case; CloudFormation does not.
			props, _ := res["Properties"].(map[string]any)
			checkKeys(t, path+": "+name, reflect.TypeOf(proto).Elem(), props)
		}
	}
}

// checkKeys fails for a property whose name is not exactly one of the
// schema's (goformation's struct's json names), recursively.
func checkKeys(t *testing.T, where string, typ reflect.Type, v any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			checkKeys(t, fmt.Sprintf("%s[%d]", where, i), typ, e)
		}
	case map[string]any:
		if isIntrinsic(x) || typ.Kind() != reflect.Struct {
			return
		}
		fields := map[string]reflect.Type{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			if n := strings.Split(f.Tag.Get("json"), ",")[0]; n != "" && n != "-" {
				fields[n] = f.Type
			}
		}
		for k, e := range x {
			ft, ok := fields[k]
			if !ok {
				t.Errorf("%s: unknown property %q", where, k)
				continue
			}
			checkKeys(t, where+"."+k, ft, e)
		}
	}
}

func isIntrinsic(m map[string]any) bool {
	if len(m) != 1 {
		return false
	}
	for k := range m {
		return k == "Ref" || k == "Condition" || strings.HasPrefix(k, "Fn::")
	}
	return false
}

var subVar = regexp.MustCompile(`\$\{([^}!]+)\}`)

// TestTemplateReferences: every Ref, Fn::GetAtt, ${} of Fn::Sub and
// Condition names a parameter, resource, condition or pseudo parameter.
func TestTemplateReferences(t *testing.T) {
	for _, path := range templates {
		raw := rawTemplate(t, path)
		params, resources, conds := section(raw, "Parameters"), section(raw, "Resources"), section(raw, "Conditions")
		known := func(name string) bool {
			_, p := params[name]
			_, r := resources[name]
			return p || r || strings.HasPrefix(name, "AWS::")
		}
		var walk func(where string, v any, locals map[string]any)
		walk = func(where string, v any, locals map[string]any) {
			switch x := v.(type) {
			case []any:
				for _, e := range x {
					walk(where, e, locals)
				}
			case map[string]any:
				for k, e := range x {
					switch k {
					case "Ref":
						if !known(fmt.Sprint(e)) {
							t.Errorf("%s: %s: Ref to unknown %v", path, where, e)
						}
					case "Fn::GetAtt":
						parts := strs(e)
						if len(parts) != 2 || resources[parts[0]] == nil {
							t.Errorf("%s: %s: Fn::GetAtt %v names no resource", path, where, e)
						}
					case "Condition", "Fn::If":
						// An IAM statement's Condition is a map, not a
						// reference to a template condition.
						name, isRef := e.(string)
						if k == "Fn::If" {
							name, isRef = fmt.Sprint(e.([]any)[0]), true
						}
						if _, ok := conds[name]; isRef && !ok {
							t.Errorf("%s: %s: unknown condition %q", path, where, name)
						}
					case "Fn::Sub":
						s, vars := e, map[string]any{}
						if l, ok := e.([]any); ok {
							s, vars = l[0], l[1].(map[string]any)
							walk(where, l[1], locals)
						}
						for _, m := range subVar.FindAllStringSubmatch(fmt.Sprint(s), -1) {
							name := strings.Split(m[1], ".")[0]
							if _, ok := vars[name]; !ok && !known(name) {
								t.Errorf("%s: %s: Fn::Sub names unknown ${%s}", path, where, m[1])
							}
						}
						continue
					}
					walk(where, e, locals)
				}
			}
		}
		for name, r := range resources {
			res := r.(map[string]any)
			if c, ok := res["Condition"]; ok {
				if _, ok := conds[fmt.Sprint(c)]; !ok {
					t.Errorf("%s: %s: unknown condition %v", path, name, c)
				}
			}
			for _, d := range strs(res["DependsOn"]) {
				if resources[d] == nil {
					t.Errorf("%s: %s depends on unknown %s", path, name, d)
				}
			}
			walk(name, res["Properties"], nil)
		}
		walk("Outputs", raw["Outputs"], nil)
		walk("Conditions", conds, nil)
	}
}

// TestTemplateParameters: each parameter says what it is and constrains
// what it takes.
func TestTemplateParameters(t *testing.T) {
	for _, path := range templates {
		for name, p := range section(rawTemplate(t, path), "Parameters") {
			m := p.(map[string]any)
			if d, _ := m["Description"].(string); len(d) < 20 {
				t.Errorf("%s: parameter %s: no description", path, name)
			}
			typ := fmt.Sprint(m["Type"])
			_, pattern := m["AllowedPattern"]
			_, values := m["AllowedValues"]
			if !pattern && !values && !strings.HasPrefix(typ, "AWS::") && !strings.HasPrefix(typ, "List<AWS::") {
				t.Errorf("%s: parameter %s (%s): no AllowedPattern or AllowedValues", path, name, typ)
			}
		}
	}
}

// statements returns the IAM statements of a template's resource, by Sid,
// whatever condition (Fn::If) guards them.
func statements(t *testing.T, raw map[string]any, resource string) map[string]map[string]any {
	t.Helper()
	res := section(section(raw, "Resources"), resource)
	if res == nil {
		t.Fatalf("no resource %s", resource)
	}
	out := map[string]map[string]any{}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			if sid, ok := x["Sid"].(string); ok && x["Action"] != nil {
				out[sid] = x
				return
			}
			if ifs, ok := x["Fn::If"].([]any); ok {
				walk(ifs[1:])
				return
			}
			for k, e := range x {
				if k != "AssumeRolePolicyDocument" {
					walk(e)
				}
			}
		}
	}
	walk(res["Properties"])
	return out
}

func sortedActions(v any) []string {
	a := strs(v)
	sort.Strings(a)
	return a
}

// TestTemplateIAM: no wildcard action, "*" only as the resource of actions
// that take no other, and the same statements (by Sid, the same actions)
// as deploy/iam's JSON, so the two cannot drift apart.
func TestTemplateIAM(t *testing.T) {
	stack, members := rawTemplate(t, templates[0]), rawTemplate(t, templates[1])
	var task policyDoc
	readJSON(t, "iam/task-role-policy.json", &task)
	var reader, remediateRole struct {
		Policies []struct{ PolicyDocument policyDoc }
	}
	readJSON(t, "iam/reader-role.json", &reader)
	readJSON(t, "iam/remediate-role.json", &remediateRole)
	pairs := []struct {
		name string
		json policyDoc
		tpl  map[string]map[string]any
	}{
		{"task role", task, statements(t, stack, "TaskRole")},
		{"reader role", reader.Policies[0].PolicyDocument, statements(t, members, "ReaderRole")},
		{"remediation role", remediateRole.Policies[0].PolicyDocument, statements(t, members, "RemediationRole")},
	}
	for _, p := range pairs {
		seen := map[string]bool{}
		for _, s := range p.json.Statement {
			seen[s.Sid] = true
			ts, ok := p.tpl[s.Sid]
			if !ok {
				t.Errorf("%s: statement %s is in deploy/iam but not in the template", p.name, s.Sid)
				continue
			}
			if a, b := sortedActions(s.Action), sortedActions(ts["Action"]); !slices.Equal(a, b) {
				t.Errorf("%s: %s: deploy/iam grants %v, the template %v", p.name, s.Sid, a, b)
			}
		}
		for sid, s := range p.tpl {
			if !seen[sid] {
				t.Errorf("%s: statement %s is in the template but not in deploy/iam", p.name, sid)
			}
			for _, a := range strs(s["Action"]) {
				if strings.Contains(a, "*") {
					t.Errorf("%s: %s: wildcard action %s", p.name, sid, a)
				}
				if r, _ := s["Resource"].(string); r == "*" && !slices.Contains(unscoped, a) {
					t.Errorf("%s: %s: %s on Resource \"*\" though it can be scoped", p.name, sid, a)
				}
			}
		}
	}
	// The other roles and policies of the stack: no wildcard actions.
	for _, res := range []string{"ExecutionRole", "TrailQueuePolicyForTopic", "TrailQueuePolicyForBucket"} {
		for sid, s := range statements(t, stack, res) {
			for _, a := range strs(s["Action"]) {
				if strings.Contains(a, "*") {
					t.Errorf("%s: %s: wildcard action %s", res, sid, a)
				}
			}
		}
	}
}

// TestStackTaskDefinition: the stack's task definition has what
// deploy/ecs/task-definition.json has and TestTaskDefinition checks.
func TestStackTaskDefinition(t *testing.T) {
	tpl, err := goformation.Open(templates[0])
	if err != nil {
		t.Fatal(err)
	}
	tds := tpl.GetAllECSTaskDefinitionResources()
	td := tds["TaskDefinition"]
	if td == nil || len(td.ContainerDefinitions) != 1 {
		t.Fatalf("task definitions %v", tds)
	}
	var want struct {
		NetworkMode             string   `json:"networkMode"`
		RequiresCompatibilities []string `json:"requiresCompatibilities"`
		CPU                     string   `json:"cpu"`
		Memory                  string   `json:"memory"`
		ContainerDefinitions    []struct {
			User                   string `json:"user"`
			ReadonlyRootFilesystem bool   `json:"readonlyRootFilesystem"`
			StopTimeout            int    `json:"stopTimeout"`
			Command                []string
			MountPoints            []struct{ ContainerPath string }
			LogConfiguration       struct{ LogDriver string }
			HealthCheck            struct {
				Command                                 []string
				Interval, Timeout, Retries, StartPeriod int
			}
			PortMappings []struct{ ContainerPort int }
		} `json:"containerDefinitions"`
	}
	readJSON(t, "ecs/task-definition.json", &want)
	w, c := want.ContainerDefinitions[0], td.ContainerDefinitions[0]
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"network mode", deref(td.NetworkMode), want.NetworkMode},
		{"compatibilities", td.RequiresCompatibilities, want.RequiresCompatibilities},
		{"cpu", deref(td.Cpu), want.CPU},
		{"memory", deref(td.Memory), want.Memory},
		{"user", deref(c.User), w.User},
		{"read-only root", c.ReadonlyRootFilesystem != nil && *c.ReadonlyRootFilesystem, w.ReadonlyRootFilesystem},
		{"stopTimeout", c.StopTimeout != nil && *c.StopTimeout == w.StopTimeout, true},
		{"command", c.Command, w.Command},
		{"log driver", c.LogConfiguration != nil && c.LogConfiguration.LogDriver == w.LogConfiguration.LogDriver, true},
		{"health check", c.HealthCheck != nil && slices.Equal(c.HealthCheck.Command, w.HealthCheck.Command), true},
		{"port", len(c.PortMappings) == 1 && c.PortMappings[0].ContainerPort != nil && *c.PortMappings[0].ContainerPort == w.PortMappings[0].ContainerPort, true},
		{"state mount", len(c.MountPoints) == 1 && deref(c.MountPoints[0].ContainerPath) == w.MountPoints[0].ContainerPath, true},
		{"EFS in transit encryption and IAM", len(td.Volumes) == 1 && td.Volumes[0].EFSVolumeConfiguration != nil &&
			deref(td.Volumes[0].EFSVolumeConfiguration.TransitEncryption) == "ENABLED" &&
			td.Volumes[0].EFSVolumeConfiguration.AuthorizationConfig != nil && deref(td.Volumes[0].EFSVolumeConfiguration.AuthorizationConfig.IAM) == "ENABLED", true},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s: the stack has %v, deploy/ecs %v", ch.what, ch.got, ch.want)
		}
	}
	svc := tpl.GetAllECSServiceResources()["Service"]
	if svc == nil || svc.DeploymentConfiguration == nil || *svc.DeploymentConfiguration.MaximumPercent != 100 || *svc.DesiredCount != 1 {
		t.Error("the service must run one task at a time (MaximumPercent 100, DesiredCount 1): the state is not shared")
	}
}

// evaluator renders a template value for given parameter values, as
// CloudFormation would: Ref, Fn::Sub, Fn::Join, Fn::If, Fn::Select,
// Fn::GetAtt and the condition functions.
type evaluator struct {
	params map[string]any
	conds  map[string]any
	res    map[string]any
}

type noValue struct{}

func (e *evaluator) cond(name string) bool { return e.truth(e.conds[name]) }

func (e *evaluator) truth(v any) bool {
	m := v.(map[string]any)
	for k, a := range m {
		l, _ := a.([]any)
		switch k {
		case "Fn::Equals":
			return fmt.Sprint(e.eval(l[0])) == fmt.Sprint(e.eval(l[1]))
		case "Fn::Not":
			return !e.truth(l[0])
		case "Fn::And":
			return !slices.ContainsFunc(l, func(x any) bool { return !e.truth(x) })
		case "Fn::Or":
			return slices.ContainsFunc(l, e.truth)
		case "Condition":
			return e.cond(fmt.Sprint(a))
		}
	}
	panic(fmt.Sprintf("not a condition: %v", v))
}

func (e *evaluator) ref(name string) any {
	if v, ok := e.params[name]; ok {
		return v
	}
	switch name {
	case "AWS::Region":
		return "us-east-1"
	case "AWS::AccountId":
		return "111122223333"
	case "AWS::Partition":
		return "aws"
	case "AWS::StackName":
		return "encwatch"
	case "AWS::NoValue":
		return noValue{}
	}
	if name == "TrailQueue" {
		return "https://sqs.us-east-1.amazonaws.com/111122223333/encwatch-trail-logs"
	}
	return "ref-" + name
}

func (e *evaluator) eval(v any) any {
	switch x := v.(type) {
	case []any:
		var out []any
		for _, el := range x {
			if r := e.eval(el); r != (noValue{}) {
				out = append(out, r)
			}
		}
		return out
	case map[string]any:
		if isIntrinsic(x) {
			for k, a := range x {
				return e.intrinsic(k, a)
			}
		}
		out := map[string]any{}
		for k, el := range x {
			if r := e.eval(el); r != (noValue{}) {
				out[k] = r
			}
		}
		return out
	}
	return v
}

func (e *evaluator) intrinsic(k string, a any) any {
	l, _ := a.([]any)
	switch k {
	case "Ref":
		return e.ref(fmt.Sprint(a))
	case "Fn::GetAtt":
		return "arn-of-" + strings.Join(strs(a), ".")
	case "Fn::If":
		if e.cond(fmt.Sprint(l[0])) {
			return e.eval(l[1])
		}
		return e.eval(l[2])
	case "Fn::Join":
		var parts []string
		for _, p := range e.eval(l[1]).([]any) {
			parts = append(parts, fmt.Sprint(p))
		}
		return strings.Join(parts, fmt.Sprint(e.eval(l[0])))
	case "Fn::Select":
		return e.eval(l[1]).([]any)[l[0].(int)]
	case "Fn::Sub":
		s, vars := fmt.Sprint(a), map[string]any{}
		if l != nil {
			s, vars = fmt.Sprint(l[0]), e.eval(l[1]).(map[string]any)
		}
		return subVar.ReplaceAllStringFunc(s, func(m string) string {
			name := m[2 : len(m)-1]
			if v, ok := vars[name]; ok {
				return fmt.Sprint(v)
			}
			if strings.Contains(name, ".") {
				return "arn-of-" + name
			}
			return fmt.Sprint(e.ref(name))
		})
	}
	panic("intrinsic " + k)
}

// stackConfig renders the configuration the stack hands the task for
// parameter values over the defaults, and the task's environment.
func stackConfig(t *testing.T, over map[string]any) (string, map[string]any) {
	t.Helper()
	raw := rawTemplate(t, templates[0])
	params := map[string]any{}
	for name, p := range section(raw, "Parameters") {
		m := p.(map[string]any)
		d := m["Default"]
		if m["Type"] == "CommaDelimitedList" || strings.HasPrefix(fmt.Sprint(m["Type"]), "List<") {
			var l []any
			for _, s := range strings.Split(fmt.Sprint(d), ",") {
				l = append(l, s)
			}
			d = l
		}
		params[name] = d
	}
	params["Subnets"] = []any{"subnet-a", "subnet-b"}
	for k, v := range over {
		params[k] = v
	}
	e := &evaluator{params: params, conds: section(raw, "Conditions"), res: section(raw, "Resources")}
	td := e.eval(section(section(raw, "Resources"), "TaskDefinition")["Properties"]).(map[string]any)
	c := td["ContainerDefinitions"].([]any)[0].(map[string]any)
	env := map[string]any{}
	for _, kv := range c["Environment"].([]any) {
		m := kv.(map[string]any)
		env[fmt.Sprint(m["Name"])] = m["Value"]
	}
	for _, kv := range c["Secrets"].([]any) {
		m := kv.(map[string]any)
		env[fmt.Sprint(m["Name"])] = "secret:" + fmt.Sprint(m["ValueFrom"])
	}
	y, _ := env[config.YAMLEnv].(string)
	return y, env
}

// TestStackConfig: for several parameter sets, the configuration the stack
// builds is one encwatch accepts, with what the parameters ask for.
func TestStackConfig(t *testing.T) {
	tests := []struct {
		name  string
		over  map[string]any
		check func(config.Config) string
	}{
		{"defaults", nil, func(c config.Config) string {
			if c.Sources.Inventory == nil || c.Sources.SQS != nil || c.Sinks.Remediate != nil || len(c.Sources.Lookup.Accounts) != 0 {
				return "want the inventory on, no trail, no remediation, the own account"
			}
			return ""
		}},
		{"organisation", map[string]any{"MemberAccountIds": []any{"444455556666", "777788889999"}, "Regions": []any{"us-east-1", "eu-west-1"},
			"TrailBucketName": "org-trail", "TrailTopicArn": "arn:aws:sns:us-east-1:111122223333:trail", "Inventory": "false",
			"KafkaBrokers": "b-1:9096,b-2:9096", "KafkaPasswordSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:k",
			"WebhookUrl": "https://hooks.example.com/x", "WebhookSecretArn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:w",
			"Remediation": "dry-run"}, func(c config.Config) string {
			a := c.Sources.Lookup.Accounts
			switch {
			case len(a) != 2 || a[1].RoleARN != "arn:aws:iam::777788889999:role/encwatch-reader" || a[0].ExternalID != "encwatch":
				return fmt.Sprintf("accounts %+v", a)
			case c.Sources.SQS == nil || !strings.HasSuffix(c.Sources.SQS.QueueURL, "/encwatch-trail-logs"):
				return "want the stack's queue"
			case c.Sources.Inventory != nil || len(c.Sources.Lookup.Regions) != 2:
				return "want no inventory and two Regions"
			case c.Sinks.Kafka == nil || len(c.Sinks.Kafka.Brokers) != 2 || c.Sinks.Webhooks[0].SecretEnv != "WEBHOOK_HMAC":
				return "want the Kafka and webhook sinks"
			case c.Sinks.Remediate == nil || !c.Sinks.Remediate.IsDryRun():
				return "want remediation in dry run"
			}
			return ""
		}},
		{"existing queue, remediation on", map[string]any{"TrailBucketName": "org-trail", "ExistingQueueUrl": "https://sqs.us-east-1.amazonaws.com/111122223333/mine",
			"ExistingQueueArn": "arn:aws:sqs:us-east-1:111122223333:mine", "Remediation": "on"}, func(c config.Config) string {
			if c.Sources.SQS == nil || !strings.HasSuffix(c.Sources.SQS.QueueURL, "/mine") || c.Sinks.Remediate.IsDryRun() || c.Sinks.Remediate.RoleName != "encwatch-remediate" {
				return "want the existing queue and remediation writing as its role"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y, env := stackConfig(t, tt.over)
			if y == "" {
				t.Fatalf("no %s in the task's environment: %v", config.YAMLEnv, env)
			}
			var list []string
			for k, v := range env {
				list = append(list, k+"="+fmt.Sprint(v))
			}
			c, err := config.Load("", list)
			if err != nil {
				t.Fatalf("%v\n%s", err, y)
			}
			if msg := tt.check(c); msg != "" {
				t.Errorf("%s:\n%s", msg, y)
			}
			for _, s := range []string{"KAFKA_PASSWORD", "WEBHOOK_HMAC"} {
				if (tt.over["KafkaBrokers"] != nil) != (env[s] != nil) {
					t.Errorf("secret %s: %v", s, env[s])
				}
			}
		})
	}
	// A configuration from Parameter Store replaces the built one.
	_, env := stackConfig(t, map[string]any{"ConfigParameterArn": "arn:aws:ssm:us-east-1:111122223333:parameter/encwatch/config"})
	if v := fmt.Sprint(env[config.YAMLEnv]); v != "secret:arn:aws:ssm:us-east-1:111122223333:parameter/encwatch/config" {
		t.Errorf("with ConfigParameterArn, %s = %s", config.YAMLEnv, v)
	}
}
