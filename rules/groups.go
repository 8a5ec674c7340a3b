package rules

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/encwatch/encwatch/ingest"
)

// Group is an open window of a grouped rule: the first event of the
// window, and how many events fell in it so far.
type Group struct {
	Key      string        `json:"key"`
	Rule     string        `json:"rule"`
	Severity Severity      `json:"severity"`
	Setting  string        `json:"setting,omitempty"`
	Start    time.Time     `json:"start"`
	Count    int           `json:"count"`
	First    *ingest.Event `json:"first"`
}

// Groups keeps the open windows of grouped rules. They are stored with the
// rest of the state, so a window whose events were already checkpointed
// survives a crash and still raises its alert.
type Groups interface {
	Group(key string) (Group, bool, error)
	PutGroup(g Group) error
	DeleteGroup(key string) error
	// ForEachGroup visits every open group.
	ForEachGroup(fn func(Group) error) error
}

// GroupTable is the bbolt bucket that holds open groups.
var GroupTable = []byte("groups")

// Group implements Groups.
func (s TxState) Group(key string) (Group, bool, error) {
	b := s.Tx.Bucket(GroupTable)
	if b == nil {
		return Group{}, false, nil
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return Group{}, false, nil
	}
	var g Group
	if err := json.Unmarshal(raw, &g); err != nil {
		return Group{}, false, fmt.Errorf("group %q: %w", key, err)
	}
	return g, true, nil
}

// PutGroup implements Groups.
func (s TxState) PutGroup(g Group) error {
	b, err := s.Tx.CreateBucketIfNotExists(GroupTable)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return b.Put([]byte(g.Key), raw)
}

// DeleteGroup implements Groups.
func (s TxState) DeleteGroup(key string) error {
	if b := s.Tx.Bucket(GroupTable); b != nil {
		return b.Delete([]byte(key))
	}
	return nil
}

// ForEachGroup implements Groups.
func (s TxState) ForEachGroup(fn func(Group) error) error {
	b := s.Tx.Bucket(GroupTable)
	if b == nil {
		return nil
	}
	var gs []Group
	if err := b.ForEach(func(_, v []byte) error {
		var g Group
		if err := json.Unmarshal(v, &g); err != nil {
			return err
		}
		gs = append(gs, g)
		return nil
	}); err != nil {
		return err
	}
	for _, g := range gs {
		if err := fn(g); err != nil {
			return err
		}
	}
	return nil
}

// Group implements Groups.
func (m *Memory) Group(key string) (Group, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.groups[key]
	return g, ok, nil
}

// PutGroup implements Groups.
func (m *Memory) PutGroup(g Group) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.groups == nil {
		m.groups = map[string]Group{}
	}
	m.groups[g.Key] = g
	return nil
}

// DeleteGroup implements Groups.
func (m *Memory) DeleteGroup(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.groups, key)
	return nil
}

// ForEachGroup implements Groups.
func (m *Memory) ForEachGroup(fn func(Group) error) error {
	m.mu.Lock()
	gs := make([]Group, 0, len(m.groups))
	for _, g := range m.groups {
		gs = append(gs, g)
	}
	m.mu.Unlock()
	for _, g := range gs {
		if err := fn(g); err != nil {
			return err
		}
	}
	return nil
}
