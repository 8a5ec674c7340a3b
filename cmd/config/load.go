package config

import (
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "ENCWATCH_"

// YAMLEnv is the environment variable that may hold the whole
// configuration file's text, for platforms that hand a service its
// configuration as a value (ECS from SSM Parameter Store or a
// CloudFormation stack); a file path, when given, comes first.
const YAMLEnv = "ENCWATCH_CONFIG_YAML"

// Load reads a configuration file, applies ENCWATCH_* overrides from env
// (nil means none) and defaults, and validates it. An empty path means no
// file: the text of ENCWATCH_CONFIG_YAML when env sets it, else defaults and
// the environment only. Problems come back as *Error.
func Load(path string, env []string) (Config, error) {
	var data []byte
	if path == "" {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, YAMLEnv+"="); ok && v != "" {
				return Parse(YAMLEnv, []byte(v), env)
			}
		}
	}
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
	compiled, compileErrs := compileCustomRules(cfg)
	cfg.Compiled = compiled
	for _, fe := range append(validate(&cfg), compileErrs...) {
		if !coveredBy(fe.Path, reported) {
			probs = append(probs, idx.problem(name, fe.Path, fe.Msg, envNames))
		}
	}
	if len(probs) > 0 {
		return cfg, &Error{probs}
	}
	return cfg, nil
}
