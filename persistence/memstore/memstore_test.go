package memstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
	"github.com/meshflow/meshflow/persistence/persistencetest"
)

func TestConformance(t *testing.T) {
	persistencetest.Run(t, func(t *testing.T) persistence.Store { return memstore.New() })
}

func Example() {
	ctx := context.Background()
	store := memstore.New()
	counts := store.Namespace("word-count") // an operator instance's state
	var b persistence.Batch
	b.Put([]byte("mesh"), []byte("3"))
	b.Put([]byte("flow"), []byte("5"))
	if err := counts.Apply(ctx, &b); err != nil {
		panic(err)
	}
	_ = counts.Scan(ctx, nil, func(k, v []byte) error {
		fmt.Printf("%s=%s\n", k, v)
		return nil
	})
	// Output:
	// flow=5
	// mesh=3
}
