// Package rules judges encryption events: the policy, the rule catalogue,
// the engine that applies them, and the bucket state the stateful rules keep.
package rules
