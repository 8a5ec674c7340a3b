package remediate_test

import (
	"testing"

	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestMain fails the package when a goroutine outlives its tests.
func TestMain(m *testing.M) { testkit.Main(m) }
