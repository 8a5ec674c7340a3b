package main

import (
	"testing"

	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestMain fails the package when a goroutine outlives its tests: the demo
// and the in-process daemons run here.
func TestMain(m *testing.M) { testkit.Main(m) }
