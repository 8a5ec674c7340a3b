package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envKey is a key that an environment variable can set.
type envKey struct {
	path []string
	list bool // a list of scalars, given comma-separated
}

// EnvKeys returns every ENCWATCH_* variable name and the key it sets:
// ENCWATCH_ followed by the key path in upper case, parts joined by '_'
// (ENCWATCH_LOG_LEVEL sets log.level, ENCWATCH_SOURCES_LOOKUP_REGIONS sets
// sources.lookup.regions, comma-separated). Keys inside lists of sections
// (webhooks, accounts, buckets) cannot be set this way.
func EnvKeys() map[string]string {
	out := map[string]string{}
	for name, k := range envKeys() {
		out[name] = strings.Join(k.path, ".")
	}
	return out
}

func envKeys() map[string]envKey {
	out := map[string]envKey{}
	var walk func(t reflect.Type, path []string)
	walk = func(t reflect.Type, path []string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Struct:
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
				if tag == "" || tag == "-" {
					continue
				}
				walk(f.Type, append(append([]string{}, path...), tag))
			}
		case reflect.Slice:
			e := t.Elem()
			if e.Kind() != reflect.Struct && e.Kind() != reflect.Map {
				out[envName(path)] = envKey{path: path, list: true}
			}
		case reflect.Map:
			// Maps (policy.severity) take keys of their own: not from env.
		default:
			out[envName(path)] = envKey{path: path}
		}
	}
	walk(reflect.TypeOf(Config{}), nil)
	return out
}

func envName(path []string) string {
	return EnvPrefix + strings.ToUpper(strings.Join(path, "_"))
}

// applyEnv sets the keys named by ENCWATCH_* variables in the YAML tree,
// creating sections as needed. Nodes it sets get negative line numbers;
// the returned map names the variable of each.
func applyEnv(root *yaml.Node, env []string) (map[int]string, error) {
	keys := envKeys()
	names := map[int]string{}
	var set []string
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		if _, known := keys[name]; !known {
			if isIgnoredEnv(name) {
				continue
			}
			return nil, fmt.Errorf("environment variable %s names no configuration key (see `encwatch config keys`)", name)
		}
		set = append(set, name+"="+val)
	}
	sort.Strings(set)
	for i, kv := range set {
		name, val, _ := strings.Cut(kv, "=")
		k := keys[name]
		line := -(i + 1)
		names[line] = name
		var v *yaml.Node
		if k.list {
			v = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line}
			for _, item := range strings.Split(val, ",") {
				if item = strings.TrimSpace(item); item != "" {
					v.Content = append(v.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: item, Line: line})
				}
			}
		} else {
			v = &yaml.Node{Kind: yaml.ScalarNode, Value: val, Line: line}
		}
		setPath(root, k.path, v, line)
	}
	return names, nil
}

// isIgnoredEnv lets variables that are not configuration keys through:
// the ones encwatch reads for itself.
func isIgnoredEnv(name string) bool {
	switch name {
	case "ENCWATCH_CONFIG", YAMLEnv:
		return true
	}
	return false
}

func setPath(n *yaml.Node, path []string, v *yaml.Node, line int) {
	for i, part := range path {
		var next *yaml.Node
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == part {
				next = n.Content[j+1]
				if i == len(path)-1 {
					n.Content[j].Line = line
					n.Content[j+1] = v
					return
				}
			}
		}
		if i == len(path)-1 {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: part, Line: line}, v)
			return
		}
		if next == nil || next.Kind != yaml.MappingNode {
			m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
			if next == nil {
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: part, Line: line}, m)
			} else {
				*next = *m
				m = next
			}
			next = m
		}
		n = next
	}
}
