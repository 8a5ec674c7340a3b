package config

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

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

// coveredBy reports whether path or one of its ancestors was reported.
func coveredBy(path string, reported map[string]bool) bool {
	for q := path; q != ""; q = parent(q) {
		if reported[q] {
			return true
		}
	}
	return false
}
