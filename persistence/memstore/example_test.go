package memstore_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshflow/meshflow/persistence"
	"github.com/meshflow/meshflow/persistence/memstore"
)

func Example() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()

	// Each operator instance gets its own namespace.
	counts := store.Namespace("wordcount/count/0")

	// Hot state is flushed in batches.
	var b persistence.Batch
	b.Put([]byte("apple"), []byte("3"))
	b.Put([]byte("cherry"), []byte("7"))
	b.Put([]byte("banana"), []byte("1"))
	b.Delete([]byte("banana"))
	if err := counts.Apply(ctx, &b); err != nil {
		fmt.Println(err)
		return
	}

	v, err := counts.Get(ctx, []byte("apple"))
	fmt.Printf("apple: %s %v\n", v, err)
	_, err = counts.Get(ctx, []byte("banana"))
	fmt.Println("banana absent:", errors.Is(err, persistence.ErrNotFound))
	_, err = store.Get(ctx, []byte("apple"))
	fmt.Println("apple absent from the root:", errors.Is(err, persistence.ErrNotFound))

	_ = counts.Scan(ctx, nil, func(key, value []byte) error {
		fmt.Printf("%s=%s\n", key, value)
		return nil
	})
	// Output:
	// apple: 3 <nil>
	// banana absent: true
	// apple absent from the root: true
	// apple=3
	// cherry=7
}
